"""The D4 Tiny CNN client: send an MNIST test digit, or a picture of your own, to the API.

    python d4_test_api.py                                     # a local server, test digit 0
    python d4_test_api.py --url https://YOUR-SERVICE.onrender.com --index 42
    python d4_test_api.py --image my_digit.png                # a photo or drawing of your own

The steps are the course notes' (section 4.3), in their order and under their names; a line
that does a step differently says which line of the notes it replaces and why.
"""

import argparse
import os
import sys
from pathlib import Path

import requests

from d4.client import (
    as_text,
    call_options,
    calling,
    checked,
    how_sure,
    mnist_test_digits,
    predict_url,
    readable,
    verdict,
)

DEFAULT_URL = "http://127.0.0.1:8000"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Post an MNIST test digit, or your own picture, to the D4 API.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("D4_API_URL", DEFAULT_URL),
        help="the API's base or /predict URL: localhost:8000, https://host/prefix (env D4_API_URL)",
    )
    parser.add_argument(
        "--index",
        type=int,
        default=0,
        help="which test image to send: 0-9999, or 0-299 of those shipped here",
    )
    parser.add_argument(
        "--image", type=Path, help="send this picture of a digit (PNG, JPEG, ...) instead"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the answer exactly as it came: JSON, for programs",
    )
    parser.add_argument(
        "--data-dir", default="data", help="MNIST root: MNIST/raw/ is read or downloaded here"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=90,
        help="seconds for the whole call; a sleeping Render instance takes ~1 min to wake",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        url = predict_url(args.url)  # the notes post to a fixed URL; this one is built from --url
    except ValueError as error:
        sys.exit(f"error: {error}")
    if args.image:
        send_picture(args, predict_url(args.url, "/predict/image"))
        return
    # The notes import torchvision first; here only once --url is known to be usable: it takes
    # seconds to load, and a mistyped --url should fail at once.
    from torchvision import transforms

    # The notes' datasets.MNIST(root="data", train=False, download=True, transform=...);
    # without MNIST and without network, the test digits that ship in this repository.
    test_data = mnist_test_digits(args.data_dir, transform=transforms.ToTensor())
    if not 0 <= args.index < len(test_data):
        sys.exit(f"error: --index must be between 0 and {len(test_data) - 1}")
    X, Y = test_data[args.index]
    payload = {"pixels": X.squeeze().tolist()}
    # The notes' r = requests.post(url, json=payload), with limits so that no server can hang or
    # flood the client (d4/client.py): --timeout for the whole call, at most 1 MiB of answer, and
    # that answer checked to be a prediction; anything else ends the client with one error line.
    with calling(url, args.timeout):
        r = requests.post(url, json=payload, **call_options(args.timeout))
        checked(r, args.url)
    print("actual:", Y)
    if args.json:  # not in the notes: the answer exactly as it came, for another program to read
        print(r.text)
        return
    print(r.json())
    print(verdict(r.json(), Y))  # not in the notes: was the model right, and how sure was it


def send_picture(args: argparse.Namespace, url: str) -> None:
    """Not in the notes: send --image to /predict/image, print what the model saw and read."""
    try:
        upload = {"file": (args.image.name, args.image.read_bytes())}
    except OSError as error:
        sys.exit(f"error: cannot read --image {args.image}: {error.strerror}")
    with calling(url, args.timeout):
        # return_input: the answer also holds the 28x28 the model saw, which is printed below.
        return_input = {"return_input": "true"}
        r = requests.post(url, params=return_input, files=upload, **call_options(args.timeout))
        checked(r, args.url, with_input=True)
    if args.json:
        print(r.text)
        return
    answer = r.json()
    print(f"the model saw ({args.image.name} prepared as MNIST's 28x28):")
    print(as_text(answer.pop("input")))
    print(readable(answer))
    print(f"the model reads {answer['predicted_digit']}, {how_sure(answer['confidence'])} sure")


if __name__ == "__main__":
    main()
