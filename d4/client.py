"""What the client does beyond the course notes: URLs as people type them, one deadline for the
call, answers read within limits and checked, errors in one line, answers to read.

d4_test_api.py reads like the notes' client and calls these in one line each. Nothing here imports
torch or torchvision at the top: they take seconds to load, and a mistyped --url should fail fast.
"""

import json
import os
import re
import socket
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
import urllib3

if TYPE_CHECKING:
    from torch.utils.data import Dataset

# 300 real MNIST test digits ship with the repository (the tests' fixture), so that the client
# works on a machine with no copy of MNIST and no network.
SHIPPED_DIGITS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "mnist"
# urlsplit lowercases the host name; an IPv6 address (with ":") is also allowed.
HOST_NAME = re.compile(r"[a-z0-9.-]+")
INK_LEVELS = " .:-=+*#%@"  # from paper (0.0) to full ink (1.0), for the picture the model saw
PICTURE_SIDE = 28  # MNIST's 28x28 (d4.model says so too, but importing it loads torch)

# The largest real answer, /predict/image's with the 28x28 the model saw, is about 20 KB.
MAX_ANSWER_BYTES = 1024 * 1024
READ_BYTES = 64 * 1024  # how much of the answer is read from the network at a time
MAX_REASON_CHARS = 300  # what the server says went wrong is cut to this in the error line
# Only what zlib can decompress a piece at a time, under the cap. requests would otherwise also
# ask for brotli or zstd when those packages are installed, and decompress the answer whole.
ACCEPTED_ENCODINGS = "gzip, deflate"


def mnist_test_digits(data_dir: str, transform: Callable) -> "Dataset":
    """MNIST's 10,000 test digits, downloaded into data_dir if needed; or, when that fails, the
    300 that ship here."""
    from d4.data import MnistUnavailable, mnist_dataset  # imported here: it loads torch

    try:
        return mnist_dataset(data_dir, train=False, transform=transform)
    except MnistUnavailable:
        shipped = mnist_dataset(SHIPPED_DIGITS, train=False, transform=transform)
        print(
            f"note: MNIST is not in {Path(data_dir) / 'MNIST' / 'raw'} and could not be "
            f"downloaded: sending one of the {len(shipped)} MNIST test digits that ship in "
            f"{os.path.relpath(SHIPPED_DIGITS)}",
            file=sys.stderr,
        )
        return shipped


def predict_url(url: str, endpoint: str = "/predict") -> str:
    """The endpoint's URL from what people type: a base URL, one with a path prefix, or host:port.

    localhost:8000 -> http://localhost:8000/predict; https://h/d4/ -> https://h/d4/predict;
    http://h:8000/?k=1 -> http://h:8000/predict?k=1; a URL already ending in /predict is kept.
    Raises ValueError for a URL that is not http(s), has no host, or has a host that cannot be one.
    """
    if "://" not in url:
        url = f"http://{url}"  # a bare host:port, as uvicorn prints it without the scheme
    parts = urlsplit(url)
    example = "give one such as http://127.0.0.1:8000 or https://YOUR-SERVICE.onrender.com"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"--url {url!r} is not an http:// or https:// address with a host; {example}"
        )
    if not HOST_NAME.fullmatch(parts.hostname) and ":" not in parts.hostname:
        raise ValueError(
            f"--url {url!r} is not a web address: {parts.hostname!r} cannot be a host name; "
            f"{example}"
        )
    try:
        parts.port  # noqa: B018 (reading it checks it)
    except ValueError:
        raise ValueError(
            f"--url {url!r} has a port that is not a number from 0 to 65535; {example}"
        ) from None
    path = parts.path.rstrip("/")
    for known in ("/predict/image", "/predict"):
        path = path.removesuffix(known)
    return urlunsplit(parts._replace(path=path + endpoint))


def call_options(timeout: float) -> dict[str, Any]:
    """requests.post's options for a call whose answer `checked` reads within limits.

    stream: requests leaves the answer unread, for `checked` to read no more than MAX_ANSWER_BYTES;
    no redirects: requests would read a redirect's answer whole, whatever its size; the encodings:
    only those `checked` decompresses a piece at a time. timeout bounds each wait for the network,
    and `calling` the whole call.
    """
    return {
        "timeout": timeout,
        "stream": True,
        "allow_redirects": False,
        "headers": {"Accept-Encoding": ACCEPTED_ENCODINGS},
    }


