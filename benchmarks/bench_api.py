"""Load the notes' API and ours side by side, each a real uvicorn process on loopback.

    python benchmarks/bench_api.py
    python benchmarks/bench_api.py --server-python .venv-render/bin/python --render-free   # as Render runs it

For each server in turn (never both at once, so they don't share the 2 cores): start it,
time the first 200 on its health URL, warm up, then send the same real MNIST digit with a
bounded number of keep-alive HTTP/1.1 requests at concurrency 1 and 8 from a small asyncio
client, and read the server's memory after those blocks and again after one more block at
concurrency 8.

--render-free runs each server inside ../shared/tools/render-free, the shape of a Render free
instance (0.1 CPU, 512 MB), with one thread for PyTorch and OpenMP as render.yaml sets; it
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

from load_client import drive, http_request, memory_mb, running_server, serving_pid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from d4.data import load_mnist  # noqa: E402
from d4.model import to_model_input  # noqa: E402

SERVERS = {
    # name: (uvicorn app, folder it is imported from, health path)
    "(a) notes' API": ("notes_api:app", REPO / "benchmarks", "/"),
    "(b) ours": ("d4_api_mnist:app", REPO, "/healthz"),
}


RENDER_FREE = REPO.parent / "shared" / "tools" / "render-free"
RENDER_ENV = {"D4_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1"}  # as render.yaml sets them


def drive_predict(port: int, body: bytes, concurrency: int, total: int) -> dict:
    """Send `total` POST /predict requests over `concurrency` connections; return the figures."""
    load = asyncio.run(drive(port, [("predict", http_request("POST", "/predict", body))], concurrency, total))
    return {
        "rps": load.rps,
        "p50_ms": load.p50_ms,
        "p99_ms": load.percentile_ms(0.99),
        "non_200": load.dropped + sum(count for (_, status), count in load.statuses.items() if status != 200),
    }


def server_command(name: str, python: str, port: int, render_free: bool) -> tuple[list[str], str, dict]:
    """The command that starts one server, its health URL, and its environment."""
    app, app_dir, health = SERVERS[name]
    command = [python, "-m", "uvicorn", app, "--app-dir", str(app_dir), "--port", str(port), "--log-level", "warning"]
    env = {**os.environ, "D4_MODEL_PATH": str(REPO / "d4_cnn.pt")}
    if render_free:
        command, env = [str(RENDER_FREE), *command], {**env, **RENDER_ENV}
    return command, f"http://127.0.0.1:{port}{health}", env


def cold_start(name: str, python: str, port: int, render_free: bool) -> float:
    """Seconds from starting the server process to its first 200 on its health URL."""
    command, health_url, env = server_command(name, python, port, render_free)
    with running_server(command, health_url, cwd=REPO, env=env, stderr=subprocess.DEVNULL) as (_, seconds):
        return seconds


def measure(name: str, python: str, port: int, body: bytes, requests_per_block: int, render_free: bool) -> dict:
    command, health_url, env = server_command(name, python, port, render_free)
    warm_up = min(500, requests_per_block // 8)
    with tempfile.TemporaryFile("w+") as log:
        with running_server(command, health_url, cwd=REPO, env=env, stderr=log) as (server, cold_start_s):
            result = {"cold_start_s": [cold_start_s]}
            drive_predict(port, body, 8, warm_up)
            result["c1"] = drive_predict(port, body, 1, requests_per_block // 5)
            result["c8"] = drive_predict(port, body, 8, requests_per_block)
            sent = warm_up + requests_per_block // 5 + requests_per_block
            result["memory"] = [(sent, *memory_mb(serving_pid(server)))]  # (requests so far, resident MB, private MB)
            drive_predict(port, body, 8, requests_per_block)
            result["memory"].append((sent + requests_per_block, *memory_mb(serving_pid(server))))
        log.seek(0)
        peak = re.search(r"render-free: peak memory (\d+) MB", log.read())  # printed by the wrapper as it ends
        result["peak_mb"] = int(peak.group(1)) if peak else None
        return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--requests", type=int, help="requests per block at concurrency 8 (default: 10,000; 400 with --render-free)"
    )
    parser.add_argument("--render-free", action="store_true", help=f"run each server inside {RENDER_FREE}")
    parser.add_argument("--starts", type=int, default=1, help="cold starts per server (interleaved; median shown)")
    parser.add_argument("--port", type=int, default=8765, help="loopback port for the server under test")
    parser.add_argument(
        "--server-python",
        default=sys.executable,
        help="Python that runs both servers, e.g. a venv made from requirements-render.txt with CPU-only torch",
    )
    args = parser.parse_args()

    images, _ = load_mnist(REPO / "tests" / "fixtures" / "mnist", train=False)
    body = json.dumps({"pixels": to_model_input(images[:1])[0, 0].tolist()}).encode()
    requests_per_block = args.requests or (400 if args.render_free else 10_000)
    results = {}
    for name in SERVERS:
        results[name] = measure(name, args.server_python, args.port, body, requests_per_block, args.render_free)
        print(f"{name}: {results[name]}", file=sys.stderr)
    for _ in range(args.starts - 1):
        for name in SERVERS:
            results[name]["cold_start_s"].append(cold_start(name, args.server_python, args.port, args.render_free))
            print(f"{name}: cold start {results[name]['cold_start_s'][-1]:.2f} s", file=sys.stderr)

    notes, ours = results["(a) notes' API"], results["(b) ours"]
    torch_build = subprocess.run(
        [args.server_python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    shape = "in render-free's shape of a Render free instance (0.1 CPU, 512 MB)" if args.render_free else "unlimited"
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores; servers on torch {torch_build}, {shape}; "
          f"one uvicorn worker each, client in the same machine\n")  # fmt: skip
    rows = [
        ("requests/s, concurrency 8", "c8", "rps", ".0f"),
        ("p50 ms, concurrency 8", "c8", "p50_ms", ".2f"),
        ("p99 ms, concurrency 8", "c8", "p99_ms", ".2f"),
        ("requests/s, concurrency 1", "c1", "rps", ".0f"),
        ("p50 ms, concurrency 1", "c1", "p50_ms", ".2f"),
        ("p99 ms, concurrency 1", "c1", "p99_ms", ".2f"),
    ]
    print("| measure | (a) notes' API | (b) ours | (b)/(a) |")
    print("|---|---:|---:|---:|")
    for label, block, key, fmt in rows:
        a, b = notes[block][key], ours[block][key]
        print(f"| {label} | {a:{fmt}} | {b:{fmt}} | {b / a:.2f} |")
    for column, label in [(1, "resident MB after {:,} requests"), (2, "of which private MB, after {:,}")]:
        for a, b in zip(notes["memory"], ours["memory"], strict=True):
            print(f"| {label.format(a[0])} | {a[column]:.2f} | {b[column]:.2f} | {b[column] / a[column]:.2f} |")
    a, b = (statistics.median(r["cold_start_s"]) for r in (notes, ours))
    spread = " / ".join(f"{min(r['cold_start_s']):.1f}-{max(r['cold_start_s']):.1f}" for r in (notes, ours))
    print(f"| cold start to first 200, s, median of {args.starts} ({spread}) | {a:.2f} | {b:.2f} | {b / a:.2f} |")
    if args.render_free:
        a, b = notes["peak_mb"], ours["peak_mb"]
        print(f"| peak memory of the instance, MB (limit 512) | {a} | {b} | {b / a:.2f} |")
    failures = [r["c1"]["non_200"] + r["c8"]["non_200"] for r in (notes, ours)]
    print(f"| non-200 answers | {failures[0]} | {failures[1]} | |")


if __name__ == "__main__":
    main()
