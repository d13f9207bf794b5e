"""Turn a picture of a handwritten digit into the 28x28 input TinyCNN expects.

MNIST's digits were made this way (LeCun et al.): each scanned digit was cropped to its ink,
scaled with anti-aliasing so that it fits a 20x20 box keeping its aspect ratio, and put in a
28x28 image so that its centre of mass sits at the centre, white ink on black. A photo or a
canvas drawing only looks like MNIST to the model after the same steps, so the API runs
every uploaded image through `image_to_views` below: decode (within a memory budget, upright
as the camera meant it, shrunk to what a digit needs), tell ink from paper, refuse what holds
no digit, crop, bring the pen's strokes to MNIST's width (a fine pen's thickened, a wide pen's
solid strokes thinned), scale and centre; then add 4 nearby views whose answers the API
averages (`average_of_views`).
Only Pillow is used: it is fast, it refuses broken files, and it keeps the API's deploy small.
"""

import contextlib
import io
import re
from array import array

from PIL import Image, ImageFilter, ImageOps, ImageStat, PngImagePlugin

from d4.model import DIGIT_BOX, IMAGE_SIZE

# Only these formats' parsers ever run. JPEG's also opens MPO, how many phones store a photo (a
# JPEG with extra views; its first image is the photo).
ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
SEND_ONE_OF = ", ".join(ACCEPTED_FORMATS)
# 4096 x 4096: a phone photo (12 MP) fits; a decompression bomb (a tiny file that decodes to a
# gigapixel image) is refused from its header, before any pixel is decoded.
MAX_IMAGE_PIXELS = 4096 * 4096
WORKING_SIDE = 1024  # larger images are shrunk first: cropping and centring need no more detail
REDUCE_BAND_ROWS = 64  # rows of the shrunk picture made at a time: 4 MiB of a 4096x4096 RGBA one
# Decoding one picture may take this much memory at its peak; one is decoded at a time. Measured
# at the pixel limit (2-core AMD EPYC VM, 2026-12-02; docs/SECURITY.md#memory): 81 MB for an RGBA
# PNG, 98 MB for a progressive JPEG, 31 MB for a palette GIF; a WebP needs more past 8.4 million
# pixels. With the server itself and the uploads waiting (d4/image_endpoint.py), a 512 MB instance
# peaked at 265 MB (benchmarks/bench_pictures.py).
MAX_DECODE_BYTES = 128 * 2**20
# libjpeg decodes a progressive JPEG once per scan: a 4096x4096 one with 1,000 tiny scans (68 KB)
# took 22 s at 0.1 CPU, and one with 20,000 held the decoder for minutes. Encoders write up to
# ~10 scans (libjpeg's progressive script) and cameras 1; more than this is refused unread.
MAX_JPEG_SCANS = 32
# A PNG's text chunks (metadata) are kept in memory by Pillow, up to 64 MiB of them; photos and
# drawings carry a few KB. A compressed one counts as what it may expand to (Pillow's cap, 1 MiB).
MAX_PNG_TEXT_BYTES = 8 * 2**20
# Below this share of the ink's contrast a pixel counts as paper: JPEG noise, shadows, dust.
NOISE_LEVEL = 0.2
MIN_CONTRAST = (
    32  # grey levels between the mean paper and the mean ink below which the image is called blank
)
# Paper is the tone that most of the border shows, unless the border is this close to half and
# half (a digit cropped tightly to its ink): then ink is the tone that covers less of the picture.
BORDER_TIE = 0.1
# A picture of one dark tone at least this many times taller than wide is a pen stroke cropped to
# its ink, with no paper left: the digit 1.
BAR_ASPECT = 3
MAX_ASPECT = 50  # a picture longer than 50x its width is a line or a strip, not a digit
# Above 4x MNIST's size, one pixel is less than a quarter of an MNIST pixel: a mark that a 3x3
# median removes (dust, a speck, JPEG noise) cannot be a stroke, and must not widen the crop.
SPECK_FILTER_SIDE = 4 * IMAGE_SIZE


