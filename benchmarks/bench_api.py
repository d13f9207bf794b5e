"""Load the notes' API, ours and the floor side by side, each a real uvicorn process on loopback.

    python benchmarks/bench_api.py
    python benchmarks/bench_api.py --server-python .venv-render/bin/python --render-free   # as Render runs it
    python benchmarks/bench_api.py --before ../d4-before     # also ours as another checkout has it

The floor (benchmarks/floor_api.py) is the least FastAPI app that answers /predict as ours
does: it parses the body with the same parser and runs the same batched forward pass, with
nothing else. Ours as a fraction of the floor says how much the API's promises cost.

For each server in turn (never two at once, so they don't share the 2 cores): start it,
time the first 200 on its health URL, warm up, then send the same real MNIST digit with a
bounded number of keep-alive HTTP/1.1 requests at concurrency 1 and 8 from a small asyncio
client, and read the server's memory after those blocks and again after one more block at
concurrency 8.

--render-free runs each server inside ../shared/tools/render-free, the shape of a Render free
instance (0.1 CPU, 512 MB), with render.yaml's environment (one thread for PyTorch and OpenMP,
uvicorn's h11 parser with its header limit, the allocator's setting); it
also reports the group's peak memory. There, a cold start varies by seconds from one start
to the next, so --starts starts each server several times, interleaved, and reports the median.
"""

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from load_client import (
    RENDER_FREE,
    cpu_seconds,
    deploy_env,
    drive,
    http_request,
    memory_mb,
    running_server,
    serving_pid,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from d4.data import load_mnist  # noqa: E402
from d4.model import to_model_input  # noqa: E402

SERVERS = {
    # name: (uvicorn app, folder it is imported from, health path)
    "(a) notes' API": ("notes_api:app", REPO / "benchmarks", "/"),
    "(b) ours": ("d4_api_mnist:app", REPO, "/healthz"),
    "(f) floor": ("floor_api:app", REPO / "benchmarks", "/"),
}
BEFORE = "(c) ours before"  # with --before: the API as another checkout of this repository has it


def drive_predict(port: int, body: bytes, concurrency: int, total: int, pid: int) -> dict:
    """Send `total` POST /predict requests over `concurrency` connections; return the figures."""
    cpu_before = cpu_seconds(pid)
    load = asyncio.run(
        drive(port, [("predict", http_request("POST", "/predict", body))], concurrency, total)
    )
    return {
        "cpu_ms": (cpu_seconds(pid) - cpu_before) * 1000 / total,  # the server's CPU per request
        "rps": load.rps,
        "p50_ms": load.p50_ms,
        "p99_ms": load.percentile_ms(0.99),
        "non_200": load.dropped
        + sum(count for (_, status), count in load.statuses.items() if status != 200),
    }


def server_command(
    name: str, python: str, port: int, render_free: bool
) -> tuple[list[str], str, dict]:
    """The command that starts one server, its health URL, and its environment."""
    app, app_dir, health = SERVERS[name]
    cwd = app_dir if name == BEFORE else REPO
    command = [
        python,
        "-m",
        "uvicorn",
        app,
        "--app-dir",
        str(app_dir),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    env = {**os.environ, "D4_MODEL_PATH": str(REPO / "d4_cnn.pt"), "PYTHONPATH": str(cwd)}
    if render_free:
        command, env = [str(RENDER_FREE), *command], {**env, **deploy_env()}
    return command, f"http://127.0.0.1:{port}{health}", env


def cold_start(name: str, python: str, port: int, render_free: bool) -> float:
    """Seconds from starting the server process to its first 200 on its health URL."""
    command, health_url, env = server_command(name, python, port, render_free)
    cwd = env["PYTHONPATH"]
    with running_server(command, health_url, cwd=cwd, env=env, stderr=subprocess.DEVNULL) as (
        _,
        seconds,
    ):
        return seconds


def measure(
    name: str, python: str, port: int, body: bytes, requests_per_block: int, render_free: bool
) -> dict:
    command, health_url, env = server_command(name, python, port, render_free)
    warm_up = min(500, requests_per_block // 8)
    with tempfile.TemporaryFile("w+") as log:
        cwd = env["PYTHONPATH"]
        with running_server(command, health_url, cwd=cwd, env=env, stderr=log) as (
            server,
            cold_start_s,
        ):
            result = {"cold_start_s": [cold_start_s]}
            pid = serving_pid(server)
            drive_predict(port, body, 8, warm_up, pid)
            result["c1"] = drive_predict(port, body, 1, requests_per_block // 5, pid)
            result["c8"] = drive_predict(port, body, 8, requests_per_block, pid)
            sent = warm_up + requests_per_block // 5 + requests_per_block
            result["memory"] = [
                (sent, *memory_mb(pid))
            ]  # (requests so far, resident MB, private MB)
            drive_predict(port, body, 8, requests_per_block, pid)
            result["memory"].append((sent + requests_per_block, *memory_mb(pid)))
        log.seek(0)
        peak = re.search(
            r"render-free: peak memory (\d+) MB", log.read()
        )  # printed by the wrapper as it ends
        result["peak_mb"] = int(peak.group(1)) if peak else None
        return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--requests",
        type=int,
        help="requests per block at concurrency 8 (default: 10,000; 400 with --render-free)",
    )
    parser.add_argument(
        "--render-free", action="store_true", help=f"run each server inside {RENDER_FREE}"
    )
    parser.add_argument(
        "--starts", type=int, default=1, help="cold starts per server (interleaved; median shown)"
    )
    parser.add_argument(
        "--port", type=int, default=8765, help="loopback port for the server under test"
    )
    parser.add_argument(
        "--before", type=Path, help="a checkout of this repository whose API to run too, as (c)"
    )
    parser.add_argument(
        "--server-python",
        default=sys.executable,
        help="Python that runs both servers, e.g. a venv made from requirements-render.txt with CPU-only torch",
    )
    args = parser.parse_args()

    images, _ = load_mnist(REPO / "tests" / "fixtures" / "mnist", train=False)
    body = json.dumps({"pixels": to_model_input(images[:1])[0, 0].tolist()}).encode()
    requests_per_block = args.requests or (400 if args.render_free else 10_000)
    if args.before:
        SERVERS[BEFORE] = ("d4_api_mnist:app", args.before.resolve(), "/healthz")
    results = {}
    for name in SERVERS:
        results[name] = measure(
            name, args.server_python, args.port, body, requests_per_block, args.render_free
        )
        print(f"{name}: {results[name]}", file=sys.stderr)
    for _ in range(args.starts - 1):
        for name in SERVERS:
            results[name]["cold_start_s"].append(
                cold_start(name, args.server_python, args.port, args.render_free)
            )
            print(f"{name}: cold start {results[name]['cold_start_s'][-1]:.2f} s", file=sys.stderr)

    notes, ours, floor = results["(a) notes' API"], results["(b) ours"], results["(f) floor"]
    before = results.get(BEFORE)
    torch_build = subprocess.run(
        [args.server_python, "-c", "import torch; print(torch.__version__)"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    shape = (
        "in render-free's shape of a Render free instance (0.1 CPU, 512 MB)"
        if args.render_free
        else "unlimited"
    )
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores; servers on torch {torch_build}, {shape}; "
          f"one uvicorn worker each, client in the same machine\n")  # fmt: skip
    rows = [
        ("requests/s, concurrency 8", "c8", "rps", ".0f"),
        ("p50 ms, concurrency 8", "c8", "p50_ms", ".2f"),
        ("p99 ms, concurrency 8", "c8", "p99_ms", ".2f"),
        ("server CPU ms a request, concurrency 8", "c8", "cpu_ms", ".3f"),
        ("requests/s, concurrency 1", "c1", "rps", ".0f"),
        ("p50 ms, concurrency 1", "c1", "p50_ms", ".2f"),
        ("p99 ms, concurrency 1", "c1", "p99_ms", ".2f"),
        ("server CPU ms a request, concurrency 1", "c1", "cpu_ms", ".3f"),
    ]
    columns = [notes, ours, floor] + ([before] if before else [])
    header = "| measure | (a) notes' API | (b) ours | (f) floor |" + (
        " (c) ours before |" if before else ""
    )
    print(header + " (b)/(a) | (b)/(f) |" + (" (b)/(c) |" if before else ""))
    print("|---" + "|---:" * (len(columns) + 2 + bool(before)) + "|")

    def row(label: str, values: list[float], fmt: str) -> None:
        ratios = [values[1] / values[0], values[1] / values[2]] + (
            [values[1] / values[3]] if before else []
        )
        cells = [f"{value:{fmt}}" if value is not None else "" for value in values]
        print(f"| {label} | " + " | ".join(cells + [f"{ratio:.2f}" for ratio in ratios]) + " |")

    for label, block, key, fmt in rows:
        row(label, [column[block][key] for column in columns], fmt)
    for index, label in [
        (1, "resident MB after {:,} requests"),
        (2, "of which private MB, after {:,}"),
    ]:
        for taken in range(2):
            sent = notes["memory"][taken][0]
            row(label.format(sent), [column["memory"][taken][index] for column in columns], ".2f")
    medians = [statistics.median(column["cold_start_s"]) for column in columns]
    row(f"cold start to first 200, s, median of {args.starts}", medians, ".2f")
    if args.render_free:
        row(
            "peak memory of the instance, MB (limit 512)",
            [column["peak_mb"] for column in columns],
            ".0f",
        )
    failures = [column["c1"]["non_200"] + column["c8"]["non_200"] for column in columns]
    print("| non-200 answers | " + " | ".join(str(count) for count in failures) + " |")


if __name__ == "__main__":
    main()
