"""Load the notes' API and ours side by side, each a real uvicorn process on loopback.

    python benchmarks/bench_api.py

For each server in turn (never both at once, so they don't share the 2 cores): start it,
time the first 200 on its health URL, warm up, then send the same real MNIST digit with a
bounded number of keep-alive HTTP/1.1 requests at concurrency 1 and 8 from a small asyncio
client, and read the server's memory after those blocks and again after one more block at
concurrency 8.
"""

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from load_client import drive, http_request, memory_mb, running_server

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from d4.data import load_mnist  # noqa: E402
from d4.model import to_model_input  # noqa: E402

SERVERS = {
    # name: (uvicorn app, folder it is imported from, health path)
    "(a) notes' API": ("notes_api:app", REPO / "benchmarks", "/"),
    "(b) ours": ("d4_api_mnist:app", REPO, "/healthz"),
}


WARM_UP_REQUESTS = 500


def drive_predict(port: int, body: bytes, concurrency: int, total: int) -> dict:
    """Send `total` POST /predict requests over `concurrency` connections; return the figures."""
    load = asyncio.run(drive(port, [("predict", http_request("POST", "/predict", body))], concurrency, total))
    return {
        "rps": load.rps,
        "p50_ms": load.p50_ms,
        "p99_ms": load.percentile_ms(0.99),
        "non_200": load.dropped + sum(count for (_, status), count in load.statuses.items() if status != 200),
    }


def measure(name: str, python: str, port: int, body: bytes, requests_per_block: int) -> dict:
    app, app_dir, health = SERVERS[name]
    command = [python, "-m", "uvicorn", app, "--app-dir", str(app_dir), "--port", str(port)]
    command += ["--log-level", "warning"]
    env = {**os.environ, "D4_MODEL_PATH": str(REPO / "d4_cnn.pt")}
    with running_server(command, f"http://127.0.0.1:{port}{health}", cwd=REPO, env=env) as (server, cold_start_s):
        result = {"cold_start_s": cold_start_s}
        drive_predict(port, body, 8, WARM_UP_REQUESTS)
        result["c1"] = drive_predict(port, body, 1, requests_per_block // 5)
        result["c8"] = drive_predict(port, body, 8, requests_per_block)
        sent = WARM_UP_REQUESTS + requests_per_block // 5 + requests_per_block
        result["memory"] = [(sent, *memory_mb(server.pid))]  # (requests so far, resident MB, private MB)
        drive_predict(port, body, 8, requests_per_block)
        result["memory"].append((sent + requests_per_block, *memory_mb(server.pid)))
        return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=10_000, help="requests per block at concurrency 8")
    parser.add_argument("--port", type=int, default=8765, help="loopback port for the server under test")
    parser.add_argument(
        "--server-python",
        default=sys.executable,
        help="Python that runs both servers, e.g. a venv made from requirements-render.txt with CPU-only torch",
    )
    args = parser.parse_args()

    images, _ = load_mnist(REPO / "tests" / "fixtures" / "mnist", train=False)
    body = json.dumps({"pixels": to_model_input(images[:1])[0, 0].tolist()}).encode()
    results = {}
    for name in SERVERS:
        results[name] = measure(name, args.server_python, args.port, body, args.requests)
        print(f"{name}: {results[name]}", file=sys.stderr)

    notes, ours = results["(a) notes' API"], results["(b) ours"]
    torch_build = subprocess.run(
        [args.server_python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores; servers on torch {torch_build}; "
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
    a, b = notes["cold_start_s"], ours["cold_start_s"]
    print(f"| cold start to first 200, s | {a:.2f} | {b:.2f} | {b / a:.2f} |")
    failures = [r["c1"]["non_200"] + r["c8"]["non_200"] for r in (notes, ours)]
    print(f"| non-200 answers | {failures[0]} | {failures[1]} | |")


if __name__ == "__main__":
    main()
