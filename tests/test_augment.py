"""--augment's distortions, and the handwriting proxy's degradations: each does what it says."""

import math
import random
import subprocess
import sys

import bench_handwriting as proxy
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

import d4.augment as augment
import d4.preprocess as preprocess
from conftest import FIXTURE_MNIST, REPO, SHIPPED_WEIGHTS, encode
from d4.augment import distort
from d4.drawn_digits import DIGIT_STROKES, EUROPEAN_FORMS, draw, scaled, varied
from d4.model import to_model_input
from d4.preprocess import (
    MAX_STROKE_WIDTH,
    MIN_STROKE_WIDTH,
    STROKE_VIEW,
    _stroke_width,
    image_to_views,
)
from d4.weights import load_weights


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
        distorted = (
            (model(distort(pixels, torch.Generator().manual_seed(1))).argmax(dim=1) == labels)
            .float()
            .mean()
        )
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
        assert (distorted.flatten(1) > 0.25).sum(
            dim=1
        ).min() >= 8  # at least a few pixels of stroke


class AtenCalls(TorchDispatchMode):
    """Records each ATen operator run inside it, with its arguments: what a device's backend is asked to do."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((func.overloadpacket.__name__, args))
        return func(*args, **(kwargs or {}))


def test_distortions_never_pool_adaptively_over_sizes_that_do_not_divide(fixture_pixels):
    """Apple's GPUs (MPS) refuse adaptive pooling unless the output's sizes divide the input's (PyTorch issue 96056)."""
    pixels, _ = fixture_pixels
    with AtenCalls() as recorded:
        for seed in range(10):  # coarse scans of several sides, 8 to 16 px
            distort(pixels, torch.Generator().manual_seed(seed))
    pools = [
        (args[0].shape[-2:], tuple(args[1])) for name, args in recorded.calls if "adaptive" in name
    ]
    assert all(
        size % out == 0 for sizes, outs in pools for size, out in zip(sizes, outs, strict=True)
    ), pools


@pytest.mark.parametrize(
    "side", range(augment.LOW_RESOLUTION_SIDES[0], augment.LOW_RESOLUTION_SIDES[1] + 1)
)
def test_coarse_scans_average_as_area_interpolation_does(fixture_pixels, side):
    pixels, _ = fixture_pixels
    box = pixels[:, :, augment.BOX_ROWS, augment.BOX_ROWS]
    expected = F.interpolate(box, size=(side, side), mode="area")
    assert torch.allclose(augment._area_shrunk(box, side), expected, atol=1e-6)


@pytest.mark.skipif(not torch.backends.mps.is_available(), reason="needs an Apple GPU (MPS)")
def test_distortions_run_on_an_apple_gpu(fixture_pixels):
    pixels, _ = fixture_pixels
    for seed in range(10):
        assert distort(pixels.to("mps"), torch.Generator().manual_seed(seed)).device.type == "mps"


def test_ones_stretched_to_fill_their_box_keep_no_flag(fixture_pixels, monkeypatch):
    """A form scanner stretches a plain 1 into a block: those training 1s stay plain, whatever FLAG_SHARE says."""
    pixels, labels = fixture_pixels
    monkeypatch.setattr(augment, "FLAG_SHARE", 1.0)
    draw = augment._uniform_draw(torch.Generator().manual_seed(0), pixels.device)
    filling = torch.arange(len(pixels)) % 2 == 0  # every other digit stretched to fill its box
    flagged = (augment._random_flags(pixels, draw, ~filling) != pixels).flatten(1).any(dim=1)
    assert not flagged[filling].any()
    assert flagged[~filling & (labels == 1)].float().mean() > 0.8
    # distort() itself keeps the digits it stretches out of the flags: the two choices are each other's opposite.
    chosen = {}
    flags, fill = augment._random_flags, augment._random_fill

    def recording_flags(pixels, draw, allowed):
        chosen["flag"] = allowed
        return flags(pixels, draw, allowed)

    def recording_fill(pixels, filling):
        chosen["fill"] = filling
        return fill(pixels, filling)

    monkeypatch.setattr(augment, "_random_flags", recording_flags)
    monkeypatch.setattr(augment, "_random_fill", recording_fill)
    distort(pixels, torch.Generator().manual_seed(0))
    assert torch.equal(chosen["flag"], ~chosen["fill"]) and chosen["fill"].any()


