"""Random distortions of a training batch that make MNIST look more like other people's handwriting.

MNIST's writers were American census staff and students, scanned at one resolution and drawn
with similar pens. Digits from other writers and scanners differ in ways a batch can imitate:
the 1 with a long diagonal flag (and often a foot) that European writers draw, added to the 1s
(told by their shape, so that it works without labels); slant and proportions (an affine map),
digits that form scanners stretched to fill their box whatever their shape (a 1 becomes a wide
block), the wobble of a hand (an elastic distortion, Simard et al. 2003), pen width (a soft
dilation or erosion), and low-resolution or binarised scans (the digit shrunk to a few pixels,
its grey levels quantised, and enlarged again). Everything runs on the batch tensor on the
training device, with operations that CPU, CUDA and Apple (MPS) GPUs all run, one sampling grid
for the geometry: no per-image PIL work, no DataLoader workers. `bench_handwriting.py` measures
what each part buys.
"""

import io
import math
import random

import torch
import torch.nn.functional as F

from d4.drawn_digits import OTHER_HANDS_FORMS, Form, draw, jittered, varied
from d4.model import DIGIT_BOX, IMAGE_SIZE

ROTATION_DEGREES = 12
SCALE = 0.12  # each axis scaled by 1 +- this, independently: wider, narrower, taller digits
SHEAR = 0.35  # slant: x moves by up to this times y (about +-19 degrees)
SHIFT = 0.08  # of the image's half-width
ELASTIC_STRENGTH = 2.5  # pixels a point may move, after smoothing
ELASTIC_SMOOTHNESS = 4.0  # Gaussian sigma of the displacement field, in pixels
THICKNESS = 0.6  # strokes thickened or thinned by up to this share of a 3x3 dilation or erosion
FILL_SHARE = 0.25  # of the batch, stretched to fill the digit box as form scanners do
LOW_RESOLUTION_SHARE = 0.3  # of the batch, shown as a coarse scan
LOW_RESOLUTION_SIDES = (8, 16)  # the coarse scan's side, in pixels, drawn from this range
# Ink this elongated (the spread across its main axis under ONE_ELONGATION times the spread along it)
# is a 1 in 98.9% of MNIST's training digits and covers 92% of its 1s: the batch comes without its
# labels, so a 1 is told by its shape.
ONE_ELONGATION = 0.25
FLAG_SHARE = (
    0.8  # of those 1s, given a long diagonal flag from the top of the stem, as Europeans write it
)
FOOT_SHARE = 0.5  # of the flagged 1s, given a foot too
FLAG_LENGTH = (0.4, 0.75)  # of the stem's length
FLAG_DROP_DEGREES = (30, 60)  # the flag's angle below the horizontal
FOOT_LENGTH = (0.35, 0.7)  # of the stem's length, centred on its foot
BOX_ROWS = slice(
    (IMAGE_SIZE - DIGIT_BOX) // 2, (IMAGE_SIZE + DIGIT_BOX) // 2
)  # the box's rows (and columns)
# Other hands' forms of 2, 4, 7 and 9 (issue #29), drawn in place of this share of those digits when distort() is
# given the batch's labels. They are drawn from the templates in d4/drawn_digits.py by their own generator (not the
# handwriting proxy's seeds), each template point first moved by up to FORM_JITTER pad pixels, then varied as a
# hand would, with a pen FORM_PEN pad pixels wide, and prepared as /predict/image prepares a picture.
FORM_SHARE = 0.15
FORMS_PER_DIGIT = 600
FORM_JITTER = 10
FORM_PEN = (10, 36)
FORMS_SEED = 2029


