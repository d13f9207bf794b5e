"""The rules d4/preprocess.py uses to tell ink from paper, each on a picture made to need it."""

from PIL import Image, ImageDraw

from conftest import encode
from d4.preprocess import image_to_pixels


def test_a_digit_cropped_tight_to_its_ink_has_the_tone_that_covers_less_as_ink():
    """Cropped to its ink, a digit touches every side: the border is half ink, half paper, and ink is the minority.

    Dark strokes on light paper run along the top and left sides and across the middle: the border is
    about half dark, half light, so the border cannot decide, and the dark strokes cover less of the picture.
    """
    picture = Image.new("L", (100, 100), 230)
    pen = ImageDraw.Draw(picture)
    pen.line([(0, 3), (99, 3)], fill=20, width=7)  # along the top
    pen.line([(3, 0), (3, 99)], fill=20, width=7)  # down the left
    pen.line([(0, 99), (99, 0)], fill=20, width=7)  # corner to corner
    levels = image_to_pixels(encode(picture, "PNG"))
    assert sum(levels) / len(levels) < 0.3  # white strokes on black paper, as MNIST: mostly paper
