"""Time the notes' training loop against ours and the floor, side by side, each in its own process.

    python benchmarks/bench_train.py --data-dir ../shared/mnist
    python benchmarks/bench_train.py --data-dir ../shared/mnist --before ../d4-before

Runs (a) the notes' loop, (b) our default `python d4_tiny_cnn_mnist.py`, (c) our "best"
configuration, (f) the floor: the bare loop of (b) with nothing else (benchmarks/floor_train.py),
and with --before (d), the default run of another checkout of this repository. Each runs
--repeats times, interleaved so that a slow spell of the machine hits all alike, and the table
gives medians: whole-process wall time (start-up, data, training, evaluation, saving and the
plot), the training loop's own speed, test accuracy, peak resident memory, and ratios. Then
the default run's time outside its training loop, phase by phase: start-up (to `device:`),
data and the first epoch's warm-up, the test passes, saving, the report, and exit.

The training loop's speed is timed from the outside, the same way for every script: each
prints a line as it finishes an epoch, and the images of the epochs after the first, divided
by the time between their lines, is the loop's steady speed (no start-up or warm-up in it).
"""

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN_IMAGES = 60_000
# The default run's lines whose times mark its phases, from the first line to the last.
MARK_LINES = ("device:", "epoch=", "test accuracy=", "saved the training record")
BEST_FLAGS = ["--epochs", "5"]