def test_flags_go_on_ones_only_from_the_top_of_the_stem_to_the_left(fixture_pixels, monkeypatch):
    pixels, labels = fixture_pixels
    monkeypatch.setattr(augment, "FLAG_SHARE", 1.0)
    monkeypatch.setattr(augment, "FOOT_SHARE", 0.0)

    def flags() -> torch.Tensor:
        draw = augment._uniform_draw(torch.Generator().manual_seed(0), pixels.device)
        return augment._random_flags(pixels, draw, torch.ones(len(pixels), dtype=torch.bool))

    flagged = flags()
    changed = (flagged != pixels).flatten(1).any(dim=1)
    assert (labels[changed] == 1).float().mean() > 0.95  # a 1 is told by its shape
    assert changed.sum() >= 0.8 * (labels == 1).sum()
    # The 1 is moved back, as MNIST centred its digits: the centre of mass stays.
    assert torch.allclose(
        augment._centre_of_mass(flagged), augment._centre_of_mass(pixels), atol=0.1
    )
    monkeypatch.setattr(
        augment, "_moved", lambda digits, offset: digits
    )  # the flag alone, where it was drawn
    columns = torch.arange(pixels.shape[-1], dtype=torch.float32)
    for before, after in zip(pixels[changed, 0], flags()[changed, 0], strict=True):
        flag = after - before
        assert flag.sum() > 3  # a stroke, not a few stray pixels
        # It hangs from the stem's top: it begins in the stem's top rows, and lies left of the top.
        top_row = (before > 0.3).any(dim=1).nonzero().min()
        top_x = (before[top_row] @ columns) / before[top_row].sum()
        assert flag.sum(dim=1).nonzero().min() <= top_row + 2
        assert (flag.sum(dim=0) @ columns) / flag.sum() < top_x


def test_training_with_augment_runs_through_main_and_is_reproducible(tmp_path, capsys):
    import d4_tiny_cnn_mnist as trainer

    runs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.pt"
        flags = [
            "--data-dir",
            str(FIXTURE_MNIST),
            "--device",
            "cpu",
            "--no-plot",
            "--augment",
            "--out",
            str(out),
        ]
        trainer.main(flags)
        runs.append(torch.load(out, weights_only=True))
    assert all(torch.equal(runs[0][key], runs[1][key]) for key in runs[0])
    assert capsys.readouterr().out.count("test accuracy=") == 2


def assert_coarse_scans_as_claimed(picture: Image.Image) -> None:
    """The proxy's two scans of a black-on-white picture have the resolution and grey levels they claim."""
    nearest = Image.Resampling.NEAREST
    binary = proxy.scanned_16x16_binary(picture)
    assert binary.size == (proxy.SENT_SIDE, proxy.SENT_SIDE)
    assert sorted(set(binary.tobytes())) == [0, 255]  # black and white, nothing between
    assert binary.resize((16, 16), nearest).resize(binary.size, nearest) == binary
    grey = proxy.scanned_8x8_17_levels(picture)
    levels = set(grey.tobytes())
    assert len(levels) <= 17 and levels <= {255 - round(count * 255 / 16) for count in range(17)}
    assert grey.resize((8, 8), nearest).resize(grey.size, nearest) == grey


def test_proxy_coarse_scans_have_the_resolution_and_levels_they_claim(fixture_test_digits):
    images, _ = fixture_test_digits
    rng = random.Random(0)
    for image in images[:20]:
        assert proxy.scan_16x16_binary(image, rng) == proxy.scanned_16x16_binary(
            proxy.to_image(image)
        )
        assert proxy.scan_8x8_17_levels(image, rng) == proxy.scanned_8x8_17_levels(
            proxy.to_image(image)
        )
        assert_coarse_scans_as_claimed(proxy.to_image(image))
    for forms in EUROPEAN_FORMS.values():  # and the drawn digits' scans
        for form in forms.values():
            assert_coarse_scans_as_claimed(draw(varied(form, rng), 20))


def stroke_width_of(picture: Image.Image) -> float:
    """Stroke width of the black ink, measured as the preprocessing measures it (digit's longer side at 80 px)."""
    inverted = Image.eval(picture, lambda level: 255 - level)
    ink = inverted.crop(inverted.getbbox())
    scale = STROKE_VIEW / max(ink.size)
    return _stroke_width(
        ink.resize((round(ink.width * scale), round(ink.height * scale)), Image.Resampling.LANCZOS)
    )


def test_proxy_pens_are_thicker_and_thinner_than_mnist(fixture_test_digits):
    images, _ = fixture_test_digits
    rng = random.Random(0)
    for image in images[:20]:
        plain = proxy.to_image(image)
        assert stroke_width_of(proxy.thick_marker(image, rng)) > 1.2 * stroke_width_of(plain)
        assert stroke_width_of(proxy.thin_pen(image, rng)) < stroke_width_of(plain)