# Strokes are measured with the digit's longer side at 80 px (4x MNIST's 20-px box). There, MNIST's
# strokes are about 8 px wide (6 to 11 px for 80% of the training digits); the model misreads much
# thinner ones (fine pens, pencils, thin lines drawn on a large canvas), so those are thickened.
STROKE_VIEW = 4 * DIGIT_BOX
MNIST_STROKE_WIDTH = 8
MIN_STROKE_WIDTH = 6
# Wider than all but a tenth of MNIST's strokes: a small digit drawn with a wide pen (a finger on /draw,
# a marker), which swamps its own loops once scaled up; thinned to MNIST's width. Only solid ink is
# thinned, where this share of the inked pixels is full ink: a coarse scan's strokes are grey blocks
# that erosion would erase (thinning those cost 2-3 points on the proxy's 8x8 scans).
MAX_STROKE_WIDTH = 12
SOLID_INK_SHARE = 0.9
VIEW_TURN = 8  # degrees, for image_to_views
VIEW_SCALE = 0.1


class ImageRejected(ValueError):
    """The upload cannot be turned into a digit; the message says why, for the user."""


class ImageTooLarge(ImageRejected):
    """The image has more pixels than MAX_IMAGE_PIXELS."""


def image_to_pixels(data: bytes) -> array:
    """MNIST-style 28x28 grey levels in 0..1 (white ink on black), row by row, from an image file."""
    grey = _load_greyscale(data)
    ink = _white_ink_on_black(grey)
    digit = _centre_in_28x28(_pen_width_like_mnist(ink))
    return _levels(digit)


def image_to_views(data: bytes) -> array:
    """image_to_pixels' 784 values, then 4 nearby views of that picture: turned by +-8 degrees, scaled by +-10%.

    A person's digit sits between MNIST's styles more often than an MNIST digit does; averaging the
    model's answers over these 5 views measurably helps there (bench_handwriting.py), and a batch
    of 5 costs the batched model little more than 1.
    """
    pixels = image_to_pixels(data)
    upright = Image.frombytes(
        "L", (IMAGE_SIZE, IMAGE_SIZE), bytes(round(level * 255) for level in pixels)
    )
    centre = (IMAGE_SIZE / 2, IMAGE_SIZE / 2)
    turned = [
        upright.rotate(angle, Image.Resampling.BILINEAR, center=centre)
        for angle in (VIEW_TURN, -VIEW_TURN)
    ]
    scaled = [_scaled(upright, 1 + change) for change in (VIEW_SCALE, -VIEW_SCALE)]
    return pixels + _levels(*turned, *scaled)


def average_of_views(rows: list[list[float]]) -> list[float]:
    """The answer for one picture: the model's probabilities for each of image_to_views' views, averaged."""
    return [sum(column) / len(rows) for column in zip(*rows, strict=True)]


def _scaled(image: Image.Image, factor: float) -> Image.Image:
    """The image scaled by `factor` about its centre (Pillow's affine maps output to input coordinates)."""
    shift = IMAGE_SIZE / 2 * (1 - 1 / factor)
    return image.transform(
        image.size,
        Image.Transform.AFFINE,
        (1 / factor, 0, shift, 0, 1 / factor, shift),
        Image.Resampling.BILINEAR,
    )


def _levels(*images: Image.Image) -> array:
    """The images' grey levels scaled to 0..1, row by row, one image after another."""
    return array("f", (level / 255 for image in images for level in image.tobytes()))


def _load_greyscale(data: bytes) -> Image.Image:
    """Decode one still image to greyscale ("L") at most WORKING_SIDE px long, transparent parts turned into paper."""
    image = _opened(data)
    try:
        # GIF and WebP count their frames by reading them; an MPO's extra frames are other views of the photo.
        frames = 1 if image.format == "MPO" else getattr(image, "n_frames", 1)
    except Exception:  # a damaged file fails in many ways while it is read
        raise ImageRejected(f"the {image.format} file is truncated or corrupt") from None
    if frames > 1:
        raise ImageRejected(f"the image is animated ({frames} frames); send a single still image")
    full_size = image.size
    image.draft(
        "L", (WORKING_SIDE, WORKING_SIDE)
    )  # JPEG only: decode straight to grey, at a smaller scale
    _refuse_over_memory_budget(image, full_size, data)
    try:
        image.load()
    except Exception:  # a damaged file fails in many ways while it is decoded
        raise ImageRejected(f"the {image.format} file is truncated or corrupt") from None
    transparent = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    grey = _reduced(image, "LA" if transparent else "L")
    # Phones store photos as the sensor saw them and say in EXIF how to turn them upright.
    with contextlib.suppress(
        Exception
    ):  # a corrupt EXIF block (SyntaxError, struct.error, ...): read as stored
        ImageOps.exif_transpose(grey, in_place=True)
    return _flatten_transparency(grey) if transparent else grey


