"""Send the pictures that cost the most memory to decode to the API in the shape of a Render free instance.

    python benchmarks/bench_pictures.py --server-python .venv-render/bin/python   # the deploy's packages

For each concurrency (1, then 8) it starts `uvicorn d4_api_mnist:app` afresh inside
../shared/tools/render-free (0.1 CPU, 512 MB) with the environment render.yaml sets, and sends
the worst pictures over keep-alive connections: a 4096x4096 lossless RGBA WebP holding one
stroke (a few KB), a 4096x4096 RGBA PNG, a 4096x4096 palette GIF with a transparent colour and
a 4000x3000 phone JPEG; at concurrency 8, 4.9 MB uploads as well (that photo with padding after
its end, which decoders ignore). Another thread asks GET /healthz every 100 ms throughout. It
prints the answers by picture and status, the instance's peak memory and OOM kills (from
render-free), the /healthz answers, and the server's resident memory at start and once the
pictures are answered.
"""

import argparse
import asyncio
import datetime
import http.client
import io
import math
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from bench_load import multipart
from load_client import (
    Load,
    api_in_render_free,
    drive,
    http_request,
    memory_mb,
    running_server,
    serving_pid,
)
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from d4.limits import MAX_UPLOAD_BYTES  # noqa: E402

BIG_UPLOAD_BYTES = 4_900_000
assert BIG_UPLOAD_BYTES < MAX_UPLOAD_BYTES
HEALTH_EVERY_S = 0.1


