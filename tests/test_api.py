"""The API in-process (FastAPI's TestClient) with the shipped d4_cnn.pt, and its start-up failures."""

import gc
import json
import math

import pytest
import torch

from conftest import SHIPPED_WEIGHTS, run_script, script_env
from d4.limits import MAX_BATCH_BODY_BYTES, MAX_BODY_BYTES
from d4.model import to_model_input

BLANK = [[0.0] * 28 for _ in range(28)]


def test_root_says_what_it_is(client):
    response = client.get("/")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True and "digit" in body["demo"] and body["endpoint"] == "/predict"
    assert body["ui"] == "/draw" and client.get(body["ui"]).headers["content-type"].startswith(
        "text/html"
    )


def test_root_gives_a_browser_a_page_with_links_on_and_programs_the_notes_json(client):
    page = client.get(
        "/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    )  # as Chromium asks
    assert page.headers["content-type"].startswith("text/html")
    for link in ("/draw", "/docs", "/model"):
        assert f'href="{link}"' in page.text
    for accept in (
        "*/*",
        "application/json",
    ):  # requests' and the notes' client, curl; a JSON client
        answer = client.get("/", headers={"Accept": accept})
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["ok"] is True and answer.json()["endpoint"] == "/predict"


def test_other_http_errors_come_in_the_same_json_shape(client):
    assert client.get("/no-such-page").json() == {"message": "Not Found", "detail": "Not Found"}
    wrong_method = client.get("/predict")
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {"message": "Method Not Allowed", "detail": "Method Not Allowed"}
    assert wrong_method.headers["allow"] == "POST"


def test_healthz_answers_once_the_model_is_loaded(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_docs_show_the_models_with_an_example(client):
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert len(schema["DigitPixels"]["examples"][0]["pixels"]) == 28
    assert set(schema["Prediction"]["properties"]) == {
        "predicted_digit",
        "confidence",
        "probabilities",
        "explanation",
    }
    assert set(schema["Prediction"]["required"]) == {
        "predicted_digit",
        "confidence",
        "probabilities",
    }
    assert {"ModelCard", "Explanation"} <= set(schema)


def test_predict_answers_digit_confidence_and_probabilities(client, fixture_test_digits):
    images, labels = fixture_test_digits
    response = client.post("/predict", json={"pixels": to_model_input(images[:1])[0, 0].tolist()})
    assert response.status_code == 200
    body = response.json()
    assert body["predicted_digit"] == labels[0].item() == 7
    assert len(body["probabilities"]) == 10
    assert math.isclose(sum(body["probabilities"]), 1.0, rel_tol=1e-5)
    assert body["confidence"] == max(body["probabilities"]) == body["probabilities"][7]


def test_shipped_weights_classify_fixture_digits_through_the_api(client, fixture_test_digits):
    images, labels = fixture_test_digits
    pixels = to_model_input(images)
    correct = sum(
        client.post("/predict", json={"pixels": pixels[i, 0].tolist()}).json()["predicted_digit"]
        == labels[i].item()
        for i in range(len(labels))
    )
    assert correct / len(labels) >= 0.97


def with_pixel(value) -> list:
    rows = [row[:] for row in BLANK]
    rows[3][5] = value
    return rows


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"pixels": BLANK[:27]}, "pixels"),  # 27 rows
        ({"pixels": [row[:27] for row in BLANK]}, "pixels[0]"),  # 27 columns
        ({"pixels": [[0.0] * 784]}, "pixels"),  # flat 1x784
        ({"pixels": [BLANK]}, "pixels"),  # 3-D
        ({"pixels": BLANK[:27] + [[0.0] * 29]}, "pixels"),  # ragged
        ({"pixels": with_pixel(1.5)}, "pixels[3][5]"),
        ({"pixels": with_pixel(-0.1)}, "pixels[3][5]"),
        ({"pixels": with_pixel(1e308)}, "pixels[3][5]"),
        ({"pixels": with_pixel("0.5")}, "pixels[3][5]"),
        ({"pixels": with_pixel(None)}, "pixels[3][5]"),
        ({"pixels": with_pixel(True)}, "pixels[3][5]"),
        ({"pixels": "0" * 784}, "pixels"),
        ({}, "pixels"),
        ({"pixels": BLANK, "extra": 1}, "extra"),
    ],
)
def test_bad_pixels_get_422_saying_where_and_what(client, body, where):
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    message = response.json()["message"]
    assert message.startswith(f"{where}: ") or message.startswith(f"{where}[")