def distort(
    pixels: torch.Tensor, generator: torch.Generator, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """A randomly distorted copy of a batch of digits (N, 1, H, W) in 0..1; `generator` (on the CPU) decides.

    Given the batch's `labels`, FORM_SHARE of its 2s, 4s, 7s and 9s are first redrawn in other hands' forms
    (`_random_forms`), as the trainer does; without them the batch is distorted as before, draw for draw.
    """
    count, _, height, width = pixels.shape
    draw = _uniform_draw(generator, pixels.device)
    if labels is not None:
        pixels = _random_forms(pixels, labels, generator)
    # Form scanners stretch a plain 1 into a block: the 1s chosen for that keep no flag, so the batch
    # still shows as many stretched plain 1s as before the flags came in.
    filling = draw(count, 0, 1) < FILL_SHARE
    pixels = _random_flags(pixels, draw, ~filling)
    theta = _compose(_random_fill(pixels, filling), _random_affine(count, draw))
    grid = F.affine_grid(theta, [count, 1, height, width], align_corners=False)
    grid = grid + _elastic_field(count, height, width, generator, pixels.device)
    distorted = F.grid_sample(
        pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    distorted = _random_thickness(distorted, draw)
    return _random_low_resolution(distorted, draw).contiguous(memory_format=torch.channels_last)


def _uniform_draw(generator: torch.Generator, device: torch.device):
    """draw(count, low, high): uniform numbers, drawn on the CPU so that a seed gives the same on any device."""

    def draw(count: int, low: float, high: float) -> torch.Tensor:
        return (torch.rand(count, generator=generator) * (high - low) + low).to(device)

    return draw


def _random_affine(count: int, draw) -> torch.Tensor:
    """(count, 2, 3) maps from output to input coordinates: rotation, per-axis scale, slant and shift."""
    angle = draw(count, -ROTATION_DEGREES, ROTATION_DEGREES) * (math.pi / 180)
    scale_x, scale_y = draw(count, 1 - SCALE, 1 + SCALE), draw(count, 1 - SCALE, 1 + SCALE)
    shear = draw(count, -SHEAR, SHEAR)
    shift_x, shift_y = draw(count, -SHIFT, SHIFT), draw(count, -SHIFT, SHIFT)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Sampling with the inverse of (rotate . shear . scale): dividing by the scale enlarges the digit.
    return torch.stack(
        [
            torch.stack([cos / scale_x, (-sin + shear * cos) / scale_x, shift_x], dim=1),
            torch.stack([sin / scale_y, (cos + shear * sin) / scale_y, shift_y], dim=1),
        ],
        dim=1,
    )


def _random_fill(pixels: torch.Tensor, filling: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) maps stretching the `filling` digits' ink to fill MNIST's 20x20 box; identity for the rest."""
    count, _, height, width = pixels.shape
    ink = pixels[:, 0] > 0.3
    left, right = _ink_extent(ink.any(dim=1), width)
    top, bottom = _ink_extent(ink.any(dim=2), height)
    box = DIGIT_BOX / width  # the 20x20 box's half-side, in grid units
    chosen = filling & (right > left) & (bottom > top)
    theta = torch.zeros(count, 2, 3, device=pixels.device)
    theta[:, 0, 0] = torch.where(chosen, (right - left) / 2 / box, 1.0)
    theta[:, 1, 1] = torch.where(chosen, (bottom - top) / 2 / box, 1.0)
    theta[:, 0, 2] = torch.where(chosen, (right + left) / 2, 0.0)
    theta[:, 1, 2] = torch.where(chosen, (bottom + top) / 2, 0.0)
    return theta


def _ink_extent(any_ink: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first and past-the-last inked index along one axis, as grid coordinates in -1..1 (align_corners=False)."""
    index = torch.arange(side, device=any_ink.device)
    first = torch.where(any_ink, index, side).amin(dim=1)
    last = torch.where(any_ink, index, -1).amax(dim=1)
    return (2 * first / side - 1).float(), (2 * (last + 1) / side - 1).float()


def _compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """The (N, 2, 3) map that applies `inner`, then `outer` (both map output to input coordinates)."""
    linear = outer[:, :, :2] @ inner[:, :, :2]
    shift = (outer[:, :, :2] @ inner[:, :, 2:]).squeeze(2) + outer[:, :, 2]
    return torch.cat([linear, shift.unsqueeze(2)], dim=2)


def _elastic_field(
    count: int, height: int, width: int, generator: torch.Generator, device
) -> torch.Tensor:
    """(count, H, W, 2) smooth random displacements in grid units (2 / side per pixel)."""
    noise = (torch.rand(count, 2, height, width, generator=generator) * 2 - 1).to(device)
    radius = int(2 * ELASTIC_SMOOTHNESS)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-(offsets**2) / (2 * ELASTIC_SMOOTHNESS**2))
    kernel = kernel / kernel.sum()
    # Separable Gaussian blur of both displacement channels, then scaled so the largest moves are about
    # ELASTIC_STRENGTH pixels (a blur shrinks uniform noise by roughly its kernel's square-root width).
    smooth = F.conv2d(
        noise.reshape(-1, 1, height, width), kernel.view(1, 1, 1, -1), padding=(0, radius)
    )
    smooth = F.conv2d(smooth, kernel.view(1, 1, -1, 1), padding=(radius, 0)).view(
        count, 2, height, width
    )
    smooth = smooth / smooth.flatten(1).abs().amax(dim=1).clamp_min(1e-6).view(count, 1, 1, 1)
    pixels_to_grid = torch.tensor([2 / width, 2 / height], device=device).view(1, 2, 1, 1)
    return (smooth * ELASTIC_STRENGTH * pixels_to_grid).permute(0, 2, 3, 1)


def _random_thickness(pixels: torch.Tensor, draw) -> torch.Tensor:
    """Blend each image towards its 3x3 dilation (thicker pen) or erosion (thinner pen) by a random share."""
    amount = draw(len(pixels), -THICKNESS, THICKNESS).view(-1, 1, 1, 1)
    dilated = F.max_pool2d(pixels, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-pixels, 3, stride=1, padding=1)
    target = torch.where(amount > 0, dilated, eroded)
    return torch.lerp(pixels, target, amount.abs())


def _random_low_resolution(pixels: torch.Tensor, draw) -> torch.Tensor:
    """Show a share of the batch as a coarse scan of the digit: its 20x20 box shrunk to a few pixels, binarised
    or quantised to 17 grey levels, and enlarged back, as a coarse scan looks once it is prepared like MNIST."""
    count = len(pixels)
    chosen = (draw(count, 0, 1) < LOW_RESOLUTION_SHARE).nonzero().flatten()
    if len(chosen) == 0:
        return pixels
    side = int(draw(1, LOW_RESOLUTION_SIDES[0], LOW_RESOLUTION_SIDES[1] + 1).item())
    box = pixels[chosen, :, BOX_ROWS, BOX_ROWS]
    coarse = _area_shrunk(box, side)
    coarse = coarse / coarse.flatten(1).amax(dim=1).clamp_min(1e-6).view(
        -1, 1, 1, 1
    )  # scanners stretch contrast
    threshold = draw(len(chosen), 0.3, 0.5).view(-1, 1, 1, 1)
    binary = (
        draw(len(chosen), 0, 1).view(-1, 1, 1, 1) < 0.5
    )  # half black-and-white scans, half 17 grey levels
    coarse = torch.where(binary, (coarse > threshold).float(), torch.round(coarse * 16) / 16)
    enlarged = F.interpolate(coarse, size=box.shape[-2:], mode="bilinear", align_corners=False)
    pixels = pixels.clone()
    pixels[chosen, :, BOX_ROWS, BOX_ROWS] = enlarged
    return pixels


def _area_shrunk(images: torch.Tensor, side: int) -> torch.Tensor:
    """(N, 1, S, S) images shrunk to side x side by averaging, as F.interpolate(mode="area") does.

    That is adaptive average pooling, which Apple's GPUs (MPS) refuse unless the sizes divide
    (PyTorch issue 96056); the same averages as two matrix products run on any device.
    """
    rows = _area_weights(images.shape[-1], side, images.device)
    return rows @ images @ rows.T


def _area_weights(source: int, target: int, device: torch.device) -> torch.Tensor:
    """(target, source) weights: target pixel i is the mean of source pixels floor(i*s/t) to ceil((i+1)*s/t) - 1."""
    index = torch.arange(target, device=device)
    start = torch.div(index * source, target, rounding_mode="floor")
    stop = -torch.div(-(index + 1) * source, target, rounding_mode="floor")  # ceiling division
    column = torch.arange(source, device=device)
    window = (column >= start.unsqueeze(1)) & (column < stop.unsqueeze(1))
    return window.float() / (stop - start).unsqueeze(1).float()


def _random_flags(pixels: torch.Tensor, draw, allowed: torch.Tensor) -> torch.Tensor:
    """Give a share of the `allowed` 1s a long diagonal flag from the top of the stem, and some of those a flat foot,
    in the digit's own stroke width: MNIST's writers rarely drew them, and without them a flagged 1 reads as a 7."""
    count = len(pixels)
    top, bottom, stroke, elongation = _stem(pixels)
    flagged = allowed & (elongation < ONE_ELONGATION) & (draw(count, 0, 1) < FLAG_SHARE)
    footed = flagged & (draw(count, 0, 1) < FOOT_SHARE)
    length = (top - bottom).norm(dim=1, keepdim=True)
    # Down and to the left in the picture, whatever the stem's lean: leaning with a right-leaning stem, it would
    # meet it at a 7's angle. The affine map later slants and turns both together.
    drop = draw(count, *FLAG_DROP_DEGREES).unsqueeze(1) * (math.pi / 180)
    course = torch.cat([-torch.cos(drop), torch.sin(drop)], dim=1)
    flag_end = top + draw(count, *FLAG_LENGTH).unsqueeze(1) * length * course
    foot = (
        draw(count, *FOOT_LENGTH).unsqueeze(1)
        * length
        / 2
        * torch.tensor([[1.0, 0.0]], device=pixels.device)
    )
    flag = _segment_ink(top, flag_end, stroke, pixels) * flagged.view(-1, 1, 1)
    foot = _segment_ink(bottom - foot, bottom + foot, stroke, pixels) * footed.view(-1, 1, 1)
    drawn = torch.maximum(pixels, torch.maximum(flag, foot).unsqueeze(1))
    # Moved back so that the centre of mass stays where MNIST put it (and /predict/image puts a picture's):
    # a flag must not leave its 1 off to the right.
    offset = _centre_of_mass(drawn) - _centre_of_mass(pixels)
    return torch.where(flagged.view(-1, 1, 1, 1), _moved(drawn, offset), pixels)


def _centre_of_mass(pixels: torch.Tensor) -> torch.Tensor:
    """(N, 2): each digit's centre of mass (x, y) in pixel coordinates."""
    xs, ys = _pixel_grid(pixels)
    ink = pixels[:, 0]
    mass = ink.sum(dim=(1, 2)).clamp_min(1e-6)
    return torch.stack(
        [(ink * xs).sum(dim=(1, 2)), (ink * ys).sum(dim=(1, 2))], dim=1
    ) / mass.unsqueeze(1)


def _moved(pixels: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """The digits moved by -offset (N, 2) pixels: each output pixel samples the input `offset` away."""
    count, _, height, width = pixels.shape
    theta = torch.eye(2, 3, device=pixels.device).repeat(count, 1, 1)
    theta[:, :, 2] = offset * torch.tensor(
        [[2 / width, 2 / height]], device=pixels.device
    )  # pixels to grid units
    grid = F.affine_grid(theta, [count, 1, height, width], align_corners=False)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _stem(pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each digit's ink seen as one straight stroke along its main axis (pixel coordinates, x right, y down):
    its top and bottom ends (N, 2), its width (N, 1), and its elongation (N,): 0 for a line, 1 for a ring."""
    ink = pixels[:, 0]
    xs, ys = _pixel_grid(pixels)
    mass = ink.sum(dim=(1, 2)).clamp_min(1e-6)
    centre = _centre_of_mass(pixels)
    dx, dy = xs - centre[:, 0].view(-1, 1, 1), ys - centre[:, 1].view(-1, 1, 1)
    xx, yy, xy = ((ink * a * b).sum(dim=(1, 2)) / mass for a, b in ((dx, dx), (dy, dy), (dx, dy)))
    # The ink's covariance matrix: its larger eigenvector is the main axis, and the square root of its
    # eigenvalues' ratio the elongation.
    angle = 0.5 * torch.atan2(2 * xy, xx - yy)
    along = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    up = torch.where((along[:, 1] > 0).unsqueeze(1), -along, along)  # y grows downwards
    half_trace, gap = (xx + yy) / 2, (((xx - yy) / 2) ** 2 + xy**2).sqrt()
    elongation = ((half_trace - gap).clamp_min(0) / (half_trace + gap).clamp_min(1e-6)).sqrt()
    reach = dx * up[:, 0].view(-1, 1, 1) + dy * up[:, 1].view(
        -1, 1, 1
    )  # each pixel's distance along the axis
    inked = ink > 0.3
    highest = torch.where(inked, reach, -math.inf).flatten(1).amax(dim=1).clamp_min(0).unsqueeze(1)
    lowest = torch.where(inked, reach, math.inf).flatten(1).amin(dim=1).clamp_max(0).unsqueeze(1)
    stroke = (mass.unsqueeze(1) / (highest - lowest).clamp_min(1)).clamp(
        1.5, 4
    )  # the ink's area over its length
    return centre + highest * up, centre + lowest * up, stroke, elongation


def _pixel_grid(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pixel's x (column) and y (row), as (H, W) tensors on the batch's device."""
    _, _, height, width = pixels.shape
    rows = torch.arange(height, device=pixels.device, dtype=pixels.dtype)
    columns = torch.arange(width, device=pixels.device, dtype=pixels.dtype)
    ys, xs = torch.meshgrid(rows, columns, indexing="ij")
    return xs, ys


def _segment_ink(
    start: torch.Tensor, end: torch.Tensor, stroke: torch.Tensor, pixels: torch.Tensor
):
    """(N, H, W) ink of a straight pen stroke from `start` to `end` (N, 2), `stroke` (N, 1) pixels wide, edges soft."""
    xs, ys = _pixel_grid(pixels)
    points = torch.stack([xs, ys], dim=-1).view(1, -1, 2)
    course = (end - start).unsqueeze(1)
    offset = points - start.unsqueeze(1)
    along = ((offset * course).sum(dim=2) / (course**2).sum(dim=2).clamp_min(1e-6)).clamp(0, 1)
    distance = (offset - along.unsqueeze(2) * course).norm(dim=2)
    return (stroke / 2 + 0.5 - distance).clamp(0, 1).view(-1, *xs.shape)


def _random_forms(
    pixels: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """The batch with FORM_SHARE of the digits that have other hands' forms replaced by one of those forms' pictures,
    of the same digit: MNIST's writers rarely drew them, and without them a curled 9 reads as 3 or 8 and a 4 like a
    "ч" as 6 (docs/training.md)."""
    pool = _form_pictures(pixels.device)
    chosen = torch.rand(len(labels), generator=generator).to(pixels.device) < FORM_SHARE
    pixels = pixels.clone()
    for digit, pictures in pool.items():
        rows = (chosen & (labels == digit)).nonzero().flatten()
        picks = torch.randint(len(pictures), (len(rows),), generator=generator).to(pixels.device)
        pixels[rows] = pictures[picks].to(pixels.dtype)
    return pixels


_FORM_POOLS: dict[str, dict[int, torch.Tensor]] = {}


def _form_pictures(device: torch.device) -> dict[int, torch.Tensor]:
    """FORMS_PER_DIGIT prepared pictures (k, 1, 28, 28) of each digit's other hands' forms, made once per device:
    drawing thousands of pictures with Pillow takes seconds, so a run draws them once and picks from them."""
    key = str(device)
    if key not in _FORM_POOLS:
        from d4.preprocess import image_to_pixels  # imported here: only runs given labels need it

        rng = random.Random(FORMS_SEED)
        pools = {}
        for digit, forms in OTHER_HANDS_FORMS.items():
            templates = list(forms.values())
            pictures = [
                _prepared(templates[k % len(templates)], rng, image_to_pixels)
                for k in range(FORMS_PER_DIGIT)
            ]
            pools[digit] = torch.stack(pictures).to(device)
        _FORM_POOLS[key] = pools
    return _FORM_POOLS[key]


def _prepared(form: Form, rng: random.Random, image_to_pixels) -> torch.Tensor:
    """One hand's picture of `form`, prepared as /predict/image prepares a picture: (1, 28, 28) in 0..1."""
    picture = draw(varied(jittered(form, rng, FORM_JITTER), rng), rng.uniform(*FORM_PEN))
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return torch.tensor(image_to_pixels(buffer.getvalue()), dtype=torch.float32).view(
        1, IMAGE_SIZE, IMAGE_SIZE
    )
