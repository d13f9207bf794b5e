"""The client script against a real uvicorn server on a loopback port.

tests/test_client.py runs it against servers that misbehave, and addresses it cannot use.
"""

import ast
import json
import re
import socket

import pytest
import requests
from PIL import Image, ImageOps

from conftest import FIXTURE_MNIST, drawn, encode, run_script, script_env, uvicorn_server
from d4.model import to_model_input


def says_how_sure(text: str, confidence: float) -> bool:
    """The client's percentage: two decimals, and never 100.00% for a probability under 1."""
    if text == ">99.99%":
        return 0.99995 <= confidence < 1
    return (
        text.endswith("%")
        and abs(float(text[:-1]) - 100 * confidence) <= 0.005
        and text != "100.00%"
        or (text == "100.00%" and confidence == 1)
    )


def asked_directly(server_url: str, images, index: int) -> dict:
    """The API's own answer for a shipped test digit, asked without the client."""
    pixels = to_model_input(images[index : index + 1])[0, 0].tolist()
    return requests.post(f"{server_url}/predict", json={"pixels": pixels}, timeout=10).json()


@pytest.fixture(scope="module")
def server_url():
    with uvicorn_server() as url:
        yield url


def run_client(*args: str, **env: str):
    client = ("d4_test_api.py", "--data-dir", str(FIXTURE_MNIST), *args)
    return run_script(*client, env=script_env(**env), timeout=120)


def test_client_posts_test_digit_0_and_prints_the_answer_as_the_notes_do_and_whether_it_was_right(
    server_url, fixture_test_digits
):
    images, _ = fixture_test_digits
    result = run_client("--url", f"{server_url}/predict")
    assert result.returncode == 0, result.stderr
    actual_line, answer_line, verdict = result.stdout.strip().splitlines()
    assert actual_line == "actual: 7"
    direct = asked_directly(server_url, images, 0)
    assert answer_line == str(direct)  # the notes' print(r.json()): as Python prints a dict
    assert re.fullmatch(r"right: the model reads 7, \S+ sure", verdict)
    assert says_how_sure(verdict.split(", ")[1].removesuffix(" sure"), direct["confidence"])


def test_client_json_prints_the_answer_exactly_as_it_came(server_url, fixture_test_digits):
    images, _ = fixture_test_digits
    result = run_client("--url", server_url, "--json")
    assert result.returncode == 0, result.stderr
    actual_line, answer_line = result.stdout.strip().splitlines()
    assert actual_line == "actual: 7"
    assert json.loads(answer_line) == asked_directly(server_url, images, 0)  # JSON, for a program


def test_client_says_when_the_model_is_wrong(server_url, fixture_test_digits):
    images, labels = fixture_test_digits
    # Find a shipped test digit the shipped model gets wrong through the API, then ask the client.
    for index in range(300):
        answer = asked_directly(server_url, images, index)
        if answer["predicted_digit"] != labels[index]:
            break
    else:
        pytest.skip("the shipped model reads all 300 fixture digits right")
    result = run_client("--url", server_url, "--index", str(index))
    verdict = result.stdout.strip().splitlines()[-1]
    assert verdict.startswith(f"wrong: the model reads {answer['predicted_digit']} (")
    assert verdict.endswith(f"% sure), the digit is {labels[index]}")


def test_client_takes_base_url_from_env_and_another_index(server_url):
    result = run_client("--index", "1", D4_API_URL=server_url)  # test digit 1 is a 2
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("actual: 2\n")
    assert ast.literal_eval(result.stdout.splitlines()[1])["predicted_digit"] == 2