def _opened(data: bytes) -> Image.Image:
    """The image's header read by the accepted formats' parsers only, checked against the size limits."""
    if data.startswith(PNG_SIGNATURE) and _png_text_bytes(data) > MAX_PNG_TEXT_BYTES:
        raise ImageTooLarge(
            f"the PNG holds over {MAX_PNG_TEXT_BYTES / 2**20:.0f} MiB of text chunks (metadata, counted as what "
            f"they may expand to), more than the API reads; save the picture without its metadata"
        )
    try:
        # Pillow would otherwise try every format it knows (TIFF, ICO, ...) on the untrusted bytes.
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError:  # Pillow's own limit, far above ours
        raise ImageTooLarge(
            f"the image has too many pixels; the limit is {MAX_IMAGE_PIXELS:,}"
        ) from None
    except Exception:  # Pillow raises many types for bytes it cannot read; all mean the same here
        raise ImageRejected(
            f"the file is not an image in a format the API opens; send one of {SEND_ONE_OF}"
        ) from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLarge(
            f"the image is {width}x{height} pixels; the limit is {MAX_IMAGE_PIXELS:,} pixels"
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageRejected(
            f"the image is {width}x{height} pixels, a strip too thin to hold a digit "
            f"(at most {MAX_ASPECT} times longer than wide); crop it around the digit"
        )
    return image


def _refuse_over_memory_budget(image: Image.Image, full_size: tuple[int, int], data: bytes) -> None:
    """Refuse, from the header, a picture whose decoding would take more memory than MAX_DECODE_BYTES,
    or a JPEG with more scans than MAX_JPEG_SCANS, whose decoding would take too long."""
    width, height = full_size
    scans = _jpeg_scans(data) if image.format in ("JPEG", "MPO") else 1
    if scans > MAX_JPEG_SCANS:
        raise ImageTooLarge(
            f"the JPEG has more than {MAX_JPEG_SCANS} scans (cameras write 1, progressive encoders about 10), "
            f"which would take too long to decode; save it as a baseline JPEG or a PNG"
        )
    needed = _decoding_bytes(image, full_size, scans, data)
    if needed > MAX_DECODE_BYTES:
        raise ImageTooLarge(
            f"the image is a {width}x{height} {image.format}, which takes {needed / 2**20:.0f} MiB "
            f"to decode; the limit is {MAX_DECODE_BYTES / 2**20:.0f} MiB: send a smaller picture "
            f"(a digit needs no more than {WORKING_SIDE} px on its long side)"
        )


def _decoding_bytes(image: Image.Image, full_size: tuple[int, int], scans: int, data: bytes) -> int:
    """The memory that decoding the picture takes at its peak, worked out from its header (and measured).

    `image` is as draft() left it (a JPEG at the scale and mode it will be decoded to);
    `full_size` is its size in the file, `scans` a JPEG's scans and `data` the file.
    """
    pixels = full_size[0] * full_size[1]
    if (
        image.format == "WEBP"
    ):  # libwebp's canvas and its previous frame, the frame's bytes, the picture: 4 x RGBA
        return 16 * pixels
    # Pillow's own layout: 1 byte a pixel for "1", "L" and "P", 2 for 16-bit grey, 4 for the rest (RGB, CMYK)
    per_pixel = 1 if image.mode in ("1", "L", "P") else 2 if image.mode.startswith("I;16") else 4
    decoded = image.width * image.height * per_pixel
    if image.format in ("JPEG", "MPO") and (scans > 1 or image.info.get("progressive")):
        # A JPEG in several scans (progressive, or baseline with one scan per colour): libjpeg holds every
        # coefficient, 2 bytes a sample at full size, whatever scale it decodes at. CMYK has 4 samples a pixel.
        return decoded + 2 * len(image.getbands()) * pixels
    if image.format == "PNG":  # its text chunks after the pixels are read into memory too
        return decoded + _png_text_bytes(data)
    return decoded


# 0xFF then a marker's code: not a stuffed 0xFF (00), a restart marker (D0-D7) or fill (FF).
JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
STANDALONE_MARKERS = (0x01, 0xD8)  # TEM and SOI carry no length


def _jpeg_scans(data: bytes) -> int:
    """The scans (SOS markers) of the JPEG's first image, up to MAX_JPEG_SCANS + 1.

    Segments are skipped by their length, so a thumbnail inside EXIF is not counted; the compressed
    data after each scan's header is searched for the next marker by a regular expression (in C).
    """
    scans, position = 0, 2  # after SOI
    while scans <= MAX_JPEG_SCANS and (marker := JPEG_MARKER.search(data, position)):
        code = data[marker.start() + 1]
        if code == 0xD9:  # EOI: the first image ends (an MPO's other views follow)
            break
        scans += code == 0xDA
        position = marker.start() + 2
        if code not in STANDALONE_MARKERS:
            position += int.from_bytes(data[position : position + 2], "big")
    return scans


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


def _png_text_bytes(data: bytes) -> int:
    """What Pillow would hold for the PNG's text chunks, from the chunks' headers, up to just past MAX_PNG_TEXT_BYTES.

    A compressed chunk (zTXt, or iTXt, which may be) counts as its bytes and what they may expand to.
    """
    text, position = 0, len(PNG_SIGNATURE)
    while text <= MAX_PNG_TEXT_BYTES and position + 8 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        if kind in TEXT_CHUNKS:
            text += length + (PngImagePlugin.MAX_TEXT_CHUNK if kind != b"tEXt" else 0)
        elif kind == b"IEND":
            break
        position += 12 + length  # length, type, data, CRC
    return text


def _reduced(image: Image.Image, mode: str) -> Image.Image:
    """The decoded picture in `mode` ("L" or "LA"), its long side shrunk to at most WORKING_SIDE px.

    It is done a band of rows at a time, so that no full-size copy is ever made: converting a
    whole 4096x4096 palette picture to "LA" would take 64 MiB (Pillow keeps LA in 4 bytes a
    pixel), and reducing a whole RGBA one copies it first (alpha premultiplied).
    """
    factor = -(-max(image.size) // WORKING_SIDE)  # ceiling division
    band = factor * REDUCE_BAND_ROWS
    reduced = Image.new(mode, (-(-image.width // factor), -(-image.height // factor)))
    for top in range(0, image.height, band):
        rows = image.crop((0, top, image.width, min(top + band, image.height)))
        if rows.mode.startswith(
            "I;16"
        ):  # 16-bit grey: 0..65535 read as 0..255, as an 8-bit picture would be
            rows = rows.point(lambda level: level / 256)
        reduced.paste(rows.convert(mode).reduce(factor), (0, top // factor))
    reduced.info = image.info  # the EXIF orientation, for exif_transpose
    return reduced


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
    """Make the ink white on exactly-black paper, and crop to the ink; refuse a picture with no digit."""
    histogram = grey.histogram()
    all_dark = _mean_level(histogram, 0, 256) < 128
    split = _otsu_split(histogram)  # the whole picture's two tones: paper and ink
    if split is not None and _dark_is_ink(
        grey, histogram, split
    ):  # dark on light: flip to MNIST's white on black
        grey = ImageOps.invert(grey)
        histogram, split = histogram[::-1], 256 - split
    if (
        split is None
        or _mean_level(histogram, split, 256) - _mean_level(histogram, 0, split) < MIN_CONTRAST
    ):
        if all_dark and grey.height >= BAR_ASPECT * grey.width:
            return Image.new(
                "L", grey.size, 255
            )  # all pen-dark, tall and narrow: a 1 cropped to its stroke
        raise ImageRejected("the image is blank: no digit stands out from the background")
    paper = _mean_level(histogram, 0, split)
    brightest = grey.getextrema()[1]
    noise = paper + NOISE_LEVEL * (brightest - paper)
    # Stretch paper..ink to 0..255, and clear everything too faint to be ink.
    scale = 255 / (brightest - paper)
    stretched = grey.point(
        lambda level: 0 if level <= noise else min(255, round((level - paper) * scale))
    )
    marks = (
        stretched.filter(ImageFilter.MedianFilter(3))
        if max(grey.size) > SPECK_FILTER_SIDE
        else stretched
    )
    box = marks.getbbox()
    if box is None or max(box[2] - box[0], box[3] - box[1]) * IMAGE_SIZE < max(grey.size):
        raise ImageRejected(
            "the image is blank: its only marks are specks or noise, too small to be a pen stroke "
            "once the picture is seen at MNIST's 28x28 scale"
        )
    return stretched.crop(box)


def _otsu_split(histogram: list[int]) -> int | None:
    """The level that best splits the grey levels into a dark class (< it) and a light one (Otsu, 1979).

    It maximises the between-class variance; None when the picture has a single grey level.
    """
    total = sum(histogram)
    level_sum = sum(level * count for level, count in enumerate(histogram))
    best_split, best_spread = None, 0.0
    dark_count = dark_sum = 0
    for level in range(1, 256):
        dark_count += histogram[level - 1]
        dark_sum += (level - 1) * histogram[level - 1]
        light_count = total - dark_count
        if dark_count == 0 or light_count == 0:
            continue
        gap = dark_sum / dark_count - (level_sum - dark_sum) / light_count
        spread = dark_count * light_count * gap * gap
        if spread > best_spread:
            best_split, best_spread = level, spread
    return best_split


def _dark_is_ink(grey: Image.Image, histogram: list[int], split: int) -> bool:
    """Paper is the tone most of the border shows: a digit is drawn inside its picture.

    When the border shows both about equally (a digit cropped to its ink touches every side),
    ink is the tone that covers less of the whole picture.
    """
    border = Image.new("L", grey.size, 255)
    border.paste(0, (1, 1, grey.width - 1, grey.height - 1))
    border_dark_share = sum(grey.histogram(mask=border)[:split]) / sum(border.histogram()[255:])
    if abs(border_dark_share - 0.5) > BORDER_TIE:
        return border_dark_share < 0.5
    return sum(histogram[:split]) < sum(histogram[split:])


def _mean_level(histogram: list[int], start: int, stop: int) -> float:
    count = sum(histogram[start:stop])
    return sum(level * histogram[level] for level in range(start, stop)) / count


def _pen_width_like_mnist(ink: Image.Image) -> Image.Image:
    """The cropped ink with its longer side at STROKE_VIEW px, its strokes brought towards MNIST's width:
    thinner ones thickened, solid ones much wider thinned."""
    scale = STROKE_VIEW / max(ink.size)
    view = ink.resize(
        (max(1, round(ink.width * scale)), max(1, round(ink.height * scale))),
        Image.Resampling.LANCZOS,
    )
    width = _stroke_width(view)
    if width < MIN_STROKE_WIDTH:
        radius = round((MNIST_STROKE_WIDTH - width) / 2)
        return view.filter(
            ImageFilter.MaxFilter(2 * radius + 1)
        )  # a rounder pen: each side grows by `radius`
    if width > MAX_STROKE_WIDTH and _solid_share(view) > SOLID_INK_SHARE:
        radius = round((width - MNIST_STROKE_WIDTH) / 2)
        # A finer pen: each side shrinks by `radius`, at the crop's edges too (paper around it first).
        thinned = ImageOps.expand(view, border=radius, fill=0).filter(
            ImageFilter.MinFilter(2 * radius + 1)
        )
        return thinned.crop((radius, radius, radius + view.width, radius + view.height))
    return view


def _solid_share(ink: Image.Image) -> float:
    """The share of the inked pixels (a quarter of full ink or more) that are full ink (three quarters or more)."""
    histogram = ink.histogram()
    return sum(histogram[192:]) / max(1, sum(histogram[64:]))


def _stroke_width(ink: Image.Image) -> float:
    """The strokes' mean width in pixels: twice the inked area over the pixels one erosion removes (both sides)."""
    # Paper around it: the ink is cropped to its edges, and an erosion must wear strokes there too.
    inked = ImageOps.expand(ink.point(lambda level: 255 if level >= 128 else 0), border=1, fill=0)
    area = inked.histogram()[255]
    inner = inked.filter(ImageFilter.MinFilter(3)).histogram()[255]
    return 2 * area / max(1, area - inner)


def _centre_in_28x28(ink: Image.Image) -> Image.Image:
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
    return canvas
