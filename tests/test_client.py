"""The client script against servers that misbehave, and against addresses it cannot use.

Each test runs the real d4_test_api.py as a process against a real server on a loopback port: a
small socketserver here that answers whatever the test scripts, byte by byte if need be (slowly,
hugely, compressed, or not a prediction at all). Whatever the server does, the client must end
within its --timeout (and a little), with exit status 1 and one `error:` line, and no traceback.
"""

import contextlib
import functools
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import FIXTURE_MNIST, REPO, script_env
from d4.client import MAX_ANSWER_BYTES, MAX_REASON_CHARS

TIMEOUT_S = 3  # the client's --timeout in these tests
GRACE_S = 2  # how much longer than --timeout the client may take to start and to end
DRIP_EVERY_S = 1  # well under TIMEOUT_S: requests' own timeout, which bounds each wait, never fires
PEAK_MEMORY_MIB = 60  # the client sending --image and reading 1 MiB of answer needs ~30 MiB

A_TEST_DIGIT = ("--data-dir", str(FIXTURE_MNIST))  # the client sends test digit 0, not --image

Respond = Callable[[socketserver.StreamRequestHandler], None]


# Runs the client (its command in sys.argv[2:]), and writes its peak memory into sys.argv[1].
# Not measured on the client itself: Linux counts in a process's peak the one it was started from,
# which for the client would be pytest, torch and all.
MEASURED = """
import os, subprocess, sys
client = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(client.pid, 0)
client.returncode = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as peak:
    peak.write(str(usage.ru_maxrss))
sys.exit(client.returncode)
"""


@dataclass
class ClientRun:
    returncode: int
    stdout: str
    stderr: str
    ended_at: float  # time.monotonic() when the process had ended
    seconds: float  # from starting the process to its end
    peak_memory_mib: float


