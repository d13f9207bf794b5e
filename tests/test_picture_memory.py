"""A picture's memory is bounded: decoding stays within its budget, uploads waiting for the decoder
hold no memory and their queue is bounded, and what decoding frees goes back to the system.

Peaks are measured in a fresh Python process per picture (its high-water mark of resident memory,
before and after the picture is prepared), so that nothing else the test process does counts.
The queue is tested on a real server whose decoder a test can hold (tests/held_decoder_app.py).
"""

import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from PIL import Image
from test_deploy import web_service

from conftest import REPO, drawn, encode, run_script, uvicorn_process
from d4.image_endpoint import MAX_WAITING_PICTURES
from d4.preprocess import MAX_DECODE_BYTES

MiB = 2**20
# Beyond the decoded picture itself, preparing it may take this much: bands of rows being shrunk, the decoder's buffers.
PREPARING_MIB = 24

PEAK_WHILE_PREPARING = """
import sys
from pathlib import Path

from d4.preprocess import ImageRejected, image_to_pixels


def high_water_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) * 1024


data = Path(sys.argv[1]).read_bytes()
before = high_water_bytes()
try:
    image_to_pixels(data)
except ImageRejected:
    pass
print(high_water_bytes() - before)
"""


def on_a_transparent_canvas(side: int) -> Image.Image:
    return drawn(7, "RGBA", (0, 0, 0, 0), (0, 0, 0, 255)).resize((side, side))


def palette_with_transparency() -> Image.Image:
    picture = drawn(7, "P", 0, 1).resize((4096, 4096))
    picture.putpalette([255, 255, 255, 0, 0, 0])
    return picture


# name: (the file, what its decoded picture takes in MiB). Each is the largest of its kind the limits let in.
WORST_PICTURES = {
    "RGBA PNG, 4 bytes a pixel": (lambda: encode(on_a_transparent_canvas(4096), "PNG"), 64),
    "palette GIF with a transparent colour": (
        lambda: encode(palette_with_transparency(), "GIF", transparency=0),
        16,
    ),
    "16-bit grey PNG": (
        lambda: encode(drawn(7, "I;16", 60000, 5000).resize((4096, 4096)), "PNG"),
        32,
    ),
    # libjpeg holds every coefficient of a progressive JPEG (2 bytes a sample) whatever scale it decodes at.
    "progressive 4:4:4 JPEG": (
        lambda: encode(
            drawn(7, "RGB").resize((4096, 4096)), "JPEG", progressive=True, subsampling=0
        ),
        96,
    ),
    # libwebp's canvas and its previous frame, the frame's bytes and the picture: 16 bytes a pixel.
    "RGBA WebP at the budget's limit": (
        lambda: encode(on_a_transparent_canvas(2896), "WEBP", lossless=True),
        128,
    ),
}


@pytest.mark.parametrize(
    ("make", "decoded_mib"), WORST_PICTURES.values(), ids=WORST_PICTURES.keys()
)
def test_preparing_a_picture_takes_little_beyond_decoding_it_and_stays_in_the_budget(
    tmp_path, make, decoded_mib
):
    picture = tmp_path / "picture"
    picture.write_bytes(make())
    result = run_script("-c", PEAK_WHILE_PREPARING, str(picture))
    assert result.returncode == 0, result.stderr
    peak = int(result.stdout)
    # No full-size copy beside the decoded picture: no conversion, premultiplied reduction or float array of it.
    assert peak <= (decoded_mib + PREPARING_MIB) * MiB, f"{peak / MiB:.0f} MiB"
    assert peak <= MAX_DECODE_BYTES + PREPARING_MIB * MiB


def test_a_picture_over_the_memory_budget_is_refused_from_its_header_naming_the_limit(
    client, tmp_path
):
    webp = encode(
        on_a_transparent_canvas(4096), "WEBP", lossless=True
    )  # a few KB that decode to 256 MiB
    answer = client.post("/predict/image", files={"file": ("canvas.webp", webp)})
    assert answer.status_code == 413
    assert answer.json()["message"] == (
        "the image is a 4096x4096 WEBP, which takes 256 MiB to decode; the limit is 128 MiB: "
        "send a smaller picture (a digit needs no more than 1024 px on its long side)"
    )
    picture = tmp_path / "canvas.webp"
    picture.write_bytes(webp)
    refused = run_script("-c", PEAK_WHILE_PREPARING, str(picture))
    assert int(refused.stdout) < 16 * MiB  # never decoded


