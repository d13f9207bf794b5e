"""Load our API with a mix of good and bad requests, as a public URL gets them.

    python benchmarks/bench_load.py

Starts `uvicorn d4_api_mnist:app` on a loopback port (as Render runs it: one worker, one torch
thread), then sends a bounded number of requests at concurrency 1, 8 and 32, cycling through
valid and invalid bodies on every endpoint: real MNIST digits, broken JSON, wrong shapes,
NaN, huge numbers, a body declared too large, pictures good and corrupt, unknown paths. It
prints, per concurrency: requests, answers by status, connections dropped, p50/p99 latency and
throughput; then the server's resident memory before and after, and how fast GET /healthz
answers (from another process) while /predict is saturated at concurrency 32.
"""

import argparse
import asyncio
import http.client
import io
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import requests
from load_client import Load, drive, http_request, memory_mb, running_server, serving_pid
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from d4.data import load_mnist  # noqa: E402
from d4.model import to_model_input  # noqa: E402


def multipart(data: bytes) -> tuple[bytes, str]:
    prepared = requests.Request("POST", "http://x/", files={"file": ("digit.png", data)}).prepare()
    return prepared.body, prepared.headers["Content-Type"]


def as_a_picture(digit: list[list[float]]) -> bytes:
    """An MNIST digit as a user would upload it: 280x280, black ink on white, PNG."""
    levels = bytes(255 - round(255 * level) for row in digit for level in row)
    buffer = io.BytesIO()
    Image.frombytes("L", (28, 28), levels).resize((280, 280)).save(buffer, "PNG")
    return buffer.getvalue()


def request_mix() -> list[tuple[str, bytes, int]]:
    """(kind, raw request, the status it must get), in the order the clients cycle through them."""
    images, _ = load_mnist(REPO / "tests" / "fixtures" / "mnist", train=False)
    digits = to_model_input(images[:16])[:, 0].tolist()
    valid = json.dumps({"pixels": digits[0]}).encode()
    png = as_a_picture(digits[0])
    bad_shape = json.dumps({"pixels": digits[0][:27]}).encode()
    mix = [
        ("predict", http_request("POST", "/predict", valid), 200),
        (
            "predict",
            http_request("POST", "/predict", json.dumps({"pixels": digits[1]}).encode()),
            200,
        ),
        ("not JSON", http_request("POST", "/predict", valid[:-40]), 422),
        ("27x28", http_request("POST", "/predict", bad_shape), 422),
        (
            "predict",
            http_request("POST", "/predict", json.dumps({"pixels": digits[2]}).encode()),
            200,
        ),
        ("NaN", http_request("POST", "/predict", valid.replace(b"0.0", b"NaN", 1)), 422),
        ("1e308", http_request("POST", "/predict", valid.replace(b"0.0", b"1e308", 1)), 422),
        ("strings", http_request("POST", "/predict", b'{"pixels": "' + b"x" * 500 + b'"}'), 422),
        (
            "predict",
            http_request("POST", "/predict", json.dumps({"pixels": digits[3]}).encode()),
            200,
        ),
        (
            "batch of 16",
            http_request("POST", "/predict/batch", json.dumps({"images": digits}).encode()),
            200,
        ),
        ("empty batch", http_request("POST", "/predict/batch", b'{"images": []}'), 422),
        ("picture", http_request("POST", "/predict/image", *multipart(png)), 200),
        ("truncated PNG", http_request("POST", "/predict/image", *multipart(png[:400])), 422),
        (
            "not a picture",
            http_request("POST", "/predict/image", *multipart(b"GIF89a" + bytes(300))),
            422,
        ),
        # Declares 2 MB and sends none of it: the 413 comes at once, then the connection closes.
        (
            "2 MB declared",
            http_request("POST", "/predict", b"", content_length=2_000_000, Connection="close"),
            413,
        ),
        ("text/plain", http_request("POST", "/predict", valid, content_type="text/plain"), 422),
        ("unknown path", http_request("GET", "/admin"), 404),
        (
            "predict",
            http_request("POST", "/predict", json.dumps({"pixels": digits[4]}).encode()),
            200,
        ),
    ]
    return mix


