"""The client script against a real uvicorn server on a loopback port, and against failures."""

import json
import socket
import threading

import pytest
import requests

from conftest import FIXTURE_MNIST, run_script, script_env, uvicorn_server


@pytest.fixture(scope="module")
def server_url():
    with uvicorn_server() as url:
        yield url


def run_client(*args: str, **env: str):
    return run_script("d4_test_api.py", "--data-dir", str(FIXTURE_MNIST), *args, env=script_env(**env), timeout=120)


def test_client_posts_test_digit_0_and_prints_the_answer(server_url):
    result = run_client("--url", f"{server_url}/predict")
    assert result.returncode == 0, result.stderr
    actual_line, json_line = result.stdout.strip().splitlines()
    assert actual_line == "actual: 7"
    answer = json.loads(json_line)
    assert answer["predicted_digit"] == 7
    assert len(answer["probabilities"]) == 10


def test_client_takes_base_url_from_env_and_another_index(server_url):
    result = run_client("--index", "1", D4_API_URL=server_url)  # test digit 1 is a 2
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("actual: 2\n")
    assert json.loads(result.stdout.splitlines()[1])["predicted_digit"] == 2


def test_client_reports_an_error_answer_in_one_line(server_url):
    result = run_client("--url", f"{server_url}/no-such-prefix")  # a prefix this server does not have
    assert result.returncode == 1
    not_found = '{"message":"Not Found","detail":"Not Found"}'
    assert result.stderr.strip() == f"error: {server_url}/no-such-prefix/predict answered HTTP 404: {not_found}"


def test_client_reports_a_server_that_is_down(tmp_path):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    result = run_client("--url", url)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"error: cannot reach {url}/predict: is the server running?")
    assert "Traceback" not in result.stderr


def test_client_reports_a_server_too_slow_to_answer():
    listener = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/predict"
        result = run_client("--url", url, "--timeout", "1")
    finally:
        listener.close()
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"error: no answer from {url} within 1 s")
    assert "Traceback" not in result.stderr


def test_client_refuses_an_index_out_of_range(server_url):
    result = run_client("--url", server_url, "--index", "10000")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: --index must be between 0 and 299"


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/predict", "application/json"),
        ("/predict/batch", "application/json"),
        ("/predict/image", "multipart/form-data; boundary=x"),
    ],
)
def test_a_huge_declared_body_is_refused_before_it_is_read(server_url, path, content_type):
    port = int(server_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # Declare 100 MB but send only a few bytes: the answer must not wait for the rest.
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                     "Content-Length: 100000000\r\n\r\n{".encode())  # fmt: skip
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413") and b"content-type: application/json" in answer
    assert requests.get(f"{server_url}/healthz", timeout=5).status_code == 200


def test_cors_origins_are_configurable():
    with uvicorn_server(D4_CORS_ORIGINS="https://digits.example") as url:
        preflight = {"Origin": "https://digits.example", "Access-Control-Request-Method": "POST"}
        allowed = requests.options(f"{url}/predict", headers=preflight, timeout=5)
        other = requests.options(f"{url}/predict", headers={**preflight, "Origin": "https://evil.example"}, timeout=5)
    assert allowed.headers.get("access-control-allow-origin") == "https://digits.example"
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize(
    ("typed", "posted_to"),
    [
        ("localhost:8000", "http://localhost:8000/predict"),
        ("127.0.0.1:8000/", "http://127.0.0.1:8000/predict"),
        ("http://h:8000/?k=1", "http://h:8000/predict?k=1"),
        ("https://example.org/d4/", "https://example.org/d4/predict"),
        ("https://example.org/d4/predict", "https://example.org/d4/predict"),
        ("https://example.org/d4/predict/", "https://example.org/d4/predict"),
    ],
)
def test_client_builds_the_predict_url_from_what_people_type(typed, posted_to):
    from d4_test_api import predict_url

    assert predict_url(typed) == posted_to


def test_client_takes_a_bare_host_and_port_and_a_query(server_url):
    bare = server_url.removeprefix("http://")
    for url in (bare, f"{server_url}/?k=1"):
        result = run_client("--url", url)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout.splitlines()[1])["predicted_digit"] == 7


def test_client_refuses_a_url_it_cannot_use_in_one_line():
    result = run_client("--url", "ftp://example.org/")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: --url 'ftp://example.org/' is not an http:// or https:// address with a host, "
        "such as http://127.0.0.1:8000"
    )
