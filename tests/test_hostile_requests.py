"""Slow and crafted requests on a real uvicorn (issue #28): bodies past the budget of all bodies in
flight or stalled, oversized headers, JSON built to make millions of objects, pictures built to hold
the decoder or its memory, corrupt EXIF, a stuck decoder; and, in a Render free instance's shape,
unfinished uploads that once took the instance down.
"""

import json
import os
import random
import re
import signal
import socket
import subprocess
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from PIL import Image, ImageDraw
from test_picture_memory import deploy_env

from conftest import REPO, drawn, encode, uvicorn_process
from d4.api_errors import RETRY_AFTER_S
from d4.limits import BODY_BUDGET_BYTES, BODY_IDLE_S, MAX_BATCH_BODY_BYTES
from d4.preprocess import (
    JPEG_MARKER,
    MAX_JPEG_SCANS,
    MAX_PNG_TEXT_BYTES,
    ImageRejected,
    image_to_views,
)

MiB = 2**20
RENDER_FREE = REPO.parent / "shared" / "tools" / "render-free"
DEPLOY_PYTHON = REPO / ".venv-render" / "bin" / "python"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The API as render.yaml runs it (h11, its header limit), with the routes that hold or slow its decoder."""
    with uvicorn_process(app="held_decoder_app:app", app_dir=REPO / "tests", **deploy_env()) as (
        url,
        _,
    ):
        yield url


def port(url: str) -> int:
    return urlsplit(url).port


def read_answer(
    connection: socket.socket, timeout: float = 30
) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body of one answer; the body is what came before the connection closed or
    Content-Length was reached."""
    connection.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data and (chunk := connection.recv(65536)):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:])
    }
    while len(body) < int(headers.get("content-length", 0)) and (chunk := connection.recv(65536)):
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed_by_server(connection: socket.socket, timeout: float = 5) -> bool:
    """Whether the server closes the connection within `timeout`, once what it sent before is read."""
    connection.settimeout(timeout)
    try:
        while connection.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


def start_body(
    url: str, path: str, content_type: str, declared: int | None, first: bytes
) -> socket.socket:
    """A connection that sent a request's headers and the start of its body, and then nothing more."""
    connection = socket.create_connection(("127.0.0.1", port(url)), timeout=30)
    size = f"Content-Length: {declared}" if declared is not None else "Transfer-Encoding: chunked"
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n{size}\r\n\r\n"
    body = first if declared is not None else b"%x\r\n%s\r\n" % (len(first), first)
    with suppress(BrokenPipeError, ConnectionResetError):  # refused at once, the server closed it
        connection.sendall(head.encode() + body)
    return connection


def healthz_s(url: str) -> float:
    start = time.perf_counter()
    assert requests.get(f"{url}/healthz", timeout=30).status_code == 200
    return time.perf_counter() - start


def test_a_body_past_the_budget_of_all_bodies_in_flight_gets_503_at_once(server):
    held = BODY_BUDGET_BYTES // MAX_BATCH_BODY_BYTES  # unfinished batch bodies that fill the budget
    with ExitStack() as stack:
        for _ in range(held):
            connection = start_body(
                server, "/predict/batch", "application/json", MAX_BATCH_BODY_BYTES, b'{"im'
            )
            stack.callback(connection.close)
        time.sleep(0.3)  # their headers are in
        declared = start_body(server, "/predict", "application/json", 100_000, b'{"pix')
        status, headers, body = read_answer(declared, timeout=5)  # at once, before the body is sent
        assert (status, headers["retry-after"]) == (503, str(RETRY_AFTER_S))
        assert json.loads(body)["message"] == (
            "the server is already receiving 32 MiB of request bodies, all it takes at once; "
            "try again in a few seconds"
        )
        # A streamed body (no declared size) is counted as it arrives and refused as it passes the budget.
        streamed = start_body(
            server, "/predict/image", "multipart/form-data; boundary=b", None, b"--b\r\n"
        )
        with suppress(OSError):
            streamed.sendall(b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024))
        status, _, body = read_answer(streamed, timeout=5)
        assert status == 503 and "32 MiB of request bodies" in json.loads(body)["message"]
        assert healthz_s(server) < 1
    time.sleep(0.3)  # the unfinished bodies are gone: the budget is free again
    seven = requests.post(
        f"{server}/predict/image", files={"file": ("7.png", encode(drawn(7), "PNG"))}, timeout=30
    )
    assert seven.status_code == 200 and seven.json()["predicted_digit"] == 7


