"""A proxy for real handwriting: MNIST test digits degraded, and digits drawn as people write them, via /predict/image.

    python benchmarks/bench_handwriting.py --data-dir ../shared/mnist
    python benchmarks/bench_handwriting.py --data-dir ../shared/mnist --recipe "--augment --epochs 5" --recipe "..."
    python benchmarks/bench_handwriting.py --data-dir ../shared/mnist --only-weights --weights other.pt

Real digits from other writers and scanners are kept out of the repository on purpose, so that
nothing is tuned to them. This proxy imitates how they differ from MNIST. From the MNIST *test*
digits (never trained on): coarse scans (a 16x16 black-and-white one, and an 8x8 one with 17
grey levels, each made the way form scanners make them: the digit's ink stretched to fill the
frame), thick marker and thin pen strokes, slant of +-20 degrees, a small digit off-centre on a
large page. Drawn from stroke templates (d4/drawn_digits.py) with a hand's random variation: the
tests' plain forms, and the European forms (the 1 with a long flag, with and without a foot, the
open 4, the crossed 7, the 9 on a straight or curved tail, and the other digits' common forms),
drawn on the pad, scanned both ways, and drawn small with /draw's wide pen; and the forms of 2, 4,
7 and 9 behind the errors left on real handwriting (issue #29: the 4 like a "ч", the 4 nearly
closing a triangle, the 9 whose tail curls back like a "g" or up towards its loop, the crossed 7
slanted like a "Z", the 2 with a small loop at its base), drawn on the pad, stretched to fill a
square and scanned 16x16 black-and-white with thick blocky strokes, and 8x8 with 17 levels. Every picture is
rendered as a black-on-white PNG and goes the way /predict/image takes it: `image_to_views`
prepares it like MNIST (with 4 nearby views), and the API's `average_of_views` averages the
model's answers over the views.

It prints one table of accuracy per set (and on the clean MNIST test set) for (a) a default
training run made now, (b) the shipped d4_cnn.pt, (c) each --recipe, trained now, (d) each
--weights file; then, for each of them, each set's accuracy per digit.
"""

import argparse
import io
import math
import random
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image, ImageFilter, ImageOps

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from d4.data import load_mnist  # noqa: E402
from d4.drawn_digits import (  # noqa: E402
    DIGIT_STROKES,
    EUROPEAN_FORMS,
    OTHER_HANDS_FORMS,
    PAD,
    Form,
    draw,
    jittered,
    scaled,
    varied,
)
from d4.model import to_model_input  # noqa: E402
from d4.preprocess import average_of_views, image_to_views  # noqa: E402
from d4.weights import load_weights  # noqa: E402

SENT_SIDE = 160  # coarse scans are sent enlarged to 160x160, as a person would view and save them
DEFAULT_RECIPES = ["--augment", "--epochs 10", "--augment --epochs 10"]


def to_image(digit: torch.Tensor) -> Image.Image:
    """An MNIST digit (28x28 uint8, white on black) as a Pillow image, black ink on white paper."""
    return ImageOps.invert(Image.frombytes("L", (28, 28), bytes(digit.flatten().tolist())))


def ink_crop(picture: Image.Image) -> Image.Image:
    return picture.crop(ImageOps.invert(picture).getbbox())


def enlarged(picture: Image.Image, factor: int = 4) -> Image.Image:
    return picture.resize(
        (picture.width * factor, picture.height * factor), Image.Resampling.BICUBIC
    )


def on_paper(picture: Image.Image, size: tuple[int, int], position: tuple[int, int]) -> Image.Image:
    page = Image.new("L", size, 255)
    page.paste(picture, position)
    return page


def scan_16x16_binary(digit: torch.Tensor, rng: random.Random) -> Image.Image:
    """The digit's ink stretched to fill 16x16, then each pixel black or white (threshold at half)."""
    return scanned_16x16_binary(to_image(digit))


def scan_8x8_17_levels(digit: torch.Tensor, rng: random.Random) -> Image.Image:
    """The ink stretched to fill a 32x32 black-and-white bitmap; each 4x4 block's ink count (0..16) is a pixel."""
    return scanned_8x8_17_levels(to_image(digit))


def scanned_16x16_binary(picture: Image.Image) -> Image.Image:
    """A black-on-white picture's ink stretched to fill 16x16, each pixel black or white, sent at SENT_SIDE."""
    coarse = (
        ink_crop(picture)
        .resize((16, 16), Image.Resampling.BILINEAR)
        .point(lambda v: 0 if v < 128 else 255)
    )
    return coarse.resize((SENT_SIDE, SENT_SIDE), Image.Resampling.NEAREST)


