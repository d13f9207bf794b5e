"""?explain=true: the feature maps of both conv blocks and a saliency map, from the inference thread only."""

import threading

import pytest
import torch
from fastapi.testclient import TestClient

from conftest import SHIPPED_WEIGHTS, drawn, encode
from d4.explain import feature_maps
from d4.model import to_model_input
from d4.weights import load_weights
from d4_api_mnist import app


@pytest.fixture(scope="module")
def served():
    """The API in-process, with a record of every thread the model ran on and of each explanation worked out."""
    with TestClient(app) as client:
        predictor = client.app_state["predictor"]
        threads, explained = [], []
        predictor.model.register_forward_pre_hook(
            lambda *_: threads.append(threading.current_thread().name)
        )
        explain = predictor._explain
        predictor._explain = lambda pixels: explained.append(1) or explain(pixels)
        yield client, threads, explained


def test_explain_returns_both_blocks_feature_maps_and_a_saliency_map_of_the_model(
    served, fixture_test_digits
):
    client, _, _ = served
    images, _ = fixture_test_digits
    pixels = to_model_input(images[:1])
    answer = client.post("/predict?explain=true", json={"pixels": pixels[0, 0].tolist()}).json()
    plain = client.post("/predict", json={"pixels": pixels[0, 0].tolist()}).json()
    assert {key: answer[key] for key in plain} == plain  # the answer itself does not change
    maps, saliency = (
        answer["explanation"]["feature_maps"],
        torch.tensor(answer["explanation"]["saliency"]),
    )
    block1, block2 = feature_maps(load_weights(SHIPPED_WEIGHTS), pixels)
    torch.testing.assert_close(
        torch.tensor(maps["conv1"]), block1[0].detach(), atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(
        torch.tensor(maps["conv2"]), block2[0].detach(), atol=1e-5, rtol=1e-4
    )
    assert tuple(torch.tensor(maps["conv1"]).shape) == (8, 14, 14) and tuple(block2[0].shape) == (
        16,
        7,
        7,
    )
    assert saliency.shape == (28, 28) and saliency.min() >= 0 and saliency.max() == pytest.approx(1)


def test_saliency_is_brightest_on_the_strokes(served, fixture_test_digits):
    client, _, _ = served
    images, _ = fixture_test_digits
    for pixels in to_model_input(images[:20]):
        explanation = client.post(
            "/predict?explain=true", json={"pixels": pixels[0].tolist()}
        ).json()["explanation"]
        saliency = torch.tensor(explanation["saliency"])
        strokes = pixels[0] > 0.3  # about a fifth of an MNIST image
        assert saliency[strokes].sum() > 0.8 * saliency.sum()
        assert saliency[strokes].mean() > 5 * saliency[~strokes].mean()


def test_an_uploaded_picture_is_explained_as_the_model_saw_it(served):
    client, _, _ = served
    answer = client.post(
        "/predict/image?explain=true&return_input=true",
        files={"file": ("d.png", encode(drawn(4), "PNG"))},
    ).json()
    seen = client.post("/predict?explain=true", json={"pixels": answer["input"]}).json()
    assert answer["explanation"] == seen["explanation"]


def test_without_the_flag_nothing_is_explained_and_the_model_runs_only_on_the_inference_thread(
    served,
):
    client, threads, explained = served
    before = len(explained)
    for path, kwargs in [
        ("/predict", {"json": {"pixels": [[0.0] * 28] * 28}}),
        ("/predict/batch", {"json": {"images": [[[0.0] * 28] * 28] * 2}}),
        ("/predict/image", {"files": {"file": ("d.png", encode(drawn(2), "PNG"))}}),
    ]:
        answer = client.post(path, **kwargs)
        assert answer.status_code == 200 and "explanation" not in answer.text
    assert len(explained) == before
    client.post("/predict?explain=true", json={"pixels": [[0.0] * 28] * 28})
    assert len(explained) == before + 1
    assert set(threads) == {"d4-inference"}


def test_saliency_is_gradient_times_input_of_the_predicted_digits_score(
    served, fixture_test_digits
):
    """Check the map against the score itself: nudge a pixel, and the predicted digit's logit moves by gradient x nudge.

    For the most salient pixels, saliency_i / saliency_j must equal |dlogit_i x_i| / |dlogit_j x_j| measured
    by finite differences on the served weights; |input| alone, or the sum of all ten logits, gives other ratios.
    """
    client, _, _ = served
    model = load_weights(SHIPPED_WEIGHTS)
    images, _ = fixture_test_digits
    for image in to_model_input(images[:5].clone()):
        pixels = image.unsqueeze(0).double()
        explanation = client.post(
            "/predict?explain=true", json={"pixels": image[0].tolist()}
        ).json()["explanation"]
        saliency = torch.tensor(explanation["saliency"], dtype=torch.float64)
        model.double()
        digit = model(pixels).argmax().item()
        top, measured = [], []
        for index in saliency.flatten().topk(10).indices.tolist():
            row, col = divmod(index, 28)
            slopes = []
            for step in (
                1e-6,
                -1e-6,
            ):  # a one-sided slope each way: they differ only at a ReLU or max-pool kink
                nudged = pixels.clone()
                nudged[0, 0, row, col] += step
                slopes.append((model(nudged)[0, digit] - model(pixels)[0, digit]).item() / step)
            if slopes[0] == pytest.approx(slopes[1], rel=1e-3):
                top.append(index)
                measured.append(abs(slopes[0] * pixels[0, 0, row, col].item()))
        top = torch.tensor(top)
        assert len(top) >= 5
        model.float()
        measured = torch.tensor(measured, dtype=torch.float64)
        torch.testing.assert_close(saliency.flatten()[top] / saliency.flatten()[top[0]], measured / measured[0],
                                   atol=0.02, rtol=0.02)  # fmt: skip


def test_explain_returns_fc1_and_the_logits_whose_softmax_is_the_answer(
    served, fixture_test_digits
):
    """The notes' last steps: 784 flattened -> fc1's 64 (after ReLU) -> fc2's 10 logits -> softmax -> probabilities."""
    client, _, _ = served
    model = load_weights(SHIPPED_WEIGHTS)
    images, _ = fixture_test_digits
    for pixels in to_model_input(images[:5]):
        answer = client.post("/predict?explain=true", json={"pixels": pixels[0].tolist()}).json()
        explanation = answer["explanation"]
        fc1, logits = torch.tensor(explanation["fc1"]), torch.tensor(explanation["logits"])
        flattened = torch.tensor(
            explanation["feature_maps"]["conv2"]
        ).flatten()  # [784], the notes' reshape
        torch.testing.assert_close(
            fc1, torch.relu(model.fc1(flattened)).detach(), atol=1e-4, rtol=1e-4
        )
        torch.testing.assert_close(logits, model.fc2(fc1).detach(), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(
            logits, model(pixels.unsqueeze(0))[0].detach(), atol=1e-4, rtol=1e-4
        )
        assert fc1.shape == (64,) and fc1.min() >= 0  # after ReLU
        torch.testing.assert_close(
            logits.softmax(0), torch.tensor(answer["probabilities"]), atol=1e-5, rtol=1e-4
        )
        assert logits.argmax().item() == answer["predicted_digit"]
