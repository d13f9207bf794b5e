"""Send the slow-body and crafted-picture attacks of issue #28 to the API in the shape of a Render free instance.

    python benchmarks/bench_hostile.py --server-python .venv-render/bin/python   # the deploy's packages

It starts `uvicorn d4_api_mnist:app` inside ../shared/tools/render-free (0.1 CPU, 512 MB) with the
environment render.yaml sets (bench_pictures.py does the same), asks GET /healthz every 100 ms
throughout, and runs each attack in turn:

- 300 uploads of ~1 MiB, never finished; 50 /predict/batch bodies of 8 MiB, stopped 1 KiB short;
  200 stalled uploads with a 4096x4096 RGBA PNG sent beside them;
- 8 /predict/batch bodies of 2.8 million empty lists and 8 of 257 images, at once;
- 3 requests with a 64 MiB header, and 20 connections that never finish their headers;
- crafted pictures: a progressive JPEG with 1,000 scans, a 4096x4096 CMYK progressive JPEG, a PNG
  with 100 MiB of compressed text, a 4096x4096 RGBA PNG with 60 x 1 MiB zTXt chunks, and pictures
  with fuzzed EXIF in JPEG, PNG and WebP.

It prints, for each attack, the answers by status (or how the connection ended), the answers that
were not JSON, the 5xx other than 503 with Retry-After, and /healthz's slowest answer while it ran;
then the instance's peak memory and OOM kills (from render-free).
"""

import argparse
import datetime
import json
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_pictures import HealthWatch, a_seven, machine, saved
from load_client import api_in_render_free, running_server
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
from test_hostile_requests import empty_lists, fuzzed_exif_blobs, many_scans, png_with_text  # noqa: E402

from d4.limits import BODY_IDLE_S, MAX_BATCH_BODY_BYTES  # noqa: E402

MiB = 2**20
UPLOAD_HEAD = b'--b\r\nContent-Disposition: form-data; name="file"; filename="7.png"\r\n\r\n'


