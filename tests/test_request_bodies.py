"""Request bodies as real clients send them, on a real uvicorn: streamed with no declared size, and multipart
uploads with text after their closing boundary."""

import contextlib
import json
import socket
from urllib.parse import urlsplit

import pytest
import requests

from conftest import drawn, encode, uvicorn_server
from d4.limits import MAX_BATCH_BODY_BYTES, MAX_BODY_BYTES, MAX_UPLOAD_BYTES

CHUNK = 64 * 1024
PART_HEAD = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'


@pytest.fixture(scope="module")
def server_url():
    with uvicorn_server() as url:
        yield url


def answer_is_whole(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    lengths = [
        line.split(b":")[1]
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length")
    ]
    return bool(lengths) and len(body) >= int(lengths[0])


def post_chunked(
    url: str, path: str, content_type: str, start: bytes, size: int
) -> tuple[int, dict]:
    """POST `start`, then `size` bytes more, in chunks with no Content-Length, as a client streaming a body does.

    Returns the answer's status and JSON body.
    """
    with socket.create_connection(("127.0.0.1", urlsplit(url).port), timeout=10) as connection:
        head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked"
        connection.sendall(head.encode() + b"\r\n\r\n" + b"%x\r\n%s\r\n" % (len(start), start))
        with contextlib.suppress(OSError):  # the server may answer and close before the body ends
            for _ in range(0, size, CHUNK):
                connection.sendall(b"%x\r\n%s\r\n" % (CHUNK, b"x" * CHUNK))
            connection.sendall(b"0\r\n\r\n")
        answer = b""
        with contextlib.suppress(OSError):
            while not answer_is_whole(answer) and (data := connection.recv(65536)):
                answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize(
    ("path", "content_type", "start", "limit", "named"),
    [
        ("/predict", "application/json", b'{"pixels": "', MAX_BODY_BYTES, "1 MiB"),
        ("/predict/batch", "application/json", b'{"images": "', MAX_BATCH_BODY_BYTES, "8 MiB"),
        ("/predict/image", "multipart/form-data; boundary=b", PART_HEAD, MAX_UPLOAD_BYTES, "5 MiB"),
    ],
)
def test_a_streamed_body_over_the_limit_gets_413_naming_it(
    server_url, path, content_type, start, limit, named
):
    status, problem = post_chunked(server_url, path, content_type, start, limit)
    assert status == 413
    assert problem["message"] == f"the request body is too large: {path} accepts at most {named}"


def test_a_streamed_body_within_the_limit_is_answered(server_url):
    upload = requests.Request(
        "POST", server_url, files={"file": ("seven.png", encode(drawn(7), "PNG"))}
    ).prepare()
    answer = requests.post(
        f"{server_url}/predict/image",
        data=iter(
            [upload.body[:100], upload.body[100:]]
        ),  # a generator: sent chunked, with no Content-Length
        headers={"Content-Type": upload.headers["Content-Type"]},
        timeout=30,
    )
    assert answer.request.headers.get("Transfer-Encoding") == "chunked"
    assert answer.status_code == 200 and answer.json()["predicted_digit"] == 7


def test_an_upload_with_an_epilogue_after_its_closing_boundary_is_read(server_url):
    upload = requests.Request(
        "POST", server_url, files={"file": ("three.png", encode(drawn(3), "PNG"))}
    ).prepare()
    body = upload.body + b"\r\nAn epilogue: RFC 2046 lets text follow the closing boundary.\r\n"
    headers = {"Content-Type": upload.headers["Content-Type"]}
    answer = requests.post(f"{server_url}/predict/image", data=body, headers=headers, timeout=30)
    assert answer.status_code == 200 and answer.json()["predicted_digit"] == 3
