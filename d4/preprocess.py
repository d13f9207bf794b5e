"""Turn a picture of a handwritten digit into the 28x28 input TinyCNN expects.

MNIST's digits were made this way (LeCun et al.): each scanned digit was cropped to its ink,
scaled with anti-aliasing so that it fits a 20x20 box keeping its aspect ratio, and put in a
28x28 image so that its centre of mass sits at the centre, white ink on black. A photo or a
canvas drawing only looks like MNIST to the model after the same steps, so the API runs
every uploaded image through `image_to_pixels` below. Only Pillow is used: it is fast, it
refuses broken files, and it keeps the API's deploy small.
"""

import io
from array import array

from PIL import Image, ImageOps, ImageStat

from d4.model import IMAGE_SIZE

ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
# 4096 x 4096: a phone photo (12 MP) fits; a decompression bomb (a tiny file that decodes to a
# gigapixel image) is refused from its header, before any pixel is decoded.
MAX_IMAGE_PIXELS = 4096 * 4096
DIGIT_BOX = 20  # MNIST fitted each digit into 20x20 and centred that in 28x28
WORKING_SIDE = 1024  # larger images are shrunk first: cropping and centring need no more detail
# Below this share of the ink's contrast a pixel counts as paper: JPEG noise, shadows, dust.
NOISE_LEVEL = 0.2
MIN_CONTRAST = 32  # grey levels between paper and ink below which we call the image blank


class ImageRejected(ValueError):
    """The upload cannot be turned into a digit; the message says why, for the user."""


class ImageTooLarge(ImageRejected):
    """The image has more pixels than MAX_IMAGE_PIXELS."""


def image_to_pixels(data: bytes) -> array:
    """MNIST-style 28x28 grey levels in 0..1 (white ink on black), row by row, from an image file."""
    grey = _load_greyscale(data)
    ink = _white_ink_on_black(grey)
    return _centre_in_28x28(ink)


def _load_greyscale(data: bytes) -> Image.Image:
    """Decode one still image to greyscale ("L"), with transparent parts turned into paper."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:  # Pillow's own limit, far above ours
        raise ImageTooLarge(f"the image has too many pixels; the limit is {MAX_IMAGE_PIXELS:,}") from None
    except Exception:  # Pillow raises many types for bytes it cannot read; all mean the same here
        raise ImageRejected(f"the file is not an image; send one of {', '.join(ACCEPTED_FORMATS)}") from None
    if image.format not in ACCEPTED_FORMATS:
        raise ImageRejected(f"{image.format} images are not accepted; send one of {', '.join(ACCEPTED_FORMATS)}")
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLarge(f"the image is {width}x{height} pixels; the limit is {MAX_IMAGE_PIXELS:,} pixels")
    try:
        frames = getattr(image, "n_frames", 1)  # GIF and WebP count their frames by reading them
        if frames == 1:
            image.draft("L", (WORKING_SIDE, WORKING_SIDE))  # JPEG only: decode straight to grey, at a smaller scale
            image.load()
    except Exception:  # a damaged file fails in many ways while it is decoded
        raise ImageRejected(f"the {image.format} file is truncated or corrupt") from None
    if frames > 1:
        raise ImageRejected(f"the image is animated ({frames} frames); send a single still image")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        return _flatten_transparency(image.convert("LA"))
    return image.convert("L")


def _flatten_transparency(image: Image.Image) -> Image.Image:
    """Paint transparent pixels as paper: the opposite of what the visible pixels mostly are.

    A canvas drawing is often dark strokes on a transparent background, or light strokes on
    one; either way the strokes are what is visible, and the background must contrast with them.
    """
    grey, alpha = image.split()
    visible = ImageStat.Stat(grey, mask=alpha.point(lambda level: 255 if level >= 128 else 0))
    if visible.count[0] == 0:
        raise ImageRejected("the image is blank: every pixel is transparent")
    paper = Image.new("L", image.size, 255 if visible.mean[0] < 128 else 0)
    return Image.composite(grey, paper, alpha)


def _white_ink_on_black(grey: Image.Image) -> Image.Image:
    """Shrink, make the ink white on exactly-black paper, and crop to the ink."""
    factor = -(-max(grey.size) // WORKING_SIDE)  # ceiling division
    if factor > 1:
        grey = grey.reduce(factor)
    # The paper is what most of the border shows: a digit is drawn inside its picture.
    border = Image.new("L", grey.size, 255)
    border.paste(0, (1, 1, grey.width - 1, grey.height - 1))
    paper = ImageStat.Stat(grey, mask=border).median[0]
    if paper >= 128:  # dark ink on light paper: flip it to MNIST's white on black
        grey = ImageOps.invert(grey)
        paper = 255 - paper
    ink = grey.getextrema()[1]
    contrast = ink - paper
    if contrast < MIN_CONTRAST:
        raise ImageRejected("the image is blank: no digit stands out from the background")
    noise = paper + NOISE_LEVEL * contrast
    # Stretch paper..ink to 0..255, and clear everything too faint to be ink.
    stretched = grey.point(lambda level: 0 if level <= noise else min(255, round((level - paper) * 255 / contrast)))
    return stretched.crop(stretched.getbbox())


def _centre_in_28x28(ink: Image.Image) -> array:
    """Fit the cropped ink into 20x20 (aspect kept, anti-aliased), then centre its mass in 28x28."""
    scale = DIGIT_BOX / max(ink.size)
    size = (max(1, round(ink.width * scale)), max(1, round(ink.height * scale)))
    digit = ink.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    levels = digit.tobytes()  # one byte per grey level, row by row
    mass = sum(levels) or 1
    centre_x = sum(level * (i % digit.width) for i, level in enumerate(levels)) / mass
    centre_y = sum(level * (i // digit.width) for i, level in enumerate(levels)) / mass
    # MNIST's centres of mass sit on pixel (14, 14); keep the whole box inside the 28x28 image.
    left = min(max(round(IMAGE_SIZE / 2 - centre_x), 0), IMAGE_SIZE - digit.width)
    top = min(max(round(IMAGE_SIZE / 2 - centre_y), 0), IMAGE_SIZE - digit.height)
    canvas = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    canvas.paste(digit, (left, top))
    return array("f", (level / 255 for level in canvas.tobytes()))