class Tally:
    """What one attack got back: statuses (or how connections ended), non-JSON answers, bad 5xx."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.not_json = self.bad_5xx = 0
        self.lock = threading.Lock()

    def answer(self, data: bytes, ended: str) -> None:
        head, _, body = data.partition(b"\r\n\r\n")
        with self.lock:
            if not head.startswith(b"HTTP/1.1 "):
                self.outcomes[ended] += 1
                return
            status = int(head.split()[1])
            self.outcomes[str(status)] += 1
            headers = head.lower()
            if b"application/json" not in headers:
                self.not_json += 1
            if status >= 500 and not (status == 503 and b"retry-after:" in headers):
                self.bad_5xx += 1


def exchange(port: int, request: bytes, tally: Tally, hold_s: float = 0) -> None:
    """Send `request` (stopping where it stops), wait up to `hold_s` + 30 s for an answer, and tally it."""
    data, ended = b"", "closed without an answer"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30 + hold_s) as connection:
            connection.sendall(request)
            while chunk := connection.recv(65536):
                data += chunk
                if b"\r\n\r\n" in data and _whole(data):
                    break
    except TimeoutError:
        ended = "no answer in time"
    except OSError:
        ended = "connection reset"
    tally.answer(data, ended)


def _whole(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"content-length: *(\d+)", head.lower())
    return length is not None and len(body) >= int(length.group(1))


def post(path: str, content_type: str, body: bytes, declared: int | None = None) -> bytes:
    size = len(body) if declared is None else declared
    head = f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: {content_type}\r\nContent-Length: {size}\r\n\r\n"
    return head.encode() + body


def upload(picture: bytes) -> bytes:
    return post(
        "/predict/image",
        "multipart/form-data; boundary=b",
        UPLOAD_HEAD + picture + b"\r\n--b--\r\n",
    )


def attack(port: int, requests: list[bytes]) -> Tally:
    tally = Tally()
    with ThreadPoolExecutor(min(len(requests), 400)) as pool:
        for request in requests:
            pool.submit(exchange, port, request, tally, BODY_IDLE_S)
    return tally


def attacks() -> dict[str, Callable[[], list[bytes]]]:
    unfinished_upload = post("/predict/image", "multipart/form-data; boundary=b",
                             UPLOAD_HEAD + b"x" * (MiB - 1024), declared=MiB + 1024)  # fmt: skip
    short_batch = post("/predict/batch", "application/json", b'{"images": [' + b"0," * (4 * MiB - 1024),
                       declared=MAX_BATCH_BODY_BYTES)  # fmt: skip
    transparent = a_seven(Image.new("RGBA", (4096, 4096), (0, 0, 0, 0)), (0, 0, 0, 255))
    large_png = saved(transparent, "PNG")
    image = [[0.5] * 28] * 28
    seven = a_seven(Image.new("RGB", (600, 600), "white"), (0, 0, 0))
    return {
        "300 unfinished 1 MiB uploads": lambda: [unfinished_upload] * 300,
        "50 /predict/batch 8 MiB bodies, 1 KiB short": lambda: [short_batch] * 50,
        "200 stalled uploads + a 4096x4096 RGBA PNG": lambda: (
            [unfinished_upload] * 200 + [upload(large_png)]
        ),
        "8 x 2.8 million empty lists + 8 x 257 images": lambda: (
            [
                post(
                    "/predict/batch",
                    "application/json",
                    empty_lists("images", MAX_BATCH_BODY_BYTES - 64),
                )
            ]
            * 8
            + [
                post(
                    "/predict/batch",
                    "application/json",
                    json.dumps({"images": [image] * 257}).encode(),
                )
            ]
            * 8
        ),
        "3 x 64 MiB header": lambda: (
            [b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 64 * MiB + b"\r\n\r\n"] * 3
        ),
        "20 headers never finished": lambda: [b"GET /healthz HTTP/1.1\r\nX-Slow: a"] * 20,
        "progressive JPEG, 1,000 scans": lambda: [upload(many_scans(4096, 1000))],
        "4096x4096 CMYK progressive JPEG": lambda: [
            upload(saved(transparent.convert("CMYK"), "JPEG", progressive=True))
        ],  # fmt: skip
        "PNG with 100 MiB of text": lambda: [upload(png_with_text(saved(seven, "PNG"), 100))],
        "4096x4096 RGBA PNG + 60 x 1 MiB zTXt": lambda: [upload(png_with_text(large_png, 60))],
        "fuzzed EXIF, 30 each in JPEG, PNG, WebP": lambda: [
            upload(saved(seven, image_format, exif=blob))
            for image_format in ("JPEG", "PNG", "WEBP")
            for blob in fuzzed_exif_blobs(30)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--server-python", default=sys.executable, help="Python that runs the server"
    )
    parser.add_argument("--port", type=int, default=8768, help="loopback port for the server")
    args = parser.parse_args()
    torch_build = subprocess.run([args.server_python, "-c", "import torch; print(torch.__version__)"],
                                 capture_output=True, text=True).stdout.strip()  # fmt: skip
    print(
        f"{datetime.date.today()}, {machine()}; server on torch {torch_build} in render-free (0.1 CPU, 512 MB)\n"
    )
    print(
        "| attack | answers (or how connections ended) | not JSON | bad 5xx | /healthz slowest s, answers |"
    )
    print("|---|---|---:|---:|---|")
    command, env = api_in_render_free(args.server_python, args.port)
    with tempfile.TemporaryFile("w+") as log:
        health_url = f"http://127.0.0.1:{args.port}/healthz"
        with running_server(
            command, health_url, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        ):
            for name, make in attacks().items():
                requests = make()
                watch = HealthWatch(args.port)
                watch.start()
                tally = attack(args.port, requests)
                time.sleep(1)
                watch.stop()
                health = ", ".join(
                    f"{status}: {count}" for status, count in sorted(watch.answers.items(), key=str)
                )
                outcomes = ", ".join(
                    f"{outcome}: {count}" for outcome, count in sorted(tally.outcomes.items())
                )
                row = f"| {name} | {outcomes} | {tally.not_json} | {tally.bad_5xx} | {watch.slowest_s:.2f} ({health}) |"
                print(row, flush=True)
        log.seek(0)
        text = log.read()
    peak = re.search(r"render-free: peak memory (\d+) MB, OOM kills (\S+)", text)
    print(f"\npeak memory {peak.group(1) if peak else '?'} MB, OOM kills {peak.group(2) if peak else '?'}, "
          f"tracebacks in the log: {text.count('Traceback')}")  # fmt: skip


if __name__ == "__main__":
    main()