def ink_of(picture: Image.Image) -> torch.Tensor:
    """Black ink on white paper as a (height, width) tensor of ink amounts in 0..1."""
    return (
        1
        - torch.tensor(list(picture.tobytes()), dtype=torch.float32).view(
            picture.height, picture.width
        )
        / 255
    )


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
    assert proxy.prepared(picture).flatten().tolist() == list(
        image_to_views(encode(picture, "PNG"))
    )
    assert (
        proxy.prepared(Image.new("L", (100, 100), 255)) is None
    )  # a blank picture is refused, as the API would


def test_thin_pen_strokes_are_thickened_towards_mnist_width(fixture_test_digits):
    images, _ = fixture_test_digits
    thin_ones = [
        image
        for image in images[:30]
        if stroke_width_of(proxy.thin_pen(image, random.Random(0))) < MIN_STROKE_WIDTH
    ]
    assert len(thin_ones) >= 20
    ratios = []
    for image in thin_ones:
        thin = proxy.thin_pen(image, random.Random(0))
        plain = proxy.on_paper(proxy.enlarged(proxy.to_image(image)), (160, 160), (24, 24))
        ratios.append((proxy.prepared(thin)[0].sum() / proxy.prepared(plain)[0].sum()).item())
    # The model sees about as much ink as for the same digit in MNIST's pen (without thickening: ~0.57).
    assert sum(ratios) / len(ratios) > 0.85, ratios


def test_the_benchmark_does_not_import_the_tests():
    """The proxy's drawn digits come from d4/, so that the benchmark runs without the tests' folder."""
    check = "import sys; import bench_handwriting; sys.exit('conftest' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=REPO / "benchmarks", capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("digit", sorted(EUROPEAN_FORMS))
def test_the_shipped_model_reads_european_forms_of_each_digit(client, digit):
    """Each European form of the digit, drawn by a varying hand on /draw's pad, sent to /predict/image."""
    rng = random.Random(digit)
    forms = list(EUROPEAN_FORMS[digit].values())
    pictures = [proxy.drawn_on_the_pad(forms[index % len(forms)], rng) for index in range(24)]
    answers = [
        client.post("/predict/image", files={"file": ("digit.png", encode(p, "PNG"))})
        for p in pictures
    ]
    right = sum(answer.json()["predicted_digit"] == digit for answer in answers)
    assert right >= 0.9 * len(pictures), right


def test_predict_image_answers_the_mean_of_its_views_probabilities(client):
    """Not the first view's alone: the average over image_to_views' 5 views, which read people's digits better."""
    model = load_weights(SHIPPED_WEIGHTS)
    rng = random.Random(0)
    candidates = [
        encode(proxy.small_with_a_wide_pen(form, rng), "PNG") for form in EUROPEAN_FORMS[7].values()
    ]
    candidates += [
        encode(proxy.small_with_a_wide_pen(form, rng), "PNG") for form in EUROPEAN_FORMS[1].values()
    ]
    with torch.no_grad():
        views = [
            model(torch.tensor(image_to_views(data)).view(-1, 1, 28, 28)).softmax(dim=1)
            for data in candidates
        ]
    # The picture whose first view differs most from the views' mean: where averaging matters.
    spread = [(rows[0] - rows.mean(dim=0)).abs().max().item() for rows in views]
    chosen = spread.index(max(spread))
    assert spread[chosen] > 0.01
    answer = client.post("/predict/image", files={"file": ("digit.png", candidates[chosen])}).json()
    assert answer["probabilities"] == pytest.approx(views[chosen].mean(dim=0).tolist(), abs=1e-6)
    assert answer["probabilities"] != pytest.approx(views[chosen][0].tolist(), abs=1e-3)


