"""Property-based tests: whatever a client sends, the API answers 2xx or 4xx, as documented."""

import json

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import positive_data_acceptance

from conftest import drawn, encode
from d4.api_models import Prediction
from d4.batch_endpoint import BatchPrediction
from d4.image_endpoint import ImagePrediction
from d4_api_mnist import app

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Any JSON value, NaN and infinities included (Python's json writes them; the API's parser reads them).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
# Arrays that are nearly right: sizes around 28, numbers around 0..1, sometimes non-finite.
pixel_values = st.floats(min_value=-0.5, max_value=1.5) | st.sampled_from(
    [0, 1, float("nan"), float("inf"), 1e308]
)
near_pixels = st.integers(26, 29).flatmap(
    lambda rows: st.lists(
        st.lists(pixel_values, min_size=27, max_size=29), min_size=rows, max_size=rows
    )
)


def check_answer(response, answer_model=Prediction) -> None:
    assert response.status_code in (200, 413, 422), response.text
    if response.status_code == 200:
        answer_model.model_validate(response.json())
    else:
        assert isinstance(response.json()["message"], str) and "Traceback" not in response.text


@SETTINGS
@given(body=json_values)
def test_any_json_body_gets_a_prediction_or_a_4xx_message(client, body):
    check_answer(
        client.post(
            "/predict", content=json.dumps(body), headers={"content-type": "application/json"}
        )
    )


@SETTINGS
@given(body=st.fixed_dictionaries({"pixels": near_pixels}))
def test_near_valid_pixel_arrays_get_a_prediction_or_a_4xx_message(client, body):
    response = client.post(
        "/predict", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    check_answer(response)
    rows = body["pixels"]
    valid = len(rows) == 28 and all(
        len(row) == 28 and all(0 <= value <= 1 for value in row) for row in rows
    )
    assert (response.status_code == 200) == valid


@settings(SETTINGS, max_examples=40)  # drawing whole images is slow in hypothesis
@given(images=st.lists(near_pixels, max_size=3) | json_values)
def test_near_valid_batches_get_predictions_or_a_4xx_message(client, images):
    body = json.dumps({"images": images})
    response = client.post(
        "/predict/batch", content=body, headers={"content-type": "application/json"}
    )
    check_answer(response, BatchPrediction)
    if response.status_code == 200:
        assert len(response.json()["predictions"]) == len(images)


PNG = encode(drawn(1), "PNG")


def overwrite(changes: dict[int, int]) -> bytes:
    return bytes(changes.get(i, value) for i, value in enumerate(PNG))


corrupted_pngs = st.dictionaries(st.integers(0, len(PNG) - 1), st.integers(0, 255), min_size=1).map(
    overwrite
)


@SETTINGS
@given(data=st.binary(max_size=2000) | corrupted_pngs)
def test_any_upload_gets_a_prediction_or_a_4xx_message(client, data):
    """Random bytes, and a real PNG with bytes overwritten: a corrupt file must never become a 500."""
    check_answer(
        client.post("/predict/image", files={"file": ("upload.png", data)}), ImagePrediction
    )


schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=60, deadline=None)
def test_app_conforms_to_its_own_openapi_schema(case):
    if case.path == "/predict/image":
        # Any bytes match the schema's "binary" file, but only a picture of a digit is valid:
        # other bytes must get a documented 4xx (checked), not be accepted.
        case.call_and_validate(excluded_checks=[positive_data_acceptance])
    else:
        case.call_and_validate()