@pytest.mark.parametrize("key", ["<img src=x onerror=alert(1)>", "a" * 200, "pix els"])
def test_an_unexpected_field_with_an_unsafe_name_is_not_echoed(client, key):
    answer = client.post("/predict", json={"pixels": BLANK, key: 1})
    assert answer.status_code == 422
    assert key not in answer.text and "<" not in answer.text
    assert (
        answer.json()["message"]
        == "(a field whose name is not shown): Extra inputs are not permitted"
    )


def test_an_unexpected_field_with_a_plain_name_is_named(client):
    answer = client.post("/predict", json={"pixels": BLANK, "pixel": 1})
    assert answer.json()["message"] == "pixel: Extra inputs are not permitted"


@pytest.mark.parametrize(
    "body",
    [
        {"pixels": [[0.0] * 28] * 27 + [[0.0] * 27 + [987654.321]]},  # a number out of range
        {
            "pixels": [[0.0] * 28] * 27 + [[0.0] * 27 + ["SECRET-0xC0FFEE"]]
        },  # a string where a number goes
        {"pixels": "SECRET-0xC0FFEE"},
        {"pixels": [[0.0] * 28] * 28, "note": "SECRET-0xC0FFEE"},  # an unexpected field's value
    ],
)
def test_a_422_never_echoes_the_values_sent(client, body):
    answer = client.post("/predict", json=body)
    assert answer.status_code == 422
    assert "SECRET" not in answer.text and "987654" not in answer.text
    assert all("input" not in problem for problem in answer.json()["detail"])


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_pixels_get_422(client, value):
    body = json.dumps({"pixels": with_pixel(0.0)}).replace("0.0", value, 1)
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "finite" in response.json()["message"]


def test_body_that_is_not_json_gets_422(client):
    response = client.post(
        "/predict", content=b"{pixels: oops", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "JSON" in response.json()["message"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"pixels": [[0.5, 0.5', "EOF while parsing a list at line 1 column 21"),
        (b'{"pixels": "\xff"}', "invalid unicode code point at line 1 column 13"),
        (b"[" * 5000, "recursion limit exceeded"),
    ],
)
def test_unparsable_json_gets_422_with_the_parsers_reason(client, body, reason):
    for path in ["/predict", "/predict/batch"]:
        response = client.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422
        assert response.json()["message"].startswith(f"request body is not valid JSON: {reason}")
        assert response.json()["detail"][0]["type"] == "json_invalid"


def test_body_that_is_not_a_json_object_gets_422_saying_what_to_send(client):
    response = client.post(
        "/predict", content=b"pixels=0.5", headers={"content-type": "text/plain"}
    )
    assert response.status_code == 422
    assert 'send JSON {"pixels"' in response.json()["message"]


def test_body_over_the_limit_gets_413_and_the_server_keeps_serving(client):
    too_big = b'{"pixels": "' + b"0" * MAX_BODY_BYTES + b'"}'
    response = client.post(
        "/predict", content=too_big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert (
        response.json()["message"]
        == "the request body is too large: /predict accepts at most 1 MiB"
    )
    assert client.post("/predict", json={"pixels": BLANK}).status_code == 200


def test_batch_body_over_its_limit_gets_413_naming_the_limit(client):
    response = client.post("/predict/batch", content=b" " * (MAX_BATCH_BODY_BYTES + 1))
    assert (
        response.status_code == 413
        and "/predict/batch accepts at most 8 MiB" in response.json()["message"]
    )


def test_cross_origin_requests_are_not_allowed_by_default(client):
    headers = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"}
    response = client.options("/predict", headers=headers)
    assert "access-control-allow-origin" not in response.headers


def test_server_keeps_serving_after_bad_input(client):
    client.post("/predict", json={"pixels": "nope"})
    assert client.post("/predict", json={"pixels": BLANK}).status_code == 200


@pytest.mark.parametrize(
    ("make_file", "reason"),
    [
        (lambda path: None, "not found"),
        (lambda path: path.write_bytes(SHIPPED_WEIGHTS.read_bytes()[:5000]), "could not be read"),
        (
            lambda path: torch.save({"weight": torch.zeros(3)}, path),
            "does not hold TinyCNN weights",
        ),
    ],
)
def test_bad_weights_stop_start_up_with_one_clear_line(tmp_path, make_file, reason):
    path = tmp_path / "weights.pt"
    make_file(path)
    result = run_script(
        "-m",
        "uvicorn",
        "d4_api_mnist:app",
        "--port",
        "0",
        env=script_env(D4_MODEL_PATH=str(path)),
        timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert (
        str(path) in errors[0]
        and reason in errors[0]
        and "python d4_tiny_cnn_mnist.py" in errors[0]
    )


def test_start_up_objects_are_frozen_out_of_garbage_collection(client):
    # Without gc.freeze() each full collection walked them all: ~80 ms stalls under load.
    assert gc.get_freeze_count() > 100_000
