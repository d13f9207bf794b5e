"""The rules d4/preprocess.py uses to tell ink from paper, each on a picture made to need it."""

from PIL import Image, ImageDraw, ImageOps

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
    tight = image_to_pixels(encode(picture, "PNG"))
    # The same strokes with paper all round, where the border alone decides: the tight crop must read the same.
    framed = image_to_pixels(encode(ImageOps.expand(picture, border=30, fill=230), "PNG"))
    assert sum(abs(a - b) for a, b in zip(tight, framed, strict=True)) / len(tight) < 0.05


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


def test_a_solid_stroke_much_wider_than_mnists_is_thinned_to_its_width():
    """A 1 drawn with a marker a third as wide as it is tall: thinned towards MNIST's pen, not left a block."""
    page = Image.new("L", (300, 300), 255)
    ImageDraw.Draw(page).rectangle(
        [120, 40, 190, 260], fill=0
    )  # ink from edge to edge once cropped
    levels = image_to_pixels(encode(page, "PNG"))
    inked_columns = [column for column in range(28) if max(levels[column::28]) > 0.5]
    assert len(inked_columns) <= 4  # 6 or 7 columns as drawn