def scanned_8x8_17_levels(picture: Image.Image) -> Image.Image:
    """A black-on-white picture's ink stretched to 32x32 black or white; each 4x4 block's ink count is a pixel."""
    bitmap = (
        ink_crop(picture)
        .resize((32, 32), Image.Resampling.BILINEAR)
        .point(lambda v: 16 if v < 128 else 0)
    )
    counts = bitmap.reduce(4)  # the mean of each 4x4 block: 16 x its share of ink, rounded to 0..16
    return counts.point(lambda count: 255 - round(count * 255 / 16)).resize(
        (SENT_SIDE, SENT_SIDE), Image.Resampling.NEAREST
    )


def thick_marker(digit: torch.Tensor, rng: random.Random) -> Image.Image:
    """Strokes about twice MNIST's width."""
    return on_paper(
        enlarged(to_image(digit)).filter(ImageFilter.MinFilter(7)), (160, 160), (24, 24)
    )


def thin_pen(digit: torch.Tensor, rng: random.Random) -> Image.Image:
    """Strokes about a third of MNIST's width: only the darkest core of each stroke."""
    core = (
        enlarged(to_image(digit))
        .point(lambda v: 0 if v < 40 else 255)
        .filter(ImageFilter.MaxFilter(3))
    )
    return on_paper(core, (160, 160), (24, 24))


def slanted(digit: torch.Tensor, rng: random.Random) -> Image.Image:
    """Sheared by 20 degrees to the left or to the right."""
    shear = math.tan(math.radians(20)) * rng.choice((-1, 1))
    big = on_paper(enlarged(to_image(digit)), (200, 160), (44, 24))
    return big.transform(
        big.size,
        Image.Transform.AFFINE,
        (1, shear, -shear * 80, 0, 1, 0),
        Image.Resampling.BICUBIC,
        fillcolor=255,
    )


def off_centre_on_a_page(digit: torch.Tensor, rng: random.Random) -> Image.Image:
    """A small digit (about 60-100 px) anywhere on an 800x600 page."""
    side = rng.randint(60, 100)
    small = to_image(digit).resize((side, side), Image.Resampling.BICUBIC)
    return on_paper(small, (800, 600), (rng.randint(0, 800 - side), rng.randint(0, 600 - side)))


DEGRADATIONS: dict[str, Callable[[torch.Tensor, random.Random], Image.Image]] = {
    "16x16 binary scan": scan_16x16_binary,
    "8x8 scan, 17 grey levels": scan_8x8_17_levels,
    "thick marker": thick_marker,
    "thin pen": thin_pen,
    "slant +-20 degrees": slanted,
    "small, off-centre on a page": off_centre_on_a_page,
}


def drawn_strokes(digit: int, rng: random.Random) -> Image.Image:
    """The tests' strokes for `digit` with each point moved by up to 12 px and a pen 8-28 px wide."""
    return draw(jittered(DIGIT_STROKES[digit], rng, 12), rng.randint(8, 28))


def european_form(digit: int, index: int) -> Form:
    """The `index`-th picture's form of `digit`: each of the digit's European forms in turn."""
    forms = list(EUROPEAN_FORMS[digit].values())
    return forms[index % len(forms)]


OTHER_HANDS_DIGITS = sorted(OTHER_HANDS_FORMS)


