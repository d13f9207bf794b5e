"""What the client does beyond the course notes: URLs as people type them, errors in one line, answers to read.

d4_test_api.py reads like the notes' client and calls these in one line each.
"""

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests
from torch.utils.data import Dataset

from d4.data import MnistUnavailable, mnist_dataset

# 300 real MNIST test digits ship with the repository (the tests' fixture), so that the client
# works on a machine with no copy of MNIST and no network.
SHIPPED_DIGITS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "mnist"
HOST_NAME = re.compile(r"[a-z0-9.-]+")  # urlsplit lowercases it; an IPv6 address (with ":") is also allowed
INK_LEVELS = " .:-=+*#%@"  # from paper (0.0) to full ink (1.0), for the picture the model saw


def mnist_test_digits(data_dir: str, transform) -> Dataset:
    """MNIST's 10,000 test digits, downloaded into data_dir if needed; or, when that fails, the 300 that ship here."""
    try:
        return mnist_dataset(data_dir, train=False, transform=transform)
    except MnistUnavailable:
        shipped = mnist_dataset(SHIPPED_DIGITS, train=False, transform=transform)
        print(
            f"note: MNIST is not in {Path(data_dir) / 'MNIST' / 'raw'} and could not be downloaded: sending one of "
            f"the {len(shipped)} MNIST test digits that ship in {os.path.relpath(SHIPPED_DIGITS)}",
            file=sys.stderr,
        )
        return shipped


def predict_url(url: str, endpoint: str = "/predict") -> str:
    """The endpoint's URL from what people type: a base URL, one with a path prefix, or a bare host:port.

    localhost:8000 -> http://localhost:8000/predict; https://h/d4/ -> https://h/d4/predict;
    http://h:8000/?k=1 -> http://h:8000/predict?k=1; a URL already ending in /predict is kept.
    Raises ValueError for a URL that is not http(s), has no host, or has a host that cannot be one.
    """
    if "://" not in url:
        url = f"http://{url}"  # a bare host:port, as uvicorn prints it without the scheme
    parts = urlsplit(url)
    example = "give one such as http://127.0.0.1:8000 or https://YOUR-SERVICE.onrender.com"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--url {url!r} is not an http:// or https:// address with a host; {example}")
    if not HOST_NAME.fullmatch(parts.hostname) and ":" not in parts.hostname:
        raise ValueError(f"--url {url!r} is not a web address: {parts.hostname!r} cannot be a host name; {example}")
    try:
        parts.port  # noqa: B018 (reading it checks it)
    except ValueError:
        raise ValueError(f"--url {url!r} has a port that is not a number from 0 to 65535; {example}") from None
    path = parts.path.rstrip("/")
    for known in ("/predict/image", "/predict"):
        path = path.removesuffix(known)
    return urlunsplit(parts._replace(path=path + endpoint))


@contextmanager
def one_line_errors(url: str, timeout: float) -> Iterator[None]:
    """Turn what `requests` raises into SystemExit with one line that names the real problem."""
    try:
        yield
    except requests.exceptions.SSLError:
        plain = urlunsplit(urlsplit(url)._replace(scheme="http"))
        raise SystemExit(
            f"error: {url} does not answer HTTPS: a local uvicorn serves plain http, try --url {plain}"
        ) from None
    except requests.exceptions.Timeout:
        raise SystemExit(
            f"error: no answer from {url} within {timeout:g} s (a sleeping Render instance can take a minute to "
            "wake; try again or raise --timeout)"
        ) from None
    except requests.exceptions.ConnectionError:
        raise SystemExit(
            f"error: cannot reach {url}: is the server running? Start it with `uvicorn d4_api_mnist:app`"
        ) from None
    except requests.exceptions.RequestException as error:
        raise SystemExit(f"error: cannot call {url} ({type(error).__name__})") from None


def checked(r: requests.Response, typed: str) -> requests.Response:
    """The response, if it is a JSON answer; otherwise exit with one line saying what came back and why."""
    if r.status_code == 404:
        endpoint = "/predict/image" if urlsplit(r.url).path.endswith("/predict/image") else "/predict"
        raise SystemExit(
            f"error: {r.url} answered HTTP 404 (not found): the client adds {endpoint} to --url {typed!r}, and "
            "the server has no such path; give the server's base URL, such as http://127.0.0.1:8000"
        )
    if not r.ok:
        try:
            reason = r.json()["message"]  # the API's own one-sentence reason
        except (ValueError, KeyError, TypeError):
            reason = r.text[:300]
        raise SystemExit(f"error: {r.url} answered HTTP {r.status_code}: {reason}")
    try:
        r.json()
    except ValueError:
        raise SystemExit(f"error: {r.url} answered something that is not JSON: {r.text[:300]}") from None
    return r


def readable(answer: dict) -> str:
    """The answer as JSON with its probabilities rounded to 4 places, for reading; --json shows it unrounded."""
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
