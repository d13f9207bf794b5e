"""SIGTERM, as Render sends on every deploy: requests in flight finish, then the server exits."""

import contextlib
import itertools
import signal
import socket
import threading
import time
from collections import Counter

import requests
import yaml
from test_request_bodies import answer_is_whole

from conftest import REPO, drawn, encode, uvicorn_process

BLANK = [[0.0] * 28 for _ in range(28)]


def raw_request(url: str, **kwargs) -> bytes:
    """The bytes of one HTTP/1.1 POST, as requests would send them."""
    prepared = requests.Request("POST", url, **kwargs).prepare()
    head = "".join(f"{name}: {value}\r\n" for name, value in prepared.headers.items())
    return f"POST {prepared.path_url} HTTP/1.1\r\nHost: test\r\n{head}\r\n".encode() + prepared.body


def start_slow_upload(port: int, request: bytes) -> socket.socket:
    """A connection the server has accepted, holding a request whose last bytes are still to come."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
    health = b""
    while not health.endswith(b'{"status":"ok"}'):  # accepted and served: the connection is live
        chunk = connection.recv(4096)
        assert chunk, "the server closed the connection"
        health += chunk
    connection.sendall(request[:-10])
    return connection


def finish(connection: socket.socket, request: bytes) -> bytes:
    connection.sendall(request[-10:])
    answer = b""
    while chunk := connection.recv(65536):  # the server closes the connection after answering
        answer += chunk
    connection.close()
    return answer


def wait_until_refused(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return
        time.sleep(0.05)
    raise AssertionError("the server still accepts new connections after SIGTERM")


def test_requests_in_flight_at_sigterm_are_answered_before_the_server_exits():
    with uvicorn_process() as (url, process):
        port = int(url.rsplit(":", 1)[1])
        requests_in_flight = [
            raw_request(f"{url}/predict", json={"pixels": BLANK}),
            raw_request(f"{url}/predict/batch", json={"images": [BLANK] * 3}),
            raw_request(
                f"{url}/predict/image", files={"file": ("seven.png", encode(drawn(7), "PNG"))}
            ),
        ]
        connections = [start_slow_upload(port, request) for request in requests_in_flight]
        time.sleep(0.3)  # let the server read what was sent
        process.send_signal(signal.SIGTERM)
        wait_until_refused(port)  # shutting down: no new connections...
        answers = [finish(c, r) for c, r in zip(connections, requests_in_flight, strict=True)]
        # ...and an exit once they are answered (uvicorn re-raises SIGTERM after its shutdown)
        assert process.wait(timeout=30) == -signal.SIGTERM
    assert [answer.split(b"\r\n")[0] for answer in answers] == [b"HTTP/1.1 200 OK"] * 3
    assert b'"predicted_digit":7' in answers[2]
    log = process.stdout.read()
    assert "Finished server process" in log and "Traceback" not in log


def test_a_stalled_client_cannot_hold_the_shutdown_past_the_graceful_timeout():
    with uvicorn_process(UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN="2") as (url, process):
        port = int(url.rsplit(":", 1)[1])
        stalled = start_slow_upload(port, raw_request(f"{url}/predict", json={"pixels": BLANK}))
        time.sleep(0.3)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        stopped_after = time.monotonic() - started
        stalled.close()
    assert 1.5 < stopped_after < 10
    assert "timeout graceful shutdown exceeded" in process.stdout.read()


def test_render_gives_in_flight_requests_time_before_its_own_kill():
    service = yaml.safe_load((REPO / "render.yaml").read_text())["services"][0]
    env = {item["key"]: item["value"] for item in service["envVars"]}
    # uvicorn reads UVICORN_* variables as its flags; Render sends SIGKILL 30 s after SIGTERM by default.
    assert (
        0
        < int(env["UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN"])
        < service.get("maxShutdownDelaySeconds", 30)
    )


def test_once_the_inference_thread_stops_healthz_and_predict_answer_503_at_once():
    from fastapi.testclient import TestClient

    from d4_api_mnist import app

    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        client.app_state["predictor"].stop()
        health = client.get("/healthz")
        assert health.status_code == 503 and "inference thread" in health.json()["status"]
        answer = client.post("/predict", json={"pixels": BLANK})
        assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
        assert answer.json()["message"] == "the server is shutting down; try again in a few seconds"
        assert (
            client.post(
                "/predict/image", files={"file": ("d.png", encode(drawn(3), "PNG"))}
            ).status_code
            == 503
        )


def read_answer(connection: socket.socket) -> tuple[bytes, bool]:
    """Read one HTTP answer: (its bytes, whether it came whole). Empty when the server closed without answering."""
    answer = b""
    with contextlib.suppress(OSError):  # a reset connection is one the server closed
        while not answer_is_whole(answer) and (chunk := connection.recv(65536)):
            answer += chunk
    return answer, answer_is_whole(answer)


def keep_asking(
    port: int, requests_to_send: list[bytes], outcomes: Counter, answers: list[bytes]
) -> None:
    """A client on keep-alive connections that sends requests in turn until the server refuses to connect."""
    connection = None
    for request in itertools.cycle(requests_to_send):
        if connection is None:
            try:
                connection = socket.create_connection(("127.0.0.1", port), timeout=30)
            except ConnectionRefusedError:
                outcomes["connection refused"] += 1
                return
        with contextlib.suppress(OSError):
            connection.sendall(request)
        answer, whole = read_answer(connection)
        if whole:
            answers.append(answer)
        outcomes["whole answer" if whole else "cut off" if answer else "closed unanswered"] += 1
        if not whole or b"connection: close" in answer.lower():
            connection.close()
            connection = None


def test_at_sigterm_with_8_clients_every_request_the_server_took_gets_its_whole_answer():
    with uvicorn_process() as (url, process):
        port = int(url.rsplit(":", 1)[1])
        large = drawn(7, "RGBA", (0, 0, 0, 0), (0, 0, 0, 255)).resize(
            (4096, 4096)
        )  # decoded in ~0.3 s: a queue forms
        work = [
            raw_request(f"{url}/predict", json={"pixels": BLANK}),
            raw_request(
                f"{url}/predict/image", files={"file": ("seven.png", encode(drawn(7), "PNG"))}
            ),
            raw_request(
                f"{url}/predict/image", files={"file": ("large.png", encode(large, "PNG"))}
            ),
        ]
        outcomes, answers = Counter(), []
        clients = [
            threading.Thread(target=keep_asking, args=(port, work, outcomes, answers))
            for _ in range(8)
        ]
        for client in clients:
            client.start()
        time.sleep(2)
        process.send_signal(signal.SIGTERM)
        for client in clients:
            client.join(timeout=60)
        assert process.wait(timeout=30) == -signal.SIGTERM
    log = process.stdout.read()
    # Uvicorn stops accepting, and closes the connections idle between requests: those clients get
    # no HTTP answer at all (a refused or closed connection), never a part of one.
    assert outcomes["connection refused"] == 8 and outcomes["cut off"] == 0
    # Every answer the server began (its access log) came whole; none of the requests it took was abandoned.
    assert log.count('"POST /predict') == outcomes["whole answer"] == len(answers)
    assert "timeout graceful shutdown exceeded" not in log and "Traceback" not in log
    # The requests in flight at SIGTERM, queued pictures too, are answered, then their connections closed.
    assert sum(b"connection: close" in answer.lower() for answer in answers) >= 2
    assert all(
        answer.startswith(b"HTTP/1.1 200 ") for answer in answers
    )  # no 503: the model stops last
