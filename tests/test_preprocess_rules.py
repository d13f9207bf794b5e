"""The rules d4/preprocess.py uses to tell ink from paper, each on a picture made to need it."""

from PIL import Image, ImageDraw

from conftest import encode
from d4.preprocess import _stroke_width, image_to_pixels


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


def test_a_stroke_cropped_to_its_edges_is_measured_at_its_own_width():
    """The ink is cropped to its edges before its strokes are measured; they must wear away there too."""
    bar = Image.new("L", (7, 80), 255)  # a 1 as the crop leaves it: ink from edge to edge
    assert 5 < _stroke_width(bar) < 9


def test_a_one_drawn_on_the_pad_keeps_its_height():
    """/draw's canvas: a 20-px pen on 280x280, the 1 cropped to a bar; it must not be thinned to a dot."""
    pad = Image.new("RGBA", (280, 280), "white")
    ImageDraw.Draw(pad).line([(140, 40), (140, 240)], fill="black", width=20)
    levels = image_to_pixels(encode(pad, "PNG"))
    inked_rows = [row for row in range(28) if max(levels[row * 28 : (row + 1) * 28]) > 0.3]
    assert len(inked_rows) >= 18  # MNIST fits a digit's long side to 20 pixels