def test_client_without_mnist_or_network_sends_the_shipped_test_digits_and_says_so(
    server_url, tmp_path
):
    refused = "http://127.0.0.1:9"  # nothing listens on port 9: every download fails at once
    proxies = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")
    env = script_env(**dict.fromkeys(proxies, refused))
    env.update(no_proxy="127.0.0.1", NO_PROXY="127.0.0.1")  # the API on loopback is still reached
    data_dir = tmp_path / "data"
    result = run_script("d4_test_api.py", "--url", server_url, "--data-dir", str(data_dir),
                        "--index", "1", env=env, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("actual: 2\n")
    assert result.stdout.strip().splitlines()[-1].startswith("right: the model reads 2")
    assert "note: MNIST is not in" in result.stderr
    assert "300 MNIST test digits that ship in" in result.stderr
    assert "Traceback" not in result.stderr
    assert not data_dir.exists()  # the failed download left nothing behind


@pytest.mark.parametrize("query", ["", "/?k=1"])
def test_client_sends_a_photo_of_your_own_digit_and_shows_what_the_model_saw(
    server_url, tmp_path, query
):
    photo = tmp_path / "my_digit.jpg"
    # A phone photo: warm paper, blue ink, off centre.
    paper = Image.new("RGB", (640, 480), (228, 222, 208))
    paper.paste((40, 40, 90), (300, 150), ImageOps.invert(drawn(4).resize((240, 240))))
    photo.write_bytes(encode(paper, "JPEG", quality=85))
    result = run_client("--url", server_url + query, "--image", str(photo))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "the model saw (my_digit.jpg prepared as MNIST's 28x28):"
    seen = lines[1:29]
    assert all(len(row) == 56 for row in seen) and any(row.strip() for row in seen)
    assert not seen[0].strip() and not seen[-1].strip()  # MNIST's margin: the digit is centred
    answer = json.loads(lines[29])
    assert answer["predicted_digit"] == 4 and "input" not in answer
    assert lines[30].startswith("the model reads 4, ") and lines[30].endswith(" sure")
    assert says_how_sure(lines[30].split(", ")[1].removesuffix(" sure"), answer["confidence"])


def test_client_says_in_one_line_when_the_picture_is_not_a_digit(server_url, tmp_path):
    blank = tmp_path / "blank.png"
    blank.write_bytes(encode(Image.new("L", (200, 200), 255), "PNG"))
    missing = tmp_path / "missing.png"
    for path, reason in [(blank, "HTTP 422: the image is blank"), (missing, "cannot read --image")]:
        result = run_client("--url", server_url, "--image", str(path))
        assert result.returncode == 1
        assert reason in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_client_reports_an_error_answer_in_one_line_that_says_what_it_added(server_url):
    # Paths that this server has no /predict under.
    for typed in (f"{server_url}/no-such-prefix", f"{server_url}/docs"):
        result = run_client("--url", typed)
        assert result.returncode == 1
        assert result.stderr.strip() == (
            f"error: {typed}/predict answered HTTP 404 (not found): the client adds /predict to "
            f"--url {typed!r}, and the server has no such path; give the server's base URL, such "
            "as http://127.0.0.1:8000"
        )


def test_client_says_when_a_plain_http_server_is_called_with_https(server_url):
    https = server_url.replace("http://", "https://")
    result = run_client("--url", https)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: {https}/predict does not answer HTTPS: a local uvicorn serves plain http, "
        f"try --url {server_url}/predict"
    )


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


def test_cors_origins_are_configurable_as_a_comma_separated_list_with_spaces():
    with uvicorn_server(D4_CORS_ORIGINS="https://digits.example, https://b.example") as url:
        preflight = {"Origin": "https://digits.example", "Access-Control-Request-Method": "POST"}
        allowed = [
            requests.options(f"{url}/predict", headers={**preflight, "Origin": origin}, timeout=5)
            for origin in ("https://digits.example", "https://b.example")
        ]
        other = requests.options(
            f"{url}/predict", headers={**preflight, "Origin": "https://evil.example"}, timeout=5
        )
    assert [answer.status_code for answer in allowed] == [200, 200]
    assert allowed[0].headers.get("access-control-allow-origin") == "https://digits.example"
    assert allowed[1].headers.get("access-control-allow-origin") == "https://b.example"
    assert "access-control-allow-origin" not in other.headers


def test_client_takes_a_bare_host_and_port_and_a_query(server_url):
    bare = server_url.removeprefix("http://")
    for url in (bare, f"{server_url}/?k=1"):
        result = run_client("--url", url)
        assert result.returncode == 0, result.stderr
        assert ast.literal_eval(result.stdout.splitlines()[1])["predicted_digit"] == 7