def a_seven(image: Image.Image, ink: object) -> Image.Image:
    """The picture with a 7 drawn on it in one thick stroke, across the middle half of it."""
    width, height = image.size
    points = [
        (0.3 * width, 0.25 * height),
        (0.7 * width, 0.25 * height),
        (0.45 * width, 0.75 * height),
    ]
    ImageDraw.Draw(image).line(points, fill=ink, width=max(width, height) // 60, joint="curve")
    return image


def saved(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def phone_photo() -> Image.Image:
    """A 12 MP photo of a 7 on paper: grey-white paper with sensor noise, dark ink."""
    noise = Image.effect_noise((4000, 3000), 12).point(lambda level: level // 4 + 200)
    return a_seven(
        Image.merge("RGB", (noise, noise, noise.point(lambda level: level - 10))), (40, 40, 50)
    )


def worst_pictures() -> dict[str, bytes]:
    palette = a_seven(Image.new("P", (4096, 4096), 0), 1)
    palette.putpalette([255, 255, 255, 0, 0, 0])
    transparent_canvas = a_seven(Image.new("RGBA", (4096, 4096), (0, 0, 0, 0)), (0, 0, 0, 255))
    return {
        "4096x4096 RGBA WebP": saved(transparent_canvas, "WEBP", lossless=True),
        "4096x4096 RGBA PNG": saved(transparent_canvas, "PNG"),
        "4096x4096 palette GIF": saved(palette, "GIF", transparency=0),
        "4000x3000 phone JPEG": saved(phone_photo(), "JPEG", quality=90),
    }


def padded(picture: bytes, size: int) -> bytes:
    """The picture followed by random bytes up to `size`: decoders stop at the picture's end."""
    return picture + random.Random(0).randbytes(size - len(picture))


class HealthWatch(threading.Thread):
    """GET /healthz every HEALTH_EVERY_S on a fresh connection, counting answers by status (or the error)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.answers, self.slowest_s = port, Counter(), 0.0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(HEALTH_EVERY_S):
            start = time.perf_counter()
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                connection.request("GET", "/healthz")
                self.answers[connection.getresponse().status] += 1
            except OSError as error:
                self.answers[type(error).__name__] += 1
            finally:
                connection.close()
            self.slowest_s = max(self.slowest_s, time.perf_counter() - start)

    def stop(self) -> None:
        self.stopping.set()
        self.join()


def resident_mb(pid: int) -> float:
    """The server's resident memory; NaN once it is gone (killed, or a zombie that has no memory left)."""
    try:
        return memory_mb(pid)[0]
    except (FileNotFoundError, KeyError):
        return float("nan")


def run_phase(
    args: argparse.Namespace, work: list[tuple[str, bytes]], concurrency: int, total: int
) -> dict:
    """Start a fresh server in render-free, send `total` requests over `concurrency` connections, and stop it."""
    command, env = api_in_render_free(args.server_python, args.port)
    with tempfile.TemporaryFile("w+") as log:
        health_url = f"http://127.0.0.1:{args.port}/healthz"
        output = {
            "stdout": log,
            "stderr": subprocess.STDOUT,
        }  # the wrapper's report is read from the log
        with running_server(command, health_url, cwd=REPO, env=env, **output) as (server, _):
            pid = serving_pid(server)
            rss_at_start = resident_mb(pid)
            watch = HealthWatch(args.port)
            watch.start()
            try:
                load = asyncio.run(drive(args.port, work, concurrency, total))
            except ConnectionRefusedError:  # the server is gone: the client cannot reconnect
                load = None
            watch.stop()
            rss_after = resident_mb(pid)
            if math.isnan(
                rss_after
            ):  # killed: let render-free report it before running_server stops the wrapper
                server.wait(timeout=30)
        log.seek(0)
        text = log.read()
    peak = re.search(
        r"render-free: peak memory (\d+) MB, OOM kills (\S+)", text
    )  # printed by the wrapper at its end
    if load is None or peak is None:
        print(f"the server's log ends:\n{text[-2000:]}", file=sys.stderr)
    return {
        "load": load,
        "health": watch,
        "peak_mb": peak.group(1) if peak else "?",
        "oom_kills": peak.group(2) if peak else "?",
        "rss": (rss_at_start, rss_after),
        "tracebacks": text.count("Traceback"),
    }


def machine() -> str:
    """The CPU as `lscpu` names it, and the server's torch build."""
    cpu = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    return f"{cpu.group(1) if cpu else platform.machine()}, {os.cpu_count()} cores"


def answers(load: Load | None) -> str:
    if load is None:
        return "the server stopped answering: connection refused"
    return ", ".join(
        f"{kind} {status}: {count}" for (kind, status), count in sorted(load.statuses.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--server-python", default=sys.executable, help="Python that runs the server"
    )
    parser.add_argument("--port", type=int, default=8767, help="loopback port for the server")
    parser.add_argument(
        "--rounds", type=int, default=2, help="times each picture is sent at each concurrency"
    )
    args = parser.parse_args()

    pictures = worst_pictures()
    big = {"4.9 MB upload": padded(pictures["4000x3000 phone JPEG"], BIG_UPLOAD_BYTES)}
    torch_build = subprocess.run(
        [args.server_python, "-c", "import torch; print(torch.__version__)"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(
        f"{datetime.date.today()}, {machine()}; server on torch {torch_build} in render-free (0.1 CPU, 512 MB)"
    )
    print(
        "pictures: "
        + ", ".join(f"{name} ({len(data):,} bytes)" for name, data in pictures.items())
        + "\n"
    )
    print("| concurrency | answers by picture and status | dropped connections | peak memory, MB (limit 512) "
          "| OOM kills | /healthz answers (slowest s) | resident MB at start, after | seconds to answer all "
          "| tracebacks |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---|---|---:|---:|")
    for concurrency, sent in [(1, pictures), (8, pictures | big)]:
        work = [
            (name, http_request("POST", "/predict/image", *multipart(data)))
            for name, data in sent.items()
        ]
        result = run_phase(args, work, concurrency, args.rounds * len(work))
        health = ", ".join(
            f"{status}: {count}"
            for status, count in sorted(result["health"].answers.items(), key=str)
        )
        dropped, seconds = (
            (result["load"].dropped, f"{result['load'].elapsed:.0f}")
            if result["load"]
            else ("-", "-")
        )
        print(f"| {concurrency} | {answers(result['load'])} | {dropped} | {result['peak_mb']} "
              f"| {result['oom_kills']} | {health} ({result['health'].slowest_s:.1f}) "
              f"| {result['rss'][0]:.0f}, {result['rss'][1]:.0f} | {seconds} | {result['tracebacks']} |")  # fmt: skip


if __name__ == "__main__":
    main()