class FirstViewDisagrees(torch.nn.Module):
    """A stand-in model: sure of a 3 for each picture's first view, of a 5 for its 4 other views."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(pixels), 10)
        logits[:, 5] = 4
        logits[0::5, 5], logits[0::5, 3] = 0, 4
        return logits


def test_the_proxy_counts_the_answer_averaged_over_the_views():
    """The proxy's answer is the API's: the views' average (a 5), not the first view's (a 3)."""
    picture = proxy.prepared(draw(DIGIT_STROKES[5], 20))
    assert picture.shape[0] == 5
    assert proxy.answers(FirstViewDisagrees(), [picture, None]) == [5, None]


def test_small_digits_drawn_with_a_wide_pen_are_thinned_towards_mnist_width(monkeypatch):
    """Digits 70 px tall drawn with /draw's 20-px pen: the model sees about the ink of the digits in MNIST's pen."""
    small = {digit: draw(scaled(form, 0.35, 10, 10), 20) for digit, form in DIGIT_STROKES.items()}
    assert all(stroke_width_of(picture) > MAX_STROKE_WIDTH for picture in small.values())
    thinned = {digit: proxy.prepared(picture)[0].sum() for digit, picture in small.items()}
    # The templates are about 200 px tall: a 20-px pen draws them in MNIST's width.
    ratios = [
        (thinned[digit] / proxy.prepared(draw(DIGIT_STROKES[digit], 20))[0].sum()).item()
        for digit in range(2, 10)
    ]
    assert 0.75 < sum(ratios) / len(ratios) < 1.25, ratios
    monkeypatch.setattr(preprocess, "MAX_STROKE_WIDTH", math.inf)  # no thinning at all
    assert all(
        thinned[digit] < 0.8 * proxy.prepared(picture)[0].sum() for digit, picture in small.items()
    )


def test_coarse_grey_scans_are_not_thinned(fixture_test_digits, monkeypatch):
    """Their strokes are grey blocks, which erosion would erase."""
    images, _ = fixture_test_digits
    scans = [proxy.scan_8x8_17_levels(image, random.Random(0)) for image in images[:30]]
    thick = [scan for scan in scans if stroke_width_of(scan) > MAX_STROKE_WIDTH]
    assert len(thick) >= 3
    as_prepared = [proxy.prepared(scan) for scan in thick]
    monkeypatch.setattr(preprocess, "MAX_STROKE_WIDTH", math.inf)  # no thinning at all
    assert all(
        torch.equal(proxy.prepared(scan), before)
        for scan, before in zip(thick, as_prepared, strict=True)
    )


@pytest.fixture
def small_form_pool(monkeypatch):
    """A pool of 12 pictures per digit, drawn afresh for the test (the trainer's holds FORMS_PER_DIGIT)."""
    monkeypatch.setattr(augment, "FORMS_PER_DIGIT", 12)
    monkeypatch.setattr(augment, "_FORM_POOLS", {})


def test_given_labels_the_other_hands_forms_replace_only_their_own_digits(
    fixture_pixels, small_form_pool, monkeypatch
):
    pixels, labels = fixture_pixels
    monkeypatch.setattr(augment, "FORM_SHARE", 1.0)
    replaced = augment._random_forms(pixels, labels, torch.Generator().manual_seed(0))
    pool = augment._form_pictures(pixels.device)
    has_forms = torch.isin(labels, torch.tensor(sorted(pool)))
    assert torch.equal(replaced[~has_forms], pixels[~has_forms])
    for index in has_forms.nonzero().flatten().tolist():
        # Each is one of the pool's pictures of its own digit.
        assert (pool[labels[index].item()] == replaced[index]).flatten(1).all(dim=1).any(), index
    monkeypatch.setattr(augment, "FORM_SHARE", 0.3)
    some = augment._random_forms(pixels, labels, torch.Generator().manual_seed(0))
    share = (some != pixels).flatten(1).any(dim=1)[has_forms].float().mean()
    assert 0.15 < share < 0.45
    assert not (some != pixels).flatten(1).any(dim=1)[~has_forms].any()


def test_the_form_pool_is_varied_prepared_like_mnist_and_the_same_every_run(small_form_pool):
    pool = augment._form_pictures(torch.device("cpu"))
    assert sorted(pool) == sorted(augment.OTHER_HANDS_FORMS)
    for pictures in pool.values():
        assert pictures.shape == (12, 1, 28, 28) and pictures.min() >= 0 and pictures.max() == 1
        assert len({picture.numpy().tobytes() for picture in pictures}) == len(
            pictures
        )  # no two alike
        # Prepared as /predict/image prepares a picture: the ink inside MNIST's 20x20 box, centred by mass.
        assert pictures[:, :, :2].sum() == 0 and pictures[:, :, :, :2].sum() == 0
    again = augment._form_pictures(torch.device("cpu"))
    augment._FORM_POOLS.clear()
    redrawn = augment._form_pictures(torch.device("cpu"))
    assert all(
        torch.equal(pool[digit], again[digit]) and torch.equal(pool[digit], redrawn[digit])
        for digit in pool
    )


def test_without_labels_distort_draws_no_forms(fixture_pixels, monkeypatch):
    """The trainer calls distort(X, generator): then no form is drawn and no random number is spent on them."""
    pixels, labels = fixture_pixels

    def refuse(*args):
        raise AssertionError("forms drawn without labels")

    with monkeypatch.context() as patched:
        patched.setattr(augment, "_random_forms", refuse)
        plain = distort(pixels, torch.Generator().manual_seed(3))
    with monkeypatch.context() as patched:
        patched.setattr(augment, "_random_forms", lambda pixels, labels, generator: pixels)
        labelled = distort(pixels, torch.Generator().manual_seed(3), labels)
    assert torch.equal(plain, labelled)
