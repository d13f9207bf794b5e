"""Micro-batching: requests waiting together share a forward pass and each gets its own answer."""

import asyncio
import threading
import time
from array import array

import pytest
import torch

from conftest import SHIPPED_WEIGHTS
from d4 import batching
from d4.batching import BatchingPredictor, PredictorStopped
from d4.model import to_model_input
from d4.weights import load_weights
from d4_api_mnist import classify


async def probabilities(predictor: BatchingPredictor, pixels: array) -> list[list[float]]:
    """Each image's 10 probabilities, from the answers the API's classify() gave on the inference thread."""
    return [answer["probabilities"] for answer in await predictor.answers(pixels)]


def test_waiting_requests_share_forward_passes_and_get_their_own_rows(fixture_test_digits):
    images, _ = fixture_test_digits
    images = images[:20]
    model = load_weights(SHIPPED_WEIGHTS)
    with torch.inference_mode():
        expected = model(to_model_input(images)).softmax(dim=1)
    batch_sizes = []
    model.register_forward_hook(lambda module, inputs, output: batch_sizes.append(len(inputs[0])))
    pixels = [array("f", image.flatten().tolist()) for image in to_model_input(images)]

    async def ask_all() -> list[list[float]]:
        predictor = BatchingPredictor(model, classify)
        predictor.start()
        try:
            return await asyncio.gather(*(probabilities(predictor, p) for p in pixels))
        finally:
            predictor.stop()

    answers = asyncio.run(asyncio.wait_for(ask_all(), timeout=30))
    assert all(len(rows) == 1 for rows in answers)
    assert torch.allclose(torch.tensor([rows[0] for rows in answers]), expected, atol=1e-6)
    assert sum(batch_sizes) == 20 and len(batch_sizes) < 20  # some requests shared a pass


def test_a_request_of_many_images_gets_its_rows_in_order_beside_single_requests(
    fixture_test_digits,
):
    images, _ = fixture_test_digits
    model = load_weights(SHIPPED_WEIGHTS)
    inputs = to_model_input(images[:30])
    with torch.inference_mode():
        expected = model(inputs).softmax(dim=1)
    batch_sizes = []
    model.register_forward_hook(lambda module, inputs, output: batch_sizes.append(len(inputs[0])))
    many = array("f", inputs[:25].flatten().tolist())
    singles = [array("f", image.flatten().tolist()) for image in inputs[25:]]

    async def ask_all() -> list[list[list[float]]]:
        predictor = BatchingPredictor(model, classify, max_batch=8)
        predictor.start()
        try:
            return await asyncio.gather(
                probabilities(predictor, singles[0]),
                probabilities(predictor, many),
                *(probabilities(predictor, p) for p in singles[1:]),
            )
        finally:
            predictor.stop()

    first, batch, *rest = asyncio.run(asyncio.wait_for(ask_all(), timeout=30))
    assert len(batch) == 25 and torch.allclose(torch.tensor(batch), expected[:25], atol=1e-6)
    assert max(batch_sizes) >= 25  # the 25 images went through one forward pass
    assert torch.allclose(torch.tensor(first + sum(rest, [])), expected[25:], atol=1e-6)


def test_a_failing_forward_pass_answers_every_waiting_request_with_the_error():
    class Broken(torch.nn.Module):
        def forward(self, images):
            raise RuntimeError("broken model")

    async def ask() -> list:
        predictor = BatchingPredictor(Broken(), classify)
        predictor.start()
        try:
            requests = [probabilities(predictor, array("f", [0.0] * 784)) for _ in range(3)]
            return await asyncio.gather(*requests, return_exceptions=True)
        finally:
            predictor.stop()

    answers = asyncio.run(asyncio.wait_for(ask(), timeout=10))
    assert [str(answer) for answer in answers] == ["broken model"] * 3


class ThreadKilled(BaseException):
    """What kills a thread outright (as an interpreter shutdown or a fatal bug would)."""


def one_image() -> array:
    return array("f", [0.0] * 784)


def test_work_after_stop_is_refused_at_once_and_queued_work_is_answered():
    predictor = BatchingPredictor(load_weights(SHIPPED_WEIGHTS), classify)

    async def scenario() -> tuple:
        predictor.start()
        queued = asyncio.ensure_future(probabilities(predictor, one_image()))
        await asyncio.sleep(0)  # the request is queued before stop begins
        await asyncio.to_thread(predictor.stop)
        with pytest.raises(PredictorStopped, match="shutting down"):
            await probabilities(predictor, one_image())
        return await queued

    [row] = asyncio.run(asyncio.wait_for(scenario(), timeout=10))
    assert sum(row) == pytest.approx(1, abs=1e-5)
    assert not predictor.healthy()


@pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnhandledThreadExceptionWarning"
)  # the thread's death is the point
def test_a_killed_thread_answers_what_waits_refuses_new_work_and_reports_unhealthy():
    model = load_weights(SHIPPED_WEIGHTS)

    def die(module, inputs):
        raise ThreadKilled

    model.register_forward_pre_hook(die)
    predictor = BatchingPredictor(model, classify)

    async def scenario() -> None:
        predictor.start()
        assert predictor.healthy()
        with pytest.raises(PredictorStopped, match="inference thread stopped"):
            await probabilities(predictor, one_image())
        await asyncio.to_thread(predictor.thread.join, 5)
        with pytest.raises(PredictorStopped):
            await probabilities(predictor, one_image())

    asyncio.run(asyncio.wait_for(scenario(), timeout=10))
    assert not predictor.healthy()


def test_a_forward_pass_stuck_past_the_limit_is_unhealthy_until_it_ends(monkeypatch):
    monkeypatch.setattr(batching, "STUCK_AFTER_S", 0.2)
    model = load_weights(SHIPPED_WEIGHTS)
    model.register_forward_pre_hook(lambda module, inputs: time.sleep(1.0))
    predictor = BatchingPredictor(model, classify)

    async def scenario() -> list[bool]:
        predictor.start()
        answer = asyncio.ensure_future(probabilities(predictor, one_image()))
        await asyncio.sleep(0.6)
        during = predictor.healthy()
        await answer
        after = predictor.healthy()
        await asyncio.to_thread(predictor.stop)
        return [during, after]

    assert asyncio.run(asyncio.wait_for(scenario(), timeout=10)) == [False, True]


def test_single_requests_waiting_together_share_passes_of_at_most_64_images():
    """The API's cap: a crowd of waiting requests is served in passes of 64, never in one huge pass."""
    model = load_weights(SHIPPED_WEIGHTS)
    all_queued = threading.Event()
    batch_sizes = []
    model.register_forward_pre_hook(lambda module, inputs: None if all_queued.wait(10) else None)
    model.register_forward_hook(lambda module, inputs, output: batch_sizes.append(len(inputs[0])))
    predictor = BatchingPredictor(model, classify)  # the default cap, as d4/serving.py starts it

    async def scenario() -> list[list[list[float]]]:
        predictor.start()
        try:
            # The first request's pass waits until all 150 are queued behind it.
            answers = [
                asyncio.ensure_future(probabilities(predictor, one_image())) for _ in range(150)
            ]
            await asyncio.sleep(0.2)
            all_queued.set()
            return await asyncio.gather(*answers)
        finally:
            await asyncio.to_thread(predictor.stop)

    answers = asyncio.run(asyncio.wait_for(scenario(), timeout=30))
    assert len(answers) == 150 and all(len(rows) == 1 for rows in answers)
    assert sum(batch_sizes) == 150
    assert max(batch_sizes) == 64  # full passes of 64 for the crowd behind the first
