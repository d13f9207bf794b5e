"""--augment's distortions, and the handwriting proxy's degradations: each does what it says."""

import random

import bench_handwriting as proxy
import pytest
import torch
from PIL import Image

from conftest import FIXTURE_MNIST, SHIPPED_WEIGHTS, encode
from d4.augment import distort
from d4.model import load_weights, to_model_input
from d4.preprocess import MIN_STROKE_WIDTH, STROKE_VIEW, _stroke_width, image_to_views


@pytest.fixture(scope="module")
def fixture_pixels(fixture_test_digits) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = fixture_test_digits
    return to_model_input(images), labels


def test_distortions_keep_the_batch_shape_and_range(fixture_pixels):
    pixels, _ = fixture_pixels
    distorted = distort(pixels, torch.Generator().manual_seed(0))
    assert distorted.shape == pixels.shape and distorted.dtype == torch.float32
    assert distorted.min() >= 0 and distorted.max() <= 1
    assert not torch.equal(distorted, pixels)


def test_distortions_keep_the_label_readable(fixture_pixels):
    """The shipped model, trained with --augment, reads distorted digits almost as well as clean ones, in order."""
    pixels, labels = fixture_pixels
    model = load_weights(SHIPPED_WEIGHTS)
    with torch.no_grad():
        clean = (model(pixels).argmax(dim=1) == labels).float().mean().item()
        distorted = (model(distort(pixels, torch.Generator().manual_seed(1))).argmax(dim=1) == labels).float().mean()
    assert distorted.item() > clean - 0.06, (distorted.item(), clean)


def test_a_seed_gives_the_same_distortions_and_another_seed_others(fixture_pixels):
    pixels, _ = fixture_pixels
    first = distort(pixels, torch.Generator().manual_seed(5))
    again = distort(pixels, torch.Generator().manual_seed(5))
    other = distort(pixels, torch.Generator().manual_seed(6))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_distortions_never_wipe_a_digit_out(fixture_pixels):
    pixels, _ = fixture_pixels
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):  # 9,000 distorted digits
        distorted = distort(pixels, generator)
        assert distorted.flatten(1).amax(dim=1).min() > 0.25
        assert (distorted.flatten(1) > 0.25).sum(dim=1).min() >= 8  # at least a few pixels of stroke


def test_training_with_augment_runs_through_main_and_is_reproducible(tmp_path, capsys):
    import d4_tiny_cnn_mnist as trainer

    runs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.pt"
        flags = ["--data-dir", str(FIXTURE_MNIST), "--device", "cpu", "--no-plot", "--augment", "--out", str(out)]
        trainer.main(flags)
        runs.append(torch.load(out, weights_only=True))
    assert all(torch.equal(runs[0][key], runs[1][key]) for key in runs[0])
    assert capsys.readouterr().out.count("test accuracy=") == 2


def test_proxy_coarse_scans_have_the_resolution_and_levels_they_claim(fixture_test_digits):
    images, _ = fixture_test_digits
    rng = random.Random(0)
    for image in images[:20]:
        binary = proxy.scan_16x16_binary(image, rng)
        assert binary.size == (proxy.SENT_SIDE, proxy.SENT_SIDE)
        assert sorted(set(binary.tobytes())) == [0, 255]  # black and white, nothing between
        assert binary.resize((16, 16), Image.Resampling.NEAREST).resize(binary.size, Image.Resampling.NEAREST) == binary
        grey = proxy.scan_8x8_17_levels(image, rng)
        levels = set(grey.tobytes())
        assert len(levels) <= 17 and levels <= {255 - round(count * 255 / 16) for count in range(17)}
        assert grey.resize((8, 8), Image.Resampling.NEAREST).resize(grey.size, Image.Resampling.NEAREST) == grey


def stroke_width_of(picture: Image.Image) -> float:
    """Stroke width of the black ink, measured as the preprocessing measures it (digit's longer side at 80 px)."""
    inverted = Image.eval(picture, lambda level: 255 - level)
    ink = inverted.crop(inverted.getbbox())
    scale = STROKE_VIEW / max(ink.size)
    return _stroke_width(ink.resize((round(ink.width * scale), round(ink.height * scale)), Image.Resampling.LANCZOS))


def test_proxy_pens_are_thicker_and_thinner_than_mnist(fixture_test_digits):
    images, _ = fixture_test_digits
    rng = random.Random(0)
    for image in images[:20]:
        plain = proxy.to_image(image)
        assert stroke_width_of(proxy.thick_marker(image, rng)) > 1.2 * stroke_width_of(plain)
        assert stroke_width_of(proxy.thin_pen(image, rng)) < stroke_width_of(plain)


def ink_of(picture: Image.Image) -> torch.Tensor:
    """Black ink on white paper as a (height, width) tensor of ink amounts in 0..1."""
    return 1 - torch.tensor(list(picture.tobytes()), dtype=torch.float32).view(picture.height, picture.width) / 255


def test_proxy_slant_leans_the_digit_and_the_page_is_large(fixture_test_digits):
    images, labels = fixture_test_digits
    assert labels[2] == 1
    ink = ink_of(proxy.slanted(images[2], random.Random(0)))  # a 1, leaning by 20 degrees
    rows = ink.sum(dim=1).nonzero().flatten()
    columns = torch.arange(ink.shape[1], dtype=torch.float32)
    top, bottom = ink[rows[0] : rows[0] + 10], ink[rows[-1] - 9 : rows[-1] + 1]
    lean = (top.sum(0) @ columns) / top.sum() - (bottom.sum(0) @ columns) / bottom.sum()
    assert abs(lean) > 30  # 120 px tall at 20 degrees: about 40 px of lean
    page = proxy.off_centre_on_a_page(images[0], random.Random(0))
    assert page.size == (800, 600)
    box = ink_of(page).nonzero()
    assert (box.amax(dim=0) - box.amin(dim=0)).max() <= 100


def test_proxy_pictures_go_through_the_apis_preprocessing(fixture_test_digits):
    images, _ = fixture_test_digits
    picture = proxy.scan_16x16_binary(images[0], random.Random(0))
    assert proxy.prepared(picture).flatten().tolist() == list(image_to_views(encode(picture, "PNG")))
    assert proxy.prepared(Image.new("L", (100, 100), 255)) is None  # a blank picture is refused, as the API would


def test_thin_pen_strokes_are_thickened_towards_mnist_width(fixture_test_digits):
    images, _ = fixture_test_digits
    thin_ones = [
        image for image in images[:30] if stroke_width_of(proxy.thin_pen(image, random.Random(0))) < MIN_STROKE_WIDTH
    ]
    assert len(thin_ones) >= 20
    ratios = []
    for image in thin_ones:
        thin = proxy.thin_pen(image, random.Random(0))
        plain = proxy.on_paper(proxy.enlarged(proxy.to_image(image)), (160, 160), (24, 24))
        ratios.append((proxy.prepared(thin)[0].sum() / proxy.prepared(plain)[0].sum()).item())
    # The model sees about as much ink as for the same digit in MNIST's pen (without thickening: ~0.57).
    assert sum(ratios) / len(ratios) > 0.85, ratios