@contextmanager
def calling(url: str, timeout: float) -> Iterator[None]:
    """One call to url, ended after `timeout` seconds in all; whatever goes wrong, one error line.

    requests' timeout bounds each wait for the network, not the call: a server that sends a byte
    every few seconds would outlast it, and it does not bound looking up the host's name. So a timer
    ends the process once the time is up: a thread cannot interrupt a read that is waiting, on
    every system.
    """
    too_slow = (
        f"error: no answer from {url} within {timeout:g} s (a sleeping Render instance can take a "
        "minute to wake; try again or raise --timeout)"
    )
    finished = threading.Lock()  # taken by whichever comes first: the end of the call, or the timer

    def give_up() -> None:
        if finished.acquire(blocking=False):
            print(too_slow, file=sys.stderr, flush=True)
            os._exit(1)  # at once: SystemExit here would only end the timer's thread

    timer = threading.Timer(timeout, give_up)
    timer.daemon = True
    timer.start()
    try:
        yield
    except requests.exceptions.SSLError:
        plain = urlunsplit(urlsplit(url)._replace(scheme="http"))
        raise SystemExit(
            f"error: {url} does not answer HTTPS: a local uvicorn serves plain http, "
            f"try --url {plain}"
        ) from None
    except (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError):
        raise SystemExit(too_slow) from None
    except requests.exceptions.ConnectionError as error:
        raise SystemExit(unreachable(url, error)) from None
    except (urllib3.exceptions.HTTPError, zlib.error) as error:  # from `checked`'s own reading
        raise SystemExit(f"error: {url} sent a broken answer: {shortened(str(error))}") from None
    except requests.exceptions.RequestException as error:
        raise SystemExit(f"error: cannot call {url} ({type(error).__name__})") from None
    finally:
        finished.acquire()  # waits only when the timer came first, and is ending the process
        timer.cancel()


def unreachable(url: str, error: requests.exceptions.ConnectionError) -> str:
    """The error line for a call that got no answer at all: why, as far as the error tells."""
    host = urlsplit(url).hostname or ""
    if caused_by(error, socket.gaierror):
        return (
            f"error: host not found: {host} (is --url spelled right, and is this machine online?)"
        )
    if caused_by(error, urllib3.exceptions.ProtocolError):
        return f"error: {url} gave no HTTP answer: it closed the connection, or sent something else"
    if host == "localhost" or host.startswith("127.") or host == "::1":
        start = "Start it with `uvicorn d4_api_mnist:app`"
        return f"error: cannot reach {url}: is the server running? {start}"
    return f"error: cannot reach {url}: is the service up, and is --url right?"


def caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    """Whether error or what it wraps is a `kind`: requests and urllib3 wrap the socket's error."""
    seen: set[int] = set()  # a chain of causes can loop back on itself
    wrapped: BaseException | None = error
    while wrapped is not None and id(wrapped) not in seen:
        if isinstance(wrapped, kind):
            return True
        seen.add(id(wrapped))
        # urllib3's MaxRetryError keeps the real error in .reason; the others chain theirs.
        reason = getattr(wrapped, "reason", None)
        chained = wrapped.__cause__ or wrapped.__context__
        wrapped = reason if isinstance(reason, BaseException) else chained
    return False


def checked(r: requests.Response, typed: str, with_input: bool = False) -> None:
    """Read r's answer (then r.json() gives it), and exit with one line unless it is a prediction.

    typed is --url as given, for the line about a 404; with_input: the answer must also hold the
    28x28 the model saw (/predict/image?return_input=true).
    """
    if r.is_redirect:
        moved_to = shortened(urljoin(r.url, r.headers["location"]))
        raise SystemExit(
            f"error: {r.url} answered HTTP {r.status_code}, a redirect to {moved_to}: "
            "use that as --url"
        )
    # requests keeps a body it has read in _content; putting the capped one there lets r.json() and
    # r.text work as usual afterwards.
    r._content = read_capped(r)
    if r.status_code == 404:
        image = urlsplit(r.url).path.endswith("/predict/image")
        endpoint = "/predict/image" if image else "/predict"
        raise SystemExit(
            f"error: {r.url} answered HTTP 404 (not found): the client adds {endpoint} to --url "
            f"{typed!r}, and the server has no such path; give the server's base URL, such as "
            "http://127.0.0.1:8000"
        )
    try:
        answer = r.json()
    except RecursionError:
        raise SystemExit(
            f"error: {r.url} answered HTTP {r.status_code}: JSON nested too deep to read"
        ) from None
    except ValueError:
        if r.ok:
            raise SystemExit(
                f"error: {r.url} answered something that is not JSON: {excerpt(r)}"
            ) from None
        raise SystemExit(f"error: {r.url} answered HTTP {r.status_code}: {excerpt(r)}") from None
    if not r.ok:
        raise SystemExit(
            f"error: {r.url} answered HTTP {r.status_code}: {stated_reason(answer) or excerpt(r)}"
        )
    problem = prediction_problem(answer, with_input)
    if problem:
        said = stated_reason(answer)
        raise SystemExit(
            f"error: {r.url} answered no prediction: {problem}"
            + (f" (it says: {said})" if said else "")
        )


