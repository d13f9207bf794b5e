"""Micro-batching: requests waiting together share a forward pass and each gets its own answer."""

import asyncio
from array import array

import torch

from conftest import SHIPPED_WEIGHTS
from d4.batching import BatchingPredictor
from d4.model import load_weights, to_model_input


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
        predictor = BatchingPredictor(model)
        predictor.start()
        try:
            return await asyncio.gather(*(predictor.probabilities(p) for p in pixels))
        finally:
            predictor.stop()

    answers = asyncio.run(ask_all())
    assert torch.allclose(torch.tensor(answers), expected, atol=1e-6)
    assert sum(batch_sizes) == 20 and len(batch_sizes) < 20  # some requests shared a pass


def test_a_failing_forward_pass_answers_every_waiting_request_with_the_error():
    class Broken(torch.nn.Module):
        def forward(self, images):
            raise RuntimeError("broken model")

    async def ask() -> list:
        predictor = BatchingPredictor(Broken())
        predictor.start()
        try:
            requests = [predictor.probabilities(array("f", [0.0] * 784)) for _ in range(3)]
            return await asyncio.gather(*requests, return_exceptions=True)
        finally:
            predictor.stop()

    answers = asyncio.run(asyncio.wait_for(ask(), timeout=10))
    assert [str(answer) for answer in answers] == ["broken model"] * 3
