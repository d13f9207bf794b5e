"""Send one MNIST test digit to the D4 API and print what it answers.

python d4_test_api.py                                      # local server, test image 0
python d4_test_api.py --url https://YOUR-SERVICE.onrender.com --index 42
"""

import argparse
import json
import os
import sys
from urllib.parse import urlsplit, urlunsplit

import requests

from d4.data import MnistUnavailable, load_mnist
from d4.model import to_model_input

DEFAULT_URL = "http://127.0.0.1:8000/predict"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Post an MNIST test digit to the D4 API and print its answer.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("D4_API_URL", DEFAULT_URL),
        help="the API's /predict URL or its base URL, e.g. localhost:8000 or https://host/prefix (env D4_API_URL)",
    )
    parser.add_argument("--index", type=int, default=0, help="which of the 10,000 test images to send")
    parser.add_argument("--data-dir", default="data", help="MNIST root: MNIST/raw/ is read or downloaded here")
    parser.add_argument(
        "--timeout", type=float, default=90, help="seconds to wait; a sleeping Render instance takes ~1 min to wake"
    )
    return parser.parse_args(argv)


def predict_url(url: str) -> str:
    """The /predict URL from what people type: a base URL, one with a path prefix, or a bare host:port.

    localhost:8000 -> http://localhost:8000/predict; https://h/d4/ -> https://h/d4/predict;
    http://h:8000/?k=1 -> http://h:8000/predict?k=1; a URL already ending in /predict is kept.
    Raises ValueError for a URL that is not http(s) or has no host.
    """
    if "://" not in url:
        url = f"http://{url}"  # a bare host:port, as uvicorn prints it without the scheme
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"--url {url!r} is not an http:// or https:// address with a host, such as http://127.0.0.1:8000"
        )
    path = parts.path.rstrip("/")
    if not path.endswith("/predict"):
        path += "/predict"
    return urlunsplit(parts._replace(path=path))


def post_digit(url: str, pixels: list[list[float]], timeout: float) -> dict:
    """POST the pixels; raise RuntimeError with a one-line reason when there is no usable answer."""
    try:
        response = requests.post(url, json={"pixels": pixels}, timeout=timeout)
    except requests.exceptions.Timeout:
        raise RuntimeError(
            f"no answer from {url} within {timeout:g} s (a sleeping Render instance can take a minute to wake; "
            "try again or raise --timeout)"
        ) from None
    except requests.exceptions.RequestException as error:
        raise RuntimeError(f"cannot reach {url}: is the server running? ({type(error).__name__})") from None
    if not response.ok:
        raise RuntimeError(f"{url} answered HTTP {response.status_code}: {response.text[:300]}")
    try:
        return response.json()
    except ValueError:
        raise RuntimeError(f"{url} answered something that is not JSON: {response.text[:300]}") from None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        url = predict_url(args.url)
        images, labels = load_mnist(args.data_dir, train=False)
    except (ValueError, MnistUnavailable) as error:
        sys.exit(f"error: {error}")
    if not 0 <= args.index < len(labels):
        sys.exit(f"error: --index must be between 0 and {len(labels) - 1}")

    pixels = to_model_input(images[args.index : args.index + 1])[0, 0].tolist()
    try:
        answer = post_digit(url, pixels, args.timeout)
    except RuntimeError as error:
        sys.exit(f"error: {error}")
    print(f"actual: {labels[args.index].item()}")
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
