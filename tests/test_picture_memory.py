"""A picture's memory is bounded: decoding stays within its budget, and what it frees goes back to the system.

Peaks are measured in a fresh Python process per picture (its high-water mark of resident memory,
before and after the picture is prepared), so that nothing else the test process does counts.
"""

from pathlib import Path

import pytest
import requests
from PIL import Image
from test_deploy import web_service

from conftest import drawn, encode, run_script, uvicorn_process
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
    "palette GIF with a transparent colour": (lambda: encode(palette_with_transparency(), "GIF", transparency=0), 16),
    "16-bit grey PNG": (lambda: encode(drawn(7, "I;16", 60000, 5000).resize((4096, 4096)), "PNG"), 32),
    # libjpeg holds every coefficient of a progressive JPEG (2 bytes a sample) whatever scale it decodes at.
    "progressive 4:4:4 JPEG": (
        lambda: encode(drawn(7, "RGB").resize((4096, 4096)), "JPEG", progressive=True, subsampling=0),
        96,
    ),
    # libwebp's canvas and its previous frame, the frame's bytes and the picture: 16 bytes a pixel.
    "RGBA WebP at the budget's limit": (lambda: encode(on_a_transparent_canvas(2896), "WEBP", lossless=True), 128),
}


@pytest.mark.parametrize(("make", "decoded_mib"), WORST_PICTURES.values(), ids=WORST_PICTURES.keys())
def test_preparing_a_picture_takes_little_beyond_decoding_it_and_stays_in_the_budget(tmp_path, make, decoded_mib):
    picture = tmp_path / "picture"
    picture.write_bytes(make())
    result = run_script("-c", PEAK_WHILE_PREPARING, str(picture))
    assert result.returncode == 0, result.stderr
    peak = int(result.stdout)
    # No full-size copy beside the decoded picture: no conversion, premultiplied reduction or float array of it.
    assert peak <= (decoded_mib + PREPARING_MIB) * MiB, f"{peak / MiB:.0f} MiB"
    assert peak <= MAX_DECODE_BYTES + PREPARING_MIB * MiB


def test_a_picture_over_the_memory_budget_is_refused_from_its_header_naming_the_limit(client, tmp_path):
    webp = encode(on_a_transparent_canvas(4096), "WEBP", lossless=True)  # a few KB that decode to 256 MiB
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
    return {item["key"]: item["value"] for item in web_service()["envVars"] if item["key"] != "PYTHON_VERSION"}


def resident_mib(pid: int) -> float:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024


def test_the_deploy_gives_back_what_decoding_a_large_picture_took():
    large = [
        encode(on_a_transparent_canvas(4096), "PNG"),
        encode(palette_with_transparency(), "GIF", transparency=0),
    ]
    with uvicorn_process(**deploy_env()) as (url, server):
        before = resident_mib(server.pid)
        for data in large * 2:
            answer = requests.post(f"{url}/predict/image", files={"file": ("seven", data)}, timeout=60)
            assert answer.status_code == 200
        grown = resident_mib(server.pid) - before
    # Each decode touches 64 MiB or more; glibc's default thresholds kept ~60 MiB of it resident.
    assert grown < 32, f"{grown:.0f} MiB still resident"