def probe_health(port: int, stop: multiprocessing.Event, results: multiprocessing.Queue) -> None:
    """In its own process: GET /healthz every 20 ms on a keep-alive connection, timing each answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies = []
    while not stop.is_set():
        start = time.perf_counter()
        connection.request("GET", "/healthz")
        connection.getresponse().read()
        latencies.append(time.perf_counter() - start)
        time.sleep(0.02)
    results.put(latencies)


def print_block(concurrency: int, load: Load, expected: dict[str, int]) -> None:
    by_status = Counter()
    for (_, status), count in load.statuses.items():
        by_status[status] += count
    unexpected = sum(
        count for (kind, status), count in load.statuses.items() if status != expected[kind]
    )
    statuses = " ".join(f"{status}:{count}" for status, count in sorted(by_status.items()))
    print(f"| {concurrency} | {len(load.latencies) + load.dropped} | {statuses} | {unexpected} | {load.dropped} | "
          f"{load.p50_ms:.2f} | {load.percentile_ms(0.99):.2f} | {load.rps:.0f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=20_000,
        help="requests at concurrency 32 (1: a tenth, 8: half)",
    )
    parser.add_argument("--port", type=int, default=8766, help="loopback port for the server")
    parser.add_argument(
        "--server-python", default=sys.executable, help="Python that runs the server"
    )
    args = parser.parse_args()

    mix = request_mix()
    work = [(kind, request) for kind, request, _ in mix]
    expected = {kind: status for kind, _, status in mix}
    valid = [(kind, request) for kind, request, status in mix if kind == "predict"]
    command = [
        args.server_python,
        "-m",
        "uvicorn",
        "d4_api_mnist:app",
        "--port",
        str(args.port),
        "--log-level=warning",
    ]
    env = {**os.environ, "D4_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1"}
    health_url = f"http://127.0.0.1:{args.port}/healthz"
    with tempfile.TemporaryFile("w+") as log:
        output = {"stdout": log, "stderr": subprocess.STDOUT}  # the log is searched for tracebacks
        with running_server(command, health_url, cwd=REPO, env=env, **output) as (server, _):
            asyncio.run(
                drive(args.port, work, 8, 2 * len(work) * 10)
            )  # warm-up: every kind, twice over
            rss_before, _ = memory_mb(serving_pid(server))

            print(f"machine: {platform.machine()}, {os.cpu_count()} cores; one uvicorn worker; "
                  f"{len(mix)} kinds of request, {len(valid)} of them valid /predict\n")  # fmt: skip
            print("| concurrency | requests | answers by status | not the expected status | dropped connections"
                  " | p50 ms | p99 ms | requests/s |")  # fmt: skip
            print("|---:|---:|---|---:|---:|---:|---:|---:|")
            for concurrency, total in [
                (1, args.requests // 10),
                (8, args.requests // 2),
                (32, args.requests),
            ]:
                print_block(
                    concurrency, asyncio.run(drive(args.port, work, concurrency, total)), expected
                )
            rss_after, _ = memory_mb(serving_pid(server))

            stop, results = multiprocessing.Event(), multiprocessing.Queue()
            prober = multiprocessing.Process(target=probe_health, args=(args.port, stop, results))
            prober.start()
            saturated = asyncio.run(drive(args.port, valid, 32, args.requests // 2))
            stop.set()
            health = Load(latencies=results.get(timeout=30))
            prober.join()

        log.seek(0)
        tracebacks = log.read().count("Traceback")

    print(f"\nresident memory: {rss_before:.1f} MB after warm-up, {rss_after:.1f} MB after the three blocks "
          f"(growth {rss_after - rss_before:+.1f} MB)")  # fmt: skip
    print(f"GET /healthz while /predict is saturated ({saturated.rps:.0f} requests/s at concurrency 32): "
          f"{len(health.latencies)} probes, p50 {health.p50_ms:.1f} ms, "
          f"p99 {health.percentile_ms(0.99):.1f} ms, max {health.percentile_ms(1.0):.1f} ms")  # fmt: skip
    print(f"tracebacks in the server's log: {tracebacks}")


if __name__ == "__main__":
    main()