def other_hands_form(index: int) -> tuple[int, Form]:
    """The `index`-th picture's digit and form among the other hands' forms: digits in turn, then each digit's forms."""
    digit = OTHER_HANDS_DIGITS[index % len(OTHER_HANDS_DIGITS)]
    forms = list(OTHER_HANDS_FORMS[digit].values())
    return digit, forms[index // len(OTHER_HANDS_DIGITS) % len(forms)]


def drawn_on_the_pad(form: Form, rng: random.Random) -> Image.Image:
    """The form as one hand draws it on the 280x280 pad, with a pen 8-28 px wide (fine pen to finger)."""
    return draw(varied(form, rng), rng.uniform(8, 28))


def drawn_then_scanned(
    scan: Callable[[Image.Image], Image.Image],
) -> Callable[[Form, random.Random], Image.Image]:
    """A rendering that draws the form with a pen about MNIST's width for its size, then scans it with `scan`."""
    return lambda form, rng: scan(draw(varied(form, rng), rng.uniform(14, 24)))


def small_with_a_wide_pen(form: Form, rng: random.Random) -> Image.Image:
    """The form drawn 60-100 px tall anywhere on the pad with /draw's 20-px pen: strokes 2-3x MNIST's width."""
    factor = rng.uniform(0.3, 0.5)  # the templates are about 200 px tall
    left, top = rng.uniform(0, PAD * (1 - factor)), rng.uniform(0, PAD * (1 - factor))
    return draw(scaled(varied(form, rng), factor, left, top), 20)


def drawn_then_thick_scan(form: Form, rng: random.Random) -> Image.Image:
    """The form drawn with a pen 1.5-2.5x MNIST's width for its size, then stretched to fill 16x16 and binarised:
    the thick, blocky strokes of the real 16x16 set, where a loop or a bend easily closes up."""
    return scanned_16x16_binary(draw(varied(form, rng), rng.uniform(22, 38)))


# Pictures of the European forms, each a way they reach /predict/image.
EUROPEAN_RENDERINGS: dict[str, Callable[[Form, random.Random], Image.Image]] = {
    "European forms, drawn": drawn_on_the_pad,
    "European forms, 16x16 binary scan": drawn_then_scanned(scanned_16x16_binary),
    "European forms, 8x8 scan, 17 levels": drawn_then_scanned(scanned_8x8_17_levels),
    "European forms, small, wide pen": small_with_a_wide_pen,
}

# Pictures of the forms behind the errors left on real handwriting (issue #29): 2, 4, 7 and 9 as other hands
# write them, stretched to fill a square and scanned as both real sets are, and drawn on the pad.
OTHER_HANDS_RENDERINGS: dict[str, Callable[[Form, random.Random], Image.Image]] = {
    "other hands' 2 4 7 9, drawn": drawn_on_the_pad,
    "other hands' 2 4 7 9, 16x16 binary, thick": drawn_then_thick_scan,
    "other hands' 2 4 7 9, 8x8 scan, 17 levels": drawn_then_scanned(scanned_8x8_17_levels),
}


def prepared(picture: Image.Image) -> torch.Tensor | None:
    """The (views, 1, 28, 28) inputs /predict/image gives the model for this picture sent as a PNG; None if refused."""
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    try:
        return torch.tensor(image_to_views(buffer.getvalue())).view(-1, 1, 28, 28)
    except ValueError:  # ImageRejected: the user would get a 422, which counts as a wrong answer
        return None


def proxy_sets(
    images: torch.Tensor, labels: torch.Tensor, count: int, seed: int
) -> dict[str, tuple[list, list]]:
    """Each set's prepared inputs (None where refused) and labels: `count` random test digits degraded each way,
    then `count` drawn digits (a tenth of each digit) for the tests' strokes and each European rendering, then
    `count` of the other hands' forms (a quarter each of 2, 4, 7 and 9) for each of their renderings. The sets are
    made in this order from one seeded generator, so adding sets at the end leaves the earlier ones unchanged."""
    rng = random.Random(seed)
    chosen = rng.sample(range(len(labels)), count)
    sets = {}
    for name, degrade in DEGRADATIONS.items():
        sets[name] = (
            [prepared(degrade(images[i], rng)) for i in chosen],
            [labels[i].item() for i in chosen],
        )
    drawn_labels = [i % 10 for i in range(count)]
    sets["drawn strokes, jittered"] = (
        [prepared(drawn_strokes(d, rng)) for d in drawn_labels],
        drawn_labels,
    )
    for name, render in EUROPEAN_RENDERINGS.items():
        pictures = (render(european_form(i % 10, i // 10), rng) for i in range(count))
        sets[name] = ([prepared(picture) for picture in pictures], drawn_labels)
    other_hands = [other_hands_form(i) for i in range(count)]
    for name, render in OTHER_HANDS_RENDERINGS.items():
        pictures = (render(form, rng) for _, form in other_hands)
        sets[name] = (
            [prepared(picture) for picture in pictures],
            [digit for digit, _ in other_hands],
        )
    return sets


@torch.inference_mode()
def answers(model: torch.nn.Module, inputs: list) -> list[int | None]:
    """The digit /predict/image answers for each prepared picture (its views averaged by the API's own function);
    None where the picture is refused."""
    kept = [pixels for pixels in inputs if pixels is not None]
    if not kept:
        return [None] * len(inputs)
    views = kept[0].shape[0]
    rows = model(torch.cat(kept)).softmax(dim=1).view(-1, views, 10).tolist()
    predicted = iter(max(range(10), key=average_of_views(picture).__getitem__) for picture in rows)
    return [None if pixels is None else next(predicted) for pixels in inputs]


def scores(predicted: list[int | None], labels: list[int]) -> list[float]:
    """Accuracy over all the pictures, then over each digit's, 0 to 9 (a refused picture counts as wrong);
    NaN for a digit the set does not hold."""
    right = [answer == label for answer, label in zip(predicted, labels, strict=True)]
    per_digit = [
        [ok for ok, label in zip(right, labels, strict=True) if label == digit]
        for digit in range(10)
    ]
    return [sum(right) / len(right)] + [sum(ok) / len(ok) if ok else math.nan for ok in per_digit]


def mean_of_held(values: tuple[float, ...]) -> float:
    """The mean of the values that are not NaN: a digit's mean over the sets that hold it."""
    held = [value for value in values if not math.isnan(value)]
    return sum(held) / len(held) if held else math.nan


def evaluate(
    model: torch.nn.Module, sets: dict[str, tuple[list, list]], clean: tuple[list, list]
) -> dict:
    """Each set's scores (all, then per digit), their mean, and the clean MNIST test set's (one view, no averaging)."""
    results = {
        name: scores(answers(model, inputs), truth) for name, (inputs, truth) in sets.items()
    }
    results["mean of the above"] = [
        mean_of_held(column) for column in zip(*results.values(), strict=True)
    ]
    results["MNIST test, clean"] = scores(answers(model, clean[0]), clean[1])
    return results


def train(flags: str, data_dir: str, out: Path) -> float:
    """Train with `python d4_tiny_cnn_mnist.py FLAGS` into `out`; return the wall seconds."""
    command = [
        sys.executable,
        str(REPO / "d4_tiny_cnn_mnist.py"),
        "--data-dir",
        data_dir,
        "--out",
        str(out),
    ]
    start = time.perf_counter()
    result = subprocess.run(
        [*command, "--no-plot", *shlex.split(flags)], capture_output=True, text=True
    )
    if result.returncode != 0:
        sys.exit(f"error: training with '{flags}' failed:\n{result.stderr}")
    return time.perf_counter() - start


def trained_columns(
    args: argparse.Namespace, data_dir: str, workdir: Path
) -> dict[str, tuple[Path, str]]:
    """Each model to compare, as (weights file, training wall time): trained now unless --only-weights."""
    columns: dict[str, tuple[Path, str]] = {}
    recipes = [] if args.only_weights else ["", *(args.recipe or DEFAULT_RECIPES)]
    for index, flags in enumerate(recipes):
        name = "(a) default run" if not flags else f"(c) {flags}"
        out = workdir / f"run{index}.pt"
        print(f"training {name} ...", file=sys.stderr)
        columns[name] = (out, f"{train(flags, data_dir, out):.0f} s")
        if index == 0:
            columns["(b) shipped d4_cnn.pt"] = (REPO / "d4_cnn.pt", "")
    if args.only_weights:
        columns["(b) shipped d4_cnn.pt"] = (REPO / "d4_cnn.pt", "")
    for path in args.weights:
        columns[f"(d) {path}"] = (Path(path), "")
    return columns


def print_tables(
    count: int, columns: dict[str, tuple[Path, str]], results: dict[str, dict]
) -> None:
    """One table of every set's accuracy for each model, then one per model of each set's accuracy per digit."""
    print(f"\n{count} pictures per set, sent as PNG through /predict/image's preprocessing\n")
    print("| set | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for row in next(iter(results.values())):
        print(
            f"| {row} | "
            + " | ".join(f"{scores[row][0]:.3f}" for scores in results.values())
            + " |"
        )
    print("| training wall time | " + " | ".join(wall for _, wall in columns.values()) + " |")
    for name, scores in results.items():
        print(f"\n{name}: accuracy per digit\n")
        print("| set | all | " + " | ".join(map(str, range(10))) + " |")
        print("|---|" + "---:|" * 11)
        for row, values in scores.items():
            print(
                f"| {row} | "
                + " | ".join("-" if math.isnan(value) else f"{value:.2f}" for value in values)
                + " |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--data-dir", default="data", help="MNIST root, as for the trainer")
    parser.add_argument("--digits", type=int, default=1000, help="pictures per set")
    parser.add_argument(
        "--seed", type=int, default=0, help="which digits, and how each is degraded or drawn"
    )
    parser.add_argument(
        "--recipe",
        action="append",
        help=f"trainer flags of a candidate, trained now (default: {DEFAULT_RECIPES})",
    )
    parser.add_argument(
        "--weights", action="append", default=[], help="also evaluate this existing weights file"
    )
    parser.add_argument(
        "--only-weights",
        action="store_true",
        help="train nothing: evaluate the shipped d4_cnn.pt and each --weights",
    )
    args = parser.parse_args()
    data_dir = str(Path(args.data_dir).resolve())

    images, labels = load_mnist(data_dir, train=False)
    start = time.perf_counter()
    sets = proxy_sets(images, labels, args.digits, args.seed)
    print(
        f"built the proxy: {len(sets)} sets of {args.digits} pictures in {time.perf_counter() - start:.0f} s",
        file=sys.stderr,
    )
    clean = (list(to_model_input(images).unsqueeze(1)), labels.tolist())
    with tempfile.TemporaryDirectory() as workdir:
        columns = trained_columns(args, data_dir, Path(workdir))
        results = {
            name: evaluate(load_weights(path), sets, clean) for name, (path, _) in columns.items()
        }
    print_tables(args.digits, columns, results)


if __name__ == "__main__":
    main()
