"""D4 Tiny CNN's client: send one MNIST test digit (or a picture of your own) to the API and print the answer.

    python d4_test_api.py                                     # a local server, test digit 0
    python d4_test_api.py --url https://YOUR-SERVICE.onrender.com --index 42
    python d4_test_api.py --image my_digit.png                # a photo or drawing of your own digit

The steps are the course notes' (section 4.3), in their order and under their names; a line
that does a step differently says which line of the notes it replaces and why.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import requests
from torchvision import transforms

from d4.client import as_text, checked, how_sure, mnist_test_digits, one_line_errors, predict_url, readable, verdict

DEFAULT_URL = "http://127.0.0.1:8000"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Post an MNIST test digit (or your own picture) to the D4 API and print its answer.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("D4_API_URL", DEFAULT_URL),
        help="the API's base URL or its /predict URL, e.g. localhost:8000 or https://host/prefix (env D4_API_URL)",
    )
    parser.add_argument(
        "--index", type=int, default=0, help="which test image to send: 0-9999, or 0-299 of those shipped here"
    )
    parser.add_argument("--image", type=Path, help="send this picture of a digit (PNG, JPEG, ...) instead")
    parser.add_argument("--json", action="store_true", help="print the API's answer exactly as it came")
    parser.add_argument("--data-dir", default="data", help="MNIST root: MNIST/raw/ is read or downloaded here")
    parser.add_argument(
        "--timeout", type=float, default=90, help="seconds to wait; a sleeping Render instance takes ~1 min to wake"
    )
    return parser.parse_args(argv)


def send_picture(path: Path, url: str, typed: str, timeout: float, raw: bool) -> None:
    """Not in the notes: POST a picture to /predict/image and print the digit and the 28x28 the model saw."""
    try:
        picture = path.read_bytes()
    except OSError as error:
        sys.exit(f"error: cannot read --image {path}: {error.strerror}")
    with one_line_errors(url, timeout):
        # return_input: the answer also holds the 28x28 the model saw, which is printed below.
        r = checked(requests.post(url, params={"return_input": "true"}, files={"file": (path.name, picture)},
                                  timeout=timeout), typed)  # fmt: skip
    answer = r.json()
    if raw:
        print(json.dumps(answer))
        return
    print(f"the model saw ({path.name} prepared as MNIST's 28x28):")
    print(as_text(answer.pop("input")))
    print(readable(answer))
    print(f"the model reads {answer['predicted_digit']}, {how_sure(answer['confidence'])} sure")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        url = predict_url(args.url)  # the notes post to a fixed URL; this one is built from --url
    except ValueError as error:
        sys.exit(f"error: {error}")
    if args.image:
        send_picture(args.image, predict_url(args.url, "/predict/image"), args.url, args.timeout, args.json)
        return

    # The notes' datasets.MNIST(root="data", train=False, download=True, transform=transforms.ToTensor());
    # without MNIST and without network, the test digits that ship in this repository.
    test_data = mnist_test_digits(args.data_dir, transform=transforms.ToTensor())
    if not 0 <= args.index < len(test_data):
        sys.exit(f"error: --index must be between 0 and {len(test_data) - 1}")
    X, Y = test_data[args.index]
    payload = {"pixels": X.squeeze().tolist()}
    with one_line_errors(url, args.timeout):  # d4/client.py: a server that is down, asleep or not there, in one line
        r = checked(requests.post(url, json=payload, timeout=args.timeout), args.url)
    print("actual:", Y)
    if args.json:
        print(json.dumps(r.json()))  # the notes' print(r.json()), as JSON
        return
    print(readable(r.json()))  # the notes' print(r.json()), with the probabilities rounded for reading
    print(verdict(r.json(), Y))


if __name__ == "__main__":
    main()