def run_client(*args: str, python_options: tuple[str, ...] = (), limit_s: float = 60) -> ClientRun:
    """Run d4_test_api.py with these arguments; killed after limit_s, so that a hang fails."""
    # NO_PROXY: the client calls the test's own servers (and a name that does not exist) directly.
    env = script_env(NO_PROXY="*", no_proxy="*")
    with tempfile.TemporaryDirectory() as folder:
        out, err, peak = (Path(folder) / name for name in ("out", "err", "peak"))
        client = [sys.executable, *python_options, "d4_test_api.py", *args]
        started = time.monotonic()
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-c", MEASURED, str(peak), *client],
                cwd=REPO, env=env, stdout=stdout, stderr=stderr, start_new_session=True,
            )  # fmt: skip
            try:
                process.wait(timeout=limit_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # the client too, not only what measures it
                process.wait()
        ended_at = time.monotonic()
        peak_kib = int(peak.read_text()) if peak.exists() else 0  # none when it had to be killed
        if sys.platform == "darwin":
            peak_kib //= 1024  # ru_maxrss is in bytes on macOS, in KiB on Linux
        return ClientRun(
            returncode=process.returncode,
            stdout=out.read_text(),
            stderr=err.read_text(),
            ended_at=ended_at,
            seconds=ended_at - started,
            peak_memory_mib=peak_kib / 1024,
        )


def the_error_line(run: ClientRun) -> str:
    """The client's one `error:` line, once checked that it failed in that one line, and in time."""
    assert run.returncode == 1, run
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    assert run.seconds < TIMEOUT_S + GRACE_S, run
    return lines[0]


class ScriptedServer(socketserver.ThreadingTCPServer):
    """An HTTP server on a loopback port: it reads each request whole, then `respond` answers it."""

    daemon_threads = True

    def __init__(self, respond: Respond) -> None:
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.respond = respond
        self.requests_read_at: list[float] = []  # time.monotonic() when each request had been read

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ScriptedHandler(socketserver.StreamRequestHandler):
    server: ScriptedServer

    def handle(self) -> None:
        length = 0
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        self.rfile.read(length)
        self.server.requests_read_at.append(time.monotonic())
        # OSError: the client has gone, as it should once it has read enough, or waited enough.
        with contextlib.suppress(OSError):
            self.server.respond(self)


@contextlib.contextmanager
def scripted_server(respond: Respond) -> Iterator[ScriptedServer]:
    server = ScriptedServer(respond)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def head(status: str, *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Connection: close", *headers]
    return "".join(f"{line}\r\n" for line in lines).encode() + b"\r\n"


def answer(status: str, body: bytes, *headers: str) -> Respond:
    """A whole answer at once, with its length unless the headers say another."""
    if not any(header.startswith("Content-Length:") for header in headers):
        headers = (f"Content-Length: {len(body)}", *headers)
    return lambda handler: handler.wfile.write(head(status, *headers) + body)


def prediction(**changes: object) -> dict:
    """A well-formed answer from /predict/image?return_input=true, some of its fields changed
    (to ... to leave one out)."""
    good = {
        "predicted_digit": 3,
        "confidence": 0.9,
        "probabilities": [0.0, 0.0, 0.0, 0.9, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0],
        "input": [[0.0] * 28 for _ in range(28)],
    }
    return {key: value for key, value in {**good, **changes}.items() if value is not ...}


def json_answer(body: object, status: str = "200 OK") -> Respond:
    return answer(status, json.dumps(body).encode(), "Content-Type: application/json")


@pytest.fixture
def picture(tmp_path) -> str:
    """A file to send as --image; these servers answer without looking at it."""
    path = tmp_path / "digit.png"
    path.write_bytes(b"any bytes: the scripted server does not read them")
    return str(path)


def client_against(respond: Respond, *args: str) -> ClientRun:
    with scripted_server(respond) as server:
        return run_client("--url", server.url, "--timeout", str(TIMEOUT_S), *args)


def drip_head(handler: socketserver.StreamRequestHandler) -> None:
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while True:
        handler.wfile.write(b"a")
        time.sleep(DRIP_EVERY_S)


def drip_body(handler: socketserver.StreamRequestHandler) -> None:
    handler.wfile.write(head("200 OK", "Content-Length: 1000", "Content-Type: application/json"))
    while True:
        handler.wfile.write(b" ")
        time.sleep(DRIP_EVERY_S)


@pytest.mark.parametrize("respond", [drip_head, drip_body], ids=["headers", "body"])
def test_a_server_that_drips_its_answer_cannot_keep_the_client_past_its_timeout(respond, picture):
    with scripted_server(respond) as server:
        run = run_client("--url", server.url, "--timeout", str(TIMEOUT_S), "--image", picture)
    assert the_error_line(run) == (
        f"error: no answer from {server.url}/predict/image within {TIMEOUT_S} s (a sleeping Render "
        "instance can take a minute to wake; try again or raise --timeout)"
    )


def test_the_timeout_bounds_the_call_after_a_test_digit_is_loaded_too():
    with scripted_server(drip_body) as server:
        run = run_client("--url", server.url, "--timeout", str(TIMEOUT_S), *A_TEST_DIGIT)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.startswith("error: no answer from") and len(run.stderr.splitlines()) == 1
    # Loading torch and the digit come first, and take seconds; the timeout bounds the call.
    assert run.ended_at - server.requests_read_at[0] < TIMEOUT_S + GRACE_S


def endless(handler: socketserver.StreamRequestHandler, declared: str) -> None:
    """400 MB of spaces, sent until the client stops reading."""
    handler.wfile.write(head("200 OK", declared, "Content-Type: application/json"))
    block = b" " * 65536
    if declared.startswith("Transfer-Encoding: chunked"):
        block = b"10000\r\n" + block + b"\r\n"  # a chunk of 65536 (hex 10000) bytes
    for _ in range(400_000_000 // 65536):
        handler.wfile.write(block)


@functools.cache
def compressed_gibibyte(wbits: int) -> bytes:
    """1 GiB of spaces, compressed to about 1 MB: gzip (wbits 31) or zlib's deflate (wbits 15)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    block = b" " * 2**20
    return b"".join(compressor.compress(block) for _ in range(1024)) + compressor.flush()


def too_large(kind: str) -> Respond:
    """An answer far over the client's cap: 400 MB as it is, or 1 GiB compressed to about 1 MB."""
    if kind in ("gzip", "deflate"):
        bomb = compressed_gibibyte(31 if kind == "gzip" else 15)
        return answer("200 OK", bomb, f"Content-Encoding: {kind}")
    chunked = kind == "400 MB chunked"
    declared = "Transfer-Encoding: chunked" if chunked else "Content-Length: 400000000"
    return lambda handler: endless(handler, declared)


@pytest.mark.parametrize("kind", ["400 MB", "400 MB chunked", "gzip", "deflate"])
def test_an_answer_too_large_is_not_read_whole(kind, picture):
    run = client_against(too_large(kind), "--image", picture)
    assert f"answered more than {MAX_ANSWER_BYTES // 2**20} MiB" in the_error_line(run)
    assert run.peak_memory_mib < PEAK_MEMORY_MIB


def test_a_compressed_prediction_is_read(picture):
    body = json.dumps(prediction()).encode()
    gzipped = zlib.compress(body, wbits=31)
    run = client_against(answer("200 OK", gzipped, "Content-Encoding: gzip"), "--image", picture)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "the model reads 3, 90.00% sure"


def test_json_prints_the_answer_exactly_as_it_came(picture):
    run = client_against(json_answer(prediction()), "--image", picture, "--json")
    assert run.returncode == 0, run.stderr
    assert run.stdout == json.dumps(prediction()) + "\n"  # the body itself, for another program


NESTED_TOO_DEEP = b"[" * 100_000 + b"]" * 100_000
DIGIT = "predicted_digit is missing or not a whole number from 0 to 9"
CONFIDENCE = "confidence is missing or not a number from 0 to 1"
PROBABILITIES = "probabilities is missing or not a list of 10 numbers from 0 to 1"
INPUT = "input is missing or not 28 rows of 28 numbers from 0 to 1"
NAN = answer("200 OK", json.dumps(prediction(confidence=float("nan"))).encode())
NOT_HTTP = b"HELLO\r\n\r\n"
NOT_PREDICTIONS = {
    "array": (json_answer([]), "answered no prediction: a JSON array, not an object"),
    "null": (json_answer(None), "answered no prediction: a JSON null, not an object"),
    "empty object": (json_answer({}), DIGIT),
    "digit as text": (json_answer(prediction(predicted_digit="3")), DIGIT),
    "digit true": (json_answer(prediction(predicted_digit=True)), DIGIT),
    "digit 10": (json_answer(prediction(predicted_digit=10)), DIGIT),
    "no confidence": (json_answer(prediction(confidence=...)), CONFIDENCE),
    "confidence NaN": (NAN, CONFIDENCE),
    "confidence 2": (json_answer(prediction(confidence=2)), CONFIDENCE),
    "9 probabilities": (json_answer(prediction(probabilities=[0.1] * 9)), PROBABILITIES),
    "probabilities as text": (json_answer(prediction(probabilities=["0.1"] * 10)), PROBABILITIES),
    "no input": (json_answer(prediction(input=...)), INPUT),
    "27 rows": (json_answer(prediction(input=[[0.0] * 28] * 27)), INPUT),
    "a short row": (json_answer(prediction(input=[[0.0] * 28] * 27 + [[0.0]])), INPUT),
    "level 2": (json_answer(prediction(input=[[2.0] * 28] * 28)), INPUT),
    "level -1": (json_answer(prediction(input=[[-1.0] * 28] * 28)), INPUT),
    "level as text": (json_answer(prediction(input=[["0"] * 28] * 28)), INPUT),
    "the notes' API's error": (
        json_answer({"error": "pixels must be a 28x28 array"}),
        f"{DIGIT} (it says: pixels must be a 28x28 array)",
    ),
    "nested too deep": (
        answer("200 OK", NESTED_TOO_DEEP),
        "HTTP 200: JSON nested too deep to read",
    ),
    "HTML": (answer("200 OK", b"<html><p>Hi</p></html>"), "is not JSON: <html><p>Hi</p></html>"),
    "nothing": (answer("200 OK", b""), "answered something that is not JSON: (an empty body)"),
    "not UTF-8": (answer("200 OK", b"\xff\xfe{\x00"), "answered something that is not JSON"),
    "an error nested too deep": (
        answer("422 No", NESTED_TOO_DEEP),
        "HTTP 422: JSON nested too deep",
    ),
    "a number as message": (json_answer({"message": 5}, "400 No"), 'HTTP 400: {"message": 5}'),
    "FastAPI's detail": (json_answer({"detail": "Not Allowed"}, "405 No"), "HTTP 405: Not Allowed"),
    "redirect": (
        answer("302 Found", b"", "Location: /elsewhere"),
        "a redirect to http://127.0.0.1:",
    ),
    "brotli": (answer("200 OK", b"\x0b\x02\x80{}\x03", "Content-Encoding: br"), "an encoding the"),
    "broken gzip": (answer("200 OK", b"no gzip", "Content-Encoding: gzip"), "sent a broken answer"),
    "cut short": (answer("200 OK", b"{}", "Content-Length: 1000"), "sent a broken answer"),
    "closed unanswered": (lambda handler: None, "gave no HTTP answer"),
    "not HTTP": (lambda handler: handler.wfile.write(NOT_HTTP), "gave no HTTP answer"),
}


@pytest.mark.parametrize(("respond", "says"), NOT_PREDICTIONS.values(), ids=NOT_PREDICTIONS.keys())
def test_an_answer_that_is_not_a_prediction_is_one_error_line(respond, says, picture):
    run = client_against(respond, "--image", picture)
    assert says in the_error_line(run)


@pytest.mark.parametrize("body", [b"[]", NESTED_TOO_DEEP], ids=["array", "nested too deep"])
def test_an_answer_to_a_test_digit_is_checked_too(body):
    with scripted_server(answer("200 OK", body)) as server:
        run = run_client("--url", server.url, *A_TEST_DIGIT)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.startswith(f"error: {server.url}/predict answered ")
    assert len(run.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"message": "too long " * 10_000},
        {"message": "line one\nline two\r\n\x1b[31mred\x1b[0m"},
        {"detail": ["not", "a", "sentence"] * 10_000},
    ],
    ids=["long", "lines and escapes", "long and not a sentence"],
)
def test_what_the_server_says_is_cut_to_one_short_line(body, picture):
    run = client_against(json_answer(body, "500 Internal Server Error"), "--image", picture)
    line = the_error_line(run)
    reason = line.split("answered HTTP 500: ", 1)[1]
    assert len(reason) <= MAX_REASON_CHARS and reason.isprintable()
    assert reason.endswith("…") or reason == "line one line two [31mred [0m"


def test_a_host_that_does_not_exist_is_named():
    # .invalid is a name that never resolves (RFC 2606), with or without a network.
    run = run_client("--url", "https://no-such-host-d4.invalid", "--image", __file__)
    assert the_error_line(run) == (
        "error: host not found: no-such-host-d4.invalid (is --url spelled right, and is this "
        "machine online?)"
    )


def test_a_url_that_is_no_address_fails_at_once_without_loading_torch():
    run = run_client("--url", "not a url", python_options=("-X", "importtime"))
    imports = [line for line in run.stderr.splitlines() if line.startswith("import time:")]
    loaded = {line.split("|")[-1].strip() for line in imports}
    assert run.returncode == 1 and run.stdout == ""
    assert [line for line in run.stderr.splitlines() if line not in imports] == [
        "error: --url 'http://not a url' is not a web address: 'not a url' cannot be a host name; "
        "give one such as http://127.0.0.1:8000 or https://YOUR-SERVICE.onrender.com"
    ]
    assert "requests" in loaded  # what -X importtime lists was read as expected
    assert not {"torch", "torchvision"} & loaded


def test_client_reports_a_server_that_is_down():
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    run = run_client("--url", url, *A_TEST_DIGIT)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip() == (
        f"error: cannot reach {url}/predict: is the server running? "
        "Start it with `uvicorn d4_api_mnist:app`"
    )


def test_client_reports_a_server_too_slow_to_answer():
    listener = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/predict"
        run = run_client("--url", url, "--timeout", "1", *A_TEST_DIGIT)
    finally:
        listener.close()
    assert run.returncode == 1
    assert run.stderr.strip().startswith(f"error: no answer from {url} within 1 s")
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("typed", "posted_to"),
    [
        ("localhost:8000", "http://localhost:8000/predict"),
        ("127.0.0.1:8000/", "http://127.0.0.1:8000/predict"),
        ("http://h:8000/?k=1", "http://h:8000/predict?k=1"),
        ("https://example.org/d4/", "https://example.org/d4/predict"),
        ("https://example.org/d4/predict", "https://example.org/d4/predict"),
        ("https://example.org/d4/predict/", "https://example.org/d4/predict"),
        ("http://h:8000/predict/image", "http://h:8000/predict"),  # /predict/image's, as --url
        ("[::1]:8000", "http://[::1]:8000/predict"),  # an IPv6 address
    ],
)
def test_client_builds_the_predict_url_from_what_people_type(typed, posted_to):
    from d4.client import predict_url

    assert predict_url(typed) == posted_to


@pytest.mark.parametrize(
    ("typed", "problem"),
    [
        ("ftp://example.org/", "'ftp://example.org/' is not an http:// or https:// address"),
        ("not a url", "'http://not a url' is not a web address: 'not a url' cannot be a host"),
        ("localhost:99999", "'http://localhost:99999' has a port that is not a number from 0"),
    ],
)
def test_client_refuses_a_url_it_cannot_use_in_one_line(typed, problem):
    run = run_client("--url", typed)
    assert run.returncode == 1 and run.stderr.startswith(f"error: --url {problem}")
    assert run.stderr.endswith(
        "; give one such as http://127.0.0.1:8000 or https://YOUR-SERVICE.onrender.com\n"
    )
    assert len(run.stderr.splitlines()) == 1