def test_a_body_that_stalls_gets_408_and_its_connection_closed(server):
    connection = start_body(server, "/predict", "application/json", 10_000, b'{"pixels": [[0')
    start = time.perf_counter()
    status, headers, body = read_answer(connection, timeout=BODY_IDLE_S + 10)
    waited = time.perf_counter() - start
    assert status == 408 and BODY_IDLE_S - 1 < waited < BODY_IDLE_S + 5
    assert (
        json.loads(body)["message"]
        == f"the request body stalled for {BODY_IDLE_S} s; send it again, whole"
    )
    assert headers["connection"] == "close" and closed_by_server(connection)


def test_headers_over_16_kib_are_refused_and_the_connection_closed(server):
    with socket.create_connection(("127.0.0.1", port(server)), timeout=10) as connection:
        connection.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * MiB + b"\r\n\r\n"
        )
        status, _, _ = read_answer(connection)
        assert status in (400, 431) and closed_by_server(connection)


def empty_lists(key: str, size: int) -> bytes:
    """A JSON body of about `size` bytes: {key: [[], [], ...]}, millions of objects once parsed."""
    return f'{{"{key}": ['.encode() + b",".join([b"[]"] * (size // 3 - 10)) + b"]}"


def largest_accepted_batch() -> bytes:
    """The batch body with the most values that is parsed (257 images): 422 after parsing, not before."""
    image = [[0.5] * 28] * 28
    return json.dumps({"images": [image] * 257}).encode()


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/predict/batch", empty_lists("images", MAX_BATCH_BODY_BYTES), "JSON lists and objects"),
        ("/predict", b'{"pixels": [' + b",".join([b"0"] * 300_000) + b"]}", "JSON values or more"),
    ],
    ids=["2.8 million empty lists", "300,000 numbers"],
)
def test_json_with_more_values_than_the_route_takes_is_refused_unparsed(server, path, body, words):
    answer = requests.post(
        f"{server}{path}", data=body, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert answer.status_code == 413 and words in answer.json()["message"]


def test_healthz_answers_within_1_s_while_8_of_the_worst_json_bodies_are_parsed(server):
    worst = [empty_lists("images", MAX_BATCH_BODY_BYTES), largest_accepted_batch()] * 4
    slowest = 0.0
    with ThreadPoolExecutor(len(worst)) as pool:
        posted = [
            pool.submit(requests.post, f"{server}/predict/batch", data=body, timeout=60,
                        headers={"Content-Type": "application/json"})
            for body in worst
        ]  # fmt: skip
        while not all(future.done() for future in posted):
            slowest = max(slowest, healthz_s(server))
            time.sleep(0.05)
    statuses = sorted(future.result().status_code for future in posted)
    assert set(statuses) <= {413, 422, 503}, statuses
    assert slowest < 1, f"/healthz took {slowest:.2f} s"


def many_scans(side: int, scans: int) -> bytes:
    """A progressive JPEG of a 7 whose smallest scan is repeated until it has `scans` scans.

    libjpeg decodes each scan in turn: 1,000 scans of a 4096x4096 picture take ~1.7 s here, ~17 s at 0.1 CPU.
    """
    image = Image.new("L", (side, side), 255)
    ImageDraw.Draw(image).line([(side * 0.3, side * 0.25), (side * 0.7, side * 0.25), (side * 0.45, side * 0.75)],
                               fill=0, width=side // 60)  # fmt: skip
    data = encode(image, "JPEG", progressive=True)
    starts = [
        found.start()
        for found in JPEG_MARKER.finditer(data)
        if data[found.start() + 1] in (0xDA, 0xD9)
    ]
    pieces = [data[start:end] for start, end in zip(starts, starts[1:], strict=False)]
    return data[: starts[-1]] + min(pieces, key=len) * (scans - len(pieces)) + data[starts[-1] :]


def test_a_jpeg_with_more_scans_than_encoders_write_is_refused_before_decoding(server):
    start = time.perf_counter()
    answer = requests.post(
        f"{server}/predict/image", files={"file": ("scans.jpg", many_scans(4096, 100))}, timeout=30
    )
    assert answer.status_code == 413, answer.text
    assert answer.json()["message"].startswith(f"the JPEG has more than {MAX_JPEG_SCANS} scans")
    assert time.perf_counter() - start < 2
    # A progressive JPEG as encoders write it (10 scans) and a baseline one with an EXIF thumbnail are read.
    for options in ({"progressive": True}, {"exif": Image.Exif().tobytes()}):
        photo = encode(drawn(7, "RGB").resize((1200, 1200)), "JPEG", **options)
        assert (
            requests.post(
                f"{server}/predict/image", files={"file": ("7.jpg", photo)}, timeout=30
            ).status_code
            == 200
        )


def png_with_text(picture: bytes, chunks: int, kind: bytes = b"zTXt") -> bytes:
    """The PNG with `chunks` text chunks of 1 MiB each (compressed to ~1 KB in zTXt) before its pixels."""
    text = b"comment\x00" + (
        b"\x00" + zlib.compress(b" " * MiB, 9) if kind == b"zTXt" else b" " * MiB
    )
    chunk = len(text).to_bytes(4, "big") + kind + text + zlib.crc32(kind + text).to_bytes(4, "big")
    return picture[:33] + chunk * chunks + picture[33:]  # after the signature and IHDR


def test_a_png_with_100_mib_of_text_chunks_is_refused_for_its_text(server):
    png = png_with_text(encode(drawn(7), "PNG"), 100)
    answer = requests.post(f"{server}/predict/image", files={"file": ("text.png", png)}, timeout=30)
    assert answer.status_code == 413
    assert answer.json()["message"].startswith(
        f"the PNG holds over {MAX_PNG_TEXT_BYTES // MiB} MiB of text chunks"
    )
    # A few text chunks, as drawing programs write, are read.
    few = png_with_text(encode(drawn(7), "PNG"), 2)
    assert (
        requests.post(
            f"{server}/predict/image", files={"file": ("7.png", few)}, timeout=30
        ).status_code
        == 200
    )


def fuzzed_exif_blobs(count: int) -> list[bytes]:
    """EXIF blocks with an orientation, a camera and a date, each with 1 to 8 random bytes changed."""
    exif = Image.Exif()
    exif[0x0112], exif[0x010F], exif[0x8769] = 6, "Camera", {0x9003: "2026:12:03 00:00:00"}
    blob, rng = exif.tobytes(), random.Random(28)
    fuzzed = []
    for _ in range(count):
        changed = bytearray(blob)
        for _ in range(rng.randint(1, 8)):
            changed[rng.randrange(len(changed))] = rng.randrange(256)
        fuzzed.append(bytes(changed))
    return fuzzed


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP"])
def test_a_corrupt_exif_block_is_ignored_and_the_picture_read_as_stored(server, image_format):
    seven = drawn(7, "RGB")
    failures = []
    for blob in fuzzed_exif_blobs(
        100
    ):  # ~1 in 3 of these made Pillow raise (SyntaxError, struct.error)
        try:
            image_to_views(encode(seven, image_format, exif=blob))
        except ImageRejected:
            pass
        except Exception as error:  # noqa: BLE001 (any other exception would be a 500)
            failures.append(repr(error))
    assert not failures, failures[:3]
    broken = [encode(seven, image_format, exif=blob) for blob in fuzzed_exif_blobs(12)]
    for picture in broken:
        answer = requests.post(
            f"{server}/predict/image", files={"file": ("7", picture)}, timeout=30
        )
        assert (
            answer.status_code in (200, 422)
            and answer.headers["content-type"] == "application/json"
        )


def test_healthz_says_when_the_decoder_is_stuck_and_other_requests_are_answered(server):
    pixels = {"pixels": [[0.0] * 28] * 28}
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(
            requests.post, f"{server}/test/decoder/slow?seconds=4&stuck_after_s=1", timeout=30
        )
        time.sleep(1.5)
        stuck = requests.get(f"{server}/healthz", timeout=5)
        assert stuck.status_code == 503
        assert stuck.json() == {"status": "unavailable: a picture's decoding is stuck"}
        assert requests.post(f"{server}/predict", json=pixels, timeout=5).status_code == 200
        waiting = pool.submit(requests.post, f"{server}/predict/image", timeout=30,
                              files={"file": ("7.png", encode(drawn(7), "PNG"))})  # fmt: skip
        assert slow.result().status_code == 200
        assert waiting.result().status_code == 200  # answered once the decoder is free
    assert requests.get(f"{server}/healthz", timeout=5).status_code == 200


@contextmanager
def in_render_free(**env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """The API with the deploy's packages and render.yaml's environment, in a free instance's shape."""
    from conftest import free_port

    listen = free_port()
    command = [
        str(RENDER_FREE),
        str(DEPLOY_PYTHON),
        "-m",
        "uvicorn",
        "d4_api_mnist:app",
        "--port",
        str(listen),
    ]
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **deploy_env(), **env},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{listen}"
    try:
        for _ in range(600):
            with suppress(requests.ConnectionError):
                if requests.get(f"{url}/healthz", timeout=2).ok:
                    break
            assert process.poll() is None, process.stdout.read()
            time.sleep(0.2)
        yield url, process
    finally:
        if process.poll() is None:
            stop_in_render_free(process)


def stop_in_render_free(process: subprocess.Popen) -> str:
    """SIGTERM to the server inside render-free, so that the wrapper sees it exit and prints its peak memory and
    OOM kills; what it printed."""
    pid = process.pid
    while children := Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        pid = int(children[0])
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    return process.communicate(timeout=60)[0]


def render_free_unavailable() -> str | None:
    """Why the memory test cannot run in a free instance's shape here; None when it can."""
    if os.geteuid() != 0:
        return "render-free needs root to make its cgroup"
    if not Path("/sys/fs/cgroup/memory").is_dir():
        return "render-free needs cgroup v1's memory controller, which this machine lacks"
    if not RENDER_FREE.is_file():
        return f"{RENDER_FREE} is missing"
    if not DEPLOY_PYTHON.is_file():
        return ("the deploy's environment is missing: make it with `python -m venv .venv-render` and "
                "`.venv-render/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu "
                "-r requirements-render.txt`")  # fmt: skip
    return None


@pytest.mark.skipif(render_free_unavailable() is not None, reason=str(render_free_unavailable()))
def test_300_unfinished_uploads_fit_a_free_instance():
    """300 uploads of ~1 MiB, never finished, took a 512 MB instance down in 9 s (OOM kill)."""
    upload_head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="7.png"\r\n\r\n'
    with in_render_free() as (url, process), ExitStack() as stack:
        connections = []
        for _ in range(300):
            connection = start_body(url, "/predict/image", "multipart/form-data; boundary=b", 1_100_000,
                                    upload_head + b"x" * 1_000_000)  # fmt: skip
            stack.callback(connection.close)
            connections.append(connection)
        time.sleep(3)
        assert healthz_s(url) < 1
        statuses = []
        for connection in connections:  # what came back at once: refusals
            connection.setblocking(False)
            with suppress(BlockingIOError):
                statuses.append(int(connection.recv(64).split()[1]))
        assert process.poll() is None
        stack.close()
        report = stop_in_render_free(process)
    peak, kills = re.search(r"peak memory (\d+) MB, OOM kills (\S+)", report).groups()
    assert kills == "0" and int(peak) <= 400, report[-2000:]
    assert set(statuses) == {503}  # refused at once past the budget
    # Held: the uploads within the budget, and a few whose headers the 0.1 CPU had not yet read.
    assert len(statuses) >= 300 - BODY_BUDGET_BYTES // MiB - 20, len(statuses)


# The closing boundary cut in two: the check must join what it kept of one read to the next.
def test_an_upload_whose_closing_boundary_is_split_across_two_reads_is_read(server):
    upload = requests.Request(
        "POST", server, files={"file": ("7.png", encode(drawn(7), "PNG"))}
    ).prepare()
    body, boundary = upload.body, upload.headers["Content-Type"].split("boundary=")[1].encode()
    cut = body.rindex(b"--" + boundary + b"--") + len(boundary) // 2
    with socket.create_connection(("127.0.0.1", port(server)), timeout=30) as connection:
        head = (f"POST /predict/image HTTP/1.1\r\nHost: test\r\nContent-Type: {upload.headers['Content-Type']}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")  # fmt: skip
        connection.sendall(head.encode() + body[:cut])
        time.sleep(0.3)  # the server reads what came so far before the rest arrives
        connection.sendall(body[cut:])
        status, _, answer = read_answer(connection)
    assert status == 200, answer
    assert json.loads(answer)["predicted_digit"] == 7
