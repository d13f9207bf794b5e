"""A proxy for real handwriting: MNIST test digits degraded as people's pictures arrive, via /predict/image's path.

    python benchmarks/bench_handwriting.py --data-dir ../shared/mnist
    python benchmarks/bench_handwriting.py --data-dir ../shared/mnist --recipe "--augment --epochs 5" --recipe "..."

Real digits from other writers and scanners are kept out of the repository on purpose, so that
nothing is tuned to them. This proxy imitates how they differ from MNIST, from the MNIST
*test* digits (never trained on): coarse scans (a 16x16 black-and-white one, and an 8x8 one
with 17 grey levels, each made the way form scanners make them: the digit's ink stretched to
fill the frame), thick marker and thin pen strokes, slant of +-20 degrees, a small digit
off-centre on a large page, and digits drawn as pen strokes like the tests' (tests/conftest.py).
Every picture is rendered as a black-on-white PNG and goes the way /predict/image takes it:
`image_to_views` prepares it like MNIST (with 4 nearby views), and the model's answers over the
views are averaged.

It prints one table: accuracy per degradation (and on the clean MNIST test set) for (a) a
default training run made now, (b) the shipped d4_cnn.pt, (c) each --recipe, trained now.
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
from PIL import Image, ImageDraw, ImageFilter, ImageOps

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
from conftest import DIGIT_STROKES  # noqa: E402
from d4.data import load_mnist  # noqa: E402
from d4.model import load_weights, to_model_input  # noqa: E402
from d4.preprocess import image_to_views  # noqa: E402

SENT_SIDE = 160  # coarse scans are sent enlarged to 160x160, as a person would view and save them
DEFAULT_RECIPES = ["--augment", "--epochs 8", "--augment --epochs 8"]


def to_image(digit: torch.Tensor) -> Image.Image:
    """An MNIST digit (28x28 uint8, white on black) as a Pillow image, black ink on white paper."""
    return ImageOps.invert(Image.frombytes("L", (28, 28), bytes(digit.flatten().tolist())))


def ink_crop(picture: Image.Image) -> Image.Image:
    return picture.crop(ImageOps.invert(picture).getbbox())


def enlarged(picture: Image.Image, factor: int = 4) -> Image.Image:
    return picture.resize((picture.width * factor, picture.height * factor), Image.Resampling.BICUBIC)


def on_paper(picture: Image.Image, size: tuple[int, int], position: tuple[int, int]) -> Image.Image:
    page = Image.new("L", size, 255)
    page.paste(picture, position)
    return page


def scan_16x16_binary(digit: torch.Tensor, rng: random.Random) -> Image.Image:
    """The digit's ink stretched to fill 16x16, then each pixel black or white (threshold at half)."""
    coarse = (
        ink_crop(to_image(digit)).resize((16, 16), Image.Resampling.BILINEAR).point(lambda v: 0 if v < 128 else 255)
    )
    return coarse.resize((SENT_SIDE, SENT_SIDE), Image.Resampling.NEAREST)


def scan_8x8_17_levels(digit: torch.Tensor, rng: random.Random) -> Image.Image:
    """The ink stretched to fill a 32x32 black-and-white bitmap; each 4x4 block's ink count (0..16) is a pixel."""
    bitmap = ink_crop(to_image(digit)).resize((32, 32), Image.Resampling.BILINEAR).point(lambda v: 16 if v < 128 else 0)
    counts = bitmap.reduce(4)  # the mean of each 4x4 block: 16 x its share of ink, rounded to 0..16
    return counts.point(lambda count: 255 - round(count * 255 / 16)).resize(
        (SENT_SIDE, SENT_SIDE), Image.Resampling.NEAREST
    )


def thick_marker(digit: torch.Tensor, rng: random.Random) -> Image.Image:
    """Strokes about twice MNIST's width."""
    return on_paper(enlarged(to_image(digit)).filter(ImageFilter.MinFilter(7)), (160, 160), (24, 24))


def thin_pen(digit: torch.Tensor, rng: random.Random) -> Image.Image:
    """Strokes about a third of MNIST's width: only the darkest core of each stroke."""
    core = enlarged(to_image(digit)).point(lambda v: 0 if v < 40 else 255).filter(ImageFilter.MaxFilter(3))
    return on_paper(core, (160, 160), (24, 24))


