"""Random distortions of a training batch that make MNIST look more like other people's handwriting.

MNIST's writers were American census staff and students, scanned at one resolution and drawn
with similar pens. Digits from other writers and scanners differ in ways a batch can imitate:
slant and proportions (an affine map), digits that form scanners stretched to fill their box
whatever their shape (a 1 becomes a wide block), the wobble of a hand (an elastic distortion,
Simard et al. 2003), pen width (a soft dilation or erosion), and low-resolution or binarised
scans (the digit shrunk to a few pixels, its grey levels quantised, and enlarged again). Everything runs on the
batch tensor on the training device, one sampling grid for the geometry: no per-image PIL work,
no DataLoader workers. `bench_handwriting.py` measures what each part buys.
"""

import math

import torch
import torch.nn.functional as F

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
BOX_ROWS = slice((IMAGE_SIZE - DIGIT_BOX) // 2, (IMAGE_SIZE + DIGIT_BOX) // 2)  # the box's rows (and columns)


def distort(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A randomly distorted copy of a batch of digits (N, 1, H, W) in 0..1; `generator` (on the CPU) decides."""
    count, _, height, width = pixels.shape
    draw = _uniform_draw(generator, pixels.device)
    theta = _compose(_random_fill(pixels, draw), _random_affine(count, draw))
    grid = F.affine_grid(theta, [count, 1, height, width], align_corners=False)
    grid = grid + _elastic_field(count, height, width, generator, pixels.device)
    distorted = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
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


def _random_fill(pixels: torch.Tensor, draw) -> torch.Tensor:
    """(N, 2, 3) maps stretching a random share of the digits' ink to fill MNIST's 20x20 box; identity for the rest."""
    count, _, height, width = pixels.shape
    ink = pixels[:, 0] > 0.3
    left, right = _ink_extent(ink.any(dim=1), width)
    top, bottom = _ink_extent(ink.any(dim=2), height)
    box = DIGIT_BOX / width  # the 20x20 box's half-side, in grid units
    chosen = (draw(count, 0, 1) < FILL_SHARE) & (right > left) & (bottom > top)
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


def _elastic_field(count: int, height: int, width: int, generator: torch.Generator, device) -> torch.Tensor:
    """(count, H, W, 2) smooth random displacements in grid units (2 / side per pixel)."""
    noise = (torch.rand(count, 2, height, width, generator=generator) * 2 - 1).to(device)
    radius = int(2 * ELASTIC_SMOOTHNESS)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-(offsets**2) / (2 * ELASTIC_SMOOTHNESS**2))
    kernel = kernel / kernel.sum()
    # Separable Gaussian blur of both displacement channels, then scaled so the largest moves are about
    # ELASTIC_STRENGTH pixels (a blur shrinks uniform noise by roughly its kernel's square-root width).
    smooth = F.conv2d(noise.reshape(-1, 1, height, width), kernel.view(1, 1, 1, -1), padding=(0, radius))
    smooth = F.conv2d(smooth, kernel.view(1, 1, -1, 1), padding=(radius, 0)).view(count, 2, height, width)
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
    coarse = F.interpolate(box, size=(side, side), mode="area")
    coarse = coarse / coarse.flatten(1).amax(dim=1).clamp_min(1e-6).view(-1, 1, 1, 1)  # scanners stretch contrast
    threshold = draw(len(chosen), 0.3, 0.5).view(-1, 1, 1, 1)
    binary = draw(len(chosen), 0, 1).view(-1, 1, 1, 1) < 0.5  # half black-and-white scans, half 17 grey levels
    coarse = torch.where(binary, (coarse > threshold).float(), torch.round(coarse * 16) / 16)
    enlarged = F.interpolate(coarse, size=box.shape[-2:], mode="bilinear", align_corners=False)
    pixels = pixels.clone()
    pixels[chosen, :, BOX_ROWS, BOX_ROWS] = enlarged
    return pixels