def run_once(command: list[str], workdir: Path) -> dict[str, float]:
    """Run one training process; return its wall seconds, loop speed, peak RSS (MB), test accuracy
    (0 when it prints none) and the seconds at which each of its lines was printed."""
    # Plots are drawn but never wait for a window; unbuffered, each line arrives when it is printed.
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    output = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    process = subprocess.Popen(command, cwd=workdir, env=env, **output)
    lines, epoch_ends, printed_at = [], [], {}
    for line in process.stdout:
        now = time.perf_counter()
        if line.startswith("epoch="):
            epoch_ends.append(now)
        for prefix in MARK_LINES:
            if line.startswith(prefix):
                printed_at.setdefault(prefix, now - start)
        lines.append(line)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    text = "".join(lines)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"error: {' '.join(command)} failed:\n{text}")
    printed = re.search(r"^test accuracy=(\S+)$", text, re.MULTILINE)
    loop_rate = (len(epoch_ends) - 1) * TRAIN_IMAGES / (epoch_ends[-1] - epoch_ends[0])
    epoch_s = [b - a for a, b in zip([start, *epoch_ends[:-1]], epoch_ends, strict=True)]
    return {
        "wall": wall,
        "loop_rate": loop_rate,
        "rss_mb": usage.ru_maxrss / 1024,
        "accuracy": float(printed.group(1)) if printed else 0.0,
        "phases": {**printed_at, "exit": wall, "epochs": epoch_s},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--data-dir", default="data", help="MNIST root, as for the trainer")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each configuration; medians are reported"
    )
    parser.add_argument(
        "--before", type=Path, help="a checkout of this repository whose default run to time too"
    )
    args = parser.parse_args()
    data_dir = str(Path(args.data_dir).resolve())

    with tempfile.TemporaryDirectory() as workdir:
        out = str(Path(workdir) / "d4_cnn.pt")
        runs = {
            "(a) notes' loop": ([sys.executable, str(REPO / "benchmarks" / "notes_train.py")], 2),
            "(b) ours, default": ([sys.executable, str(REPO / "d4_tiny_cnn_mnist.py")], 2),
            f"(c) ours, {' '.join(BEST_FLAGS)}": (
                [sys.executable, str(REPO / "d4_tiny_cnn_mnist.py"), *BEST_FLAGS],
                5,
            ),
            "(f) floor: the bare loop": (
                [sys.executable, str(REPO / "benchmarks" / "floor_train.py")],
                2,
            ),
        }
        if args.before:
            runs["(d) ours before, default"] = (
                [sys.executable, str(args.before.resolve() / "d4_tiny_cnn_mnist.py")],
                2,
            )
        results: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
        for repeat in range(args.repeats):
            for name, (command, _) in runs.items():
                result = run_once([*command, "--data-dir", data_dir, "--out", out], Path(workdir))
                results[name].append(result)
                progress = f"{result['wall']:.1f} s, accuracy {result['accuracy']:.4f}, peak {result['rss_mb']:.0f} MB"
                print(f"run {repeat + 1}/{args.repeats} {name}: {progress}", file=sys.stderr)

    median = {
        name: {key: statistics.median(r[key] for r in rs) for key in rs[0] if key != "phases"}
        for name, rs in results.items()
    }
    notes = median["(a) notes' loop"]
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.platform()}; "
          f"Python {platform.python_version()}; medians of {args.repeats} runs\n")  # fmt: skip
    print("| run | epochs | wall s | training loop, images/s | test accuracy | peak RSS MB | wall / notes' "
          "| loop speed / notes' |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (_, epochs) in runs.items():
        m = median[name]
        ratios = f"{m['wall'] / notes['wall']:.2f} | {m['loop_rate'] / notes['loop_rate']:.2f}"
        print(f"| {name} | {epochs} | {m['wall']:.1f} | {m['loop_rate']:,.0f} | {m['accuracy']:.4f} "
              f"| {m['rss_mb']:.0f} | {ratios} |")  # fmt: skip

    default, best = median["(b) ours, default"], median[f"(c) ours, {' '.join(BEST_FLAGS)}"]
    checks = [
        (
            "default is >= 3x faster (wall <= 0.33 x notes')",
            default["wall"] <= 0.33 * notes["wall"],
        ),
        ("default test accuracy >= 0.985", default["accuracy"] >= 0.985),
        ("best test accuracy >= 0.990", best["accuracy"] >= 0.990),
        ("best wall time <= notes' wall time", best["wall"] <= notes["wall"]),
        (
            "peak memory <= notes' + 200 MB",
            max(default["rss_mb"], best["rss_mb"]) <= notes["rss_mb"] + 200,
        ),
    ]
    floor = median["(f) floor: the bare loop"]
    fixed = [default_fixed_costs(run) for run in results["(b) ours, default"]]
    print("\nthe default run outside its training loop, seconds (medians):")
    for phase in fixed[0]:
        print(f"  {phase}: {statistics.median(f[phase] for f in fixed):.2f}")
    loop_share = default["loop_rate"] / floor["loop_rate"]
    print(f"\nour loop runs at {loop_share:.2f} of the bare loop's speed; the whole default run "
          f"takes {default['wall']:.1f} s against the floor's {floor['wall']:.1f} s")  # fmt: skip
    checks.append(
        (
            "default within 1.15x the bare loop + 1.5 s",
            default["wall"] <= 1.15 * floor["wall"] + 1.5,
        )
    )
    print(f"\nspeed-up (a)/(b): {notes['wall'] / default['wall']:.2f}x whole process, "
          f"{default['loop_rate'] / notes['loop_rate']:.2f}x training loop")  # fmt: skip
    for text, met in checks:
        print(f"{'met ' if met else 'MISS'}  {text}")


def default_fixed_costs(run: dict) -> dict[str, float]:
    """One default run's time outside the training loop, phase by phase, from when its lines printed."""
    at, epochs = run["phases"], run["phases"]["epochs"]
    steady = statistics.median(epochs[1:]) if len(epochs) > 1 else epochs[0]
    last_epoch_end = at["epoch="] + (len(epochs) - 1) * steady
    return {
        "start-up, to the `device:` line": at["device:"],
        "data, and the first epoch beyond a steady one": at["epoch="] - at["device:"] - steady,
        # Each epoch line prints before its test pass: the steps between the lines hold the test passes.
        "the last test pass (the others are in the epochs)": at["test accuracy="] - last_epoch_end,
        "saving the weights and the record": at["saved the training record"] - at["test accuracy="],
        "the report, the example and exit": at["exit"] - at["saved the training record"],
    }


if __name__ == "__main__":
    main()