def read_capped(r: requests.Response) -> bytes:
    """The answer's body, decompressed a piece at a time; exit with one line once it is larger
    than MAX_ANSWER_BYTES. requests would read and decompress it whole, whatever its size: 1 MB of
    gzip can hold 1 GB.
    """
    encoding = r.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
        raise SystemExit(
            f"error: {r.url} answered in an encoding the client does not read: "
            f"{shortened(encoding)}"
        )
    # MAX_WBITS | 32: zlib finds out from the first bytes whether they are gzip or zlib's deflate.
    compressed = encoding not in ("", "identity")
    decompressor = zlib.decompressobj(zlib.MAX_WBITS | 32) if compressed else None
    body = bytearray()
    for piece in r.raw.stream(READ_BYTES, decode_content=False):
        if decompressor:
            # max_length: however much the piece expands, at most one byte past the cap comes out
            piece = decompressor.decompress(piece, MAX_ANSWER_BYTES + 1 - len(body))
        body += piece
        if len(body) > MAX_ANSWER_BYTES:
            raise SystemExit(
                f"error: {r.url} answered more than {MAX_ANSWER_BYTES // 2**20} MiB, and an "
                "answer from the API is a few KB; is --url the D4 API?"
            )
    return bytes(body)


def prediction_problem(answer: Any, with_input: bool) -> str | None:
    """What keeps a JSON answer from being a prediction the client can print; None if nothing."""
    if not isinstance(answer, dict):
        return f"a JSON {json_kind(answer)}, not an object"
    digit = answer.get("predicted_digit")
    # `type(...) is`, not isinstance: JSON's true is an int in Python too.
    if type(digit) is not int or not 0 <= digit <= 9:
        return "predicted_digit is missing or not a whole number from 0 to 9"
    if not is_fraction(answer.get("confidence")):
        return "confidence is missing or not a number from 0 to 1"
    probabilities = answer.get("probabilities")
    if not (
        isinstance(probabilities, list)
        and len(probabilities) == 10
        and all(map(is_fraction, probabilities))
    ):
        return "probabilities is missing or not a list of 10 numbers from 0 to 1"
    if with_input and not is_picture(answer.get("input")):
        return f"input is missing or not {PICTURE_SIDE} rows of {PICTURE_SIDE} numbers from 0 to 1"
    return None


def is_fraction(value: Any) -> bool:
    """A number from 0 to 1: a probability, or a grey level. Not true or false, and not NaN."""
    return type(value) in (int, float) and 0 <= value <= 1


def is_picture(rows: Any) -> bool:
    """28 rows of 28 grey levels from 0 to 1."""
    return (
        isinstance(rows, list)
        and len(rows) == PICTURE_SIDE
        and all(
            isinstance(row, list) and len(row) == PICTURE_SIDE and all(map(is_fraction, row))
            for row in rows
        )
    )


def json_kind(value: Any) -> str:
    """The JSON name of a parsed value's kind, as a server's author would say it."""
    kinds = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    kinds[type(None)] = "null"
    return kinds.get(type(value), type(value).__name__)


def stated_reason(answer: Any) -> str | None:
    """What the server says went wrong: the API's one-sentence `message`, FastAPI's `detail`, or the
    notes' API's `error`, cut short; None when it says none of these."""
    if isinstance(answer, dict):
        for key in ("message", "detail", "error"):
            if isinstance(answer.get(key), str):
                return shortened(answer[key])
    return None


def excerpt(r: requests.Response) -> str:
    """The answer's body as text, shortened for an error line. Not r.text, which would first guess
    at the charset from the whole body: here bytes that are not UTF-8 become U+FFFD."""
    return shortened(r.content.decode("utf-8", errors="replace")) or "(an empty body)"


def shortened(text: str) -> str:
    """text on one line and at most MAX_REASON_CHARS long: line breaks and control characters become
    spaces, runs of spaces one, and a longer text is cut with "…"."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= MAX_REASON_CHARS else flat[: MAX_REASON_CHARS - 1] + "…"


def readable(answer: dict) -> str:
    """The answer as JSON with its probabilities rounded to 4 places, for reading."""
    rounded = {**answer, "confidence": round(answer["confidence"], 4)}
    rounded["probabilities"] = [round(p, 4) for p in answer["probabilities"]]
    return json.dumps(rounded)


def verdict(answer: dict, actual: int) -> str:
    """One line: was the model right about this digit, and how sure was it."""
    digit, sure = answer["predicted_digit"], how_sure(answer["confidence"])
    if digit == actual:
        return f"right: the model reads {digit}, {sure} sure"
    return f"wrong: the model reads {digit} ({sure} sure), the digit is {actual}"


def how_sure(confidence: float) -> str:
    """The confidence as a percentage with 2 decimals; never "100.00%" for a probability under 1."""
    percent = f"{100 * confidence:.2f}%"
    return ">99.99%" if percent == "100.00%" and confidence < 1 else percent


def as_text(pixels: list[list[float]]) -> str:
    """The 28x28 grey levels as 28 lines of characters, darker characters for more ink."""
    top = len(INK_LEVELS) - 1
    return "\n".join("".join(INK_LEVELS[round(level * top)] * 2 for level in row) for row in pixels)