def slanted(digit: torch.Tensor, rng: random.Random) -> Image.Image:
    """Sheared by 20 degrees to the left or to the right."""
    shear = math.tan(math.radians(20)) * rng.choice((-1, 1))
    big = on_paper(enlarged(to_image(digit)), (200, 160), (44, 24))
    return big.transform(
        big.size, Image.Transform.AFFINE, (1, shear, -shear * 80, 0, 1, 0), Image.Resampling.BICUBIC, fillcolor=255
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
    page = Image.new("L", (280, 280), 255)
    pen = ImageDraw.Draw(page)
    width = rng.randint(8, 28)
    for stroke in DIGIT_STROKES[digit]:
        moved = [(x + rng.uniform(-12, 12), y + rng.uniform(-12, 12)) for x, y in stroke]
        pen.line(moved, fill=0, width=width, joint="curve")
    return page


def prepared(picture: Image.Image) -> torch.Tensor | None:
    """The (views, 1, 28, 28) inputs /predict/image gives the model for this picture sent as a PNG; None if refused."""
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    try:
        return torch.tensor(image_to_views(buffer.getvalue())).view(-1, 1, 28, 28)
    except ValueError:  # ImageRejected: the user would get a 422, which counts as a wrong answer
        return None


def proxy_sets(images: torch.Tensor, labels: torch.Tensor, count: int, seed: int) -> dict[str, tuple[list, list]]:
    """Each degradation's prepared inputs (None where refused) and labels, from `count` random test digits."""
    rng = random.Random(seed)
    chosen = rng.sample(range(len(labels)), count)
    sets = {}
    for name, degrade in DEGRADATIONS.items():
        sets[name] = ([prepared(degrade(images[i], rng)) for i in chosen], [labels[i].item() for i in chosen])
    drawn_labels = [i % 10 for i in range(count)]
    sets["drawn strokes, jittered"] = ([prepared(drawn_strokes(d, rng)) for d in drawn_labels], drawn_labels)
    return sets


@torch.inference_mode()
def accuracy(model: torch.nn.Module, inputs: list, labels: list) -> float:
    kept = [i for i, pixels in enumerate(inputs) if pixels is not None]
    if not kept:
        return 0.0
    views = inputs[kept[0]].shape[0]
    predictions = (
        model(torch.cat([inputs[i] for i in kept])).softmax(dim=1).view(-1, views, 10).mean(dim=1).argmax(dim=1)
    )
    return sum(predictions[j].item() == labels[i] for j, i in enumerate(kept)) / len(inputs)


def train(flags: str, data_dir: str, out: Path) -> float:
    """Train with `python d4_tiny_cnn_mnist.py FLAGS` into `out`; return the wall seconds."""
    command = [sys.executable, str(REPO / "d4_tiny_cnn_mnist.py"), "--data-dir", data_dir, "--out", str(out)]
    start = time.perf_counter()
    result = subprocess.run([*command, "--no-plot", *shlex.split(flags)], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"error: training with '{flags}' failed:\n{result.stderr}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--data-dir", default="data", help="MNIST root, as for the trainer")
    parser.add_argument("--digits", type=int, default=1000, help="test digits per degradation")
    parser.add_argument("--seed", type=int, default=0, help="which digits, and how each is degraded")
    parser.add_argument(
        "--recipe", action="append", help=f"trainer flags of a candidate, trained now (default: {DEFAULT_RECIPES})"
    )
    parser.add_argument("--weights", action="append", default=[], help="also evaluate this existing weights file")
    args = parser.parse_args()
    data_dir = str(Path(args.data_dir).resolve())

    images, labels = load_mnist(data_dir, train=False)
    start = time.perf_counter()
    sets = proxy_sets(images, labels, args.digits, args.seed)
    print(
        f"built the proxy: {len(sets)} sets of {args.digits} pictures in {time.perf_counter() - start:.0f} s",
        file=sys.stderr,
    )

    columns: dict[str, tuple[Path, str]] = {}
    with tempfile.TemporaryDirectory() as workdir:
        for index, flags in enumerate(["", *(args.recipe or DEFAULT_RECIPES)]):
            name = "(a) default run" if not flags else f"(c) {flags}"
            out = Path(workdir) / f"run{index}.pt"
            print(f"training {name} ...", file=sys.stderr)
            columns[name] = (out, f"{train(flags, data_dir, out):.0f} s")
            if index == 0:
                columns["(b) shipped d4_cnn.pt"] = (REPO / "d4_cnn.pt", "")
        for path in args.weights:
            columns[f"(d) {path}"] = (Path(path), "")

        models = {name: load_weights(path) for name, (path, _) in columns.items()}
        clean = to_model_input(images)
        rows: dict[str, list[float]] = {name: [] for name in [*sets, "mean of the above", "MNIST test, clean"]}
        for model in models.values():
            scores = [accuracy(model, inputs, truth) for inputs, truth in sets.values()]
            for row, score in zip(sets, scores, strict=True):
                rows[row].append(score)
            rows["mean of the above"].append(sum(scores) / len(scores))
            rows["MNIST test, clean"].append(accuracy(model, list(clean.unsqueeze(1)), labels.tolist()))

    print(f"\n{args.digits} pictures per degradation, sent as PNG through /predict/image's preprocessing\n")
    print("| degradation | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for row, scores in rows.items():
        print(f"| {row} | " + " | ".join(f"{score:.3f}" for score in scores) + " |")
    print("| training wall time | " + " | ".join(wall for _, wall in columns.values()) + " |")


if __name__ == "__main__":
    main()