def deploy_env() -> dict[str, str]:
    """The environment render.yaml gives the API."""
    return {
        item["key"]: item["value"]
        for item in web_service()["envVars"]
        if item["key"] != "PYTHON_VERSION"
    }


def resident_mib(pid: int) -> float:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024


def test_the_deploy_gives_back_what_decoding_a_large_picture_took():
    large = [
        encode(on_a_transparent_canvas(4096), "PNG"),
        encode(palette_with_transparency(), "GIF", transparency=0),
    ]
    with uvicorn_process(**deploy_env()) as (url, server):
        # One small picture first: the first request's one-time costs (each thread's first torch
        # call, ~2 MiB) are not what a large picture leaves behind.
        small = requests.post(
            f"{url}/predict/image", files={"file": ("seven", encode(drawn(7), "PNG"))}
        )
        assert small.status_code == 200
        before = resident_mib(server.pid)
        for data in large * 2:
            answer = requests.post(
                f"{url}/predict/image", files={"file": ("seven", data)}, timeout=60
            )
            assert answer.status_code == 200
        grown = resident_mib(server.pid) - before
    # Each decode touches 64 MiB or more; glibc's default thresholds kept ~60 MiB of it resident (2026-12-02).
    assert grown < 32, f"{grown:.0f} MiB still resident"


@pytest.fixture(scope="module")
def held_server() -> Iterator[tuple[str, int]]:
    """A real uvicorn serving our API plus routes to hold its picture decoder: its URL and its pid."""
    with uvicorn_process(app="held_decoder_app:app", app_dir=REPO / "tests") as (url, process):
        yield url, process.pid


def post_picture(url: str, data: bytes, timeout: float = 60) -> requests.Response:
    return requests.post(
        f"{url}/predict/image", files={"file": ("seven.jpg", data)}, timeout=timeout
    )


def queue_behind_held_decoder(url: str, pool: ThreadPoolExecutor, uploads: list[bytes]) -> list:
    """Hold the decoder and send the uploads; return their futures once all of them wait for it."""
    requests.post(f"{url}/test/decoder/hold", timeout=10).raise_for_status()
    queued = [pool.submit(post_picture, url, data) for data in uploads]
    for _ in range(600):
        if requests.get(f"{url}/test/decoder/waiting", timeout=10).json() == len(uploads):
            return queued
        threading.Event().wait(0.05)
    raise AssertionError("the uploads never all waited for the decoder")


def release_decoder(url: str) -> None:
    requests.post(f"{url}/test/decoder/release", timeout=10).raise_for_status()


def test_a_full_queue_for_the_decoder_gets_503_with_retry_after(held_server):
    url, _ = held_server
    seven = encode(drawn(7), "PNG")
    with ThreadPoolExecutor(MAX_WAITING_PICTURES) as pool:
        try:
            queued = queue_behind_held_decoder(url, pool, [seven] * MAX_WAITING_PICTURES)
            refused = post_picture(url, seven, timeout=10)  # at once, not after the queue
        finally:
            release_decoder(url)
        answers = [future.result() for future in queued]
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    assert (
        refused.json()["message"]
        == "8 pictures are already waiting to be decoded; try again in a few seconds"
    )
    assert [answer.json()["predicted_digit"] for answer in answers] == [7] * MAX_WAITING_PICTURES
    assert post_picture(url, seven).status_code == 200


def test_uploads_waiting_for_the_decoder_hold_no_memory(held_server):
    url, pid = held_server
    photo = encode(drawn(7, "RGB").resize((2000, 2000)), "JPEG")
    near_the_limit = photo + random.Random(0).randbytes(
        4_900_000 - len(photo)
    )  # decoders stop at the JPEG's end
    with ThreadPoolExecutor(MAX_WAITING_PICTURES) as pool:
        before = resident_mib(pid)
        try:
            queued = queue_behind_held_decoder(url, pool, [near_the_limit] * MAX_WAITING_PICTURES)
            waiting = resident_mib(pid) - before
        finally:
            release_decoder(url)
        assert all(future.result().status_code == 200 for future in queued)
    # Read before its turn, each body would hold 4.7 MiB: 37 MiB for the 8.
    assert waiting < 12, f"{waiting:.0f} MiB more while 8 uploads wait"
