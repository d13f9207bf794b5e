"""Full MNIST: the default training run reaches its accuracy floor and its weights serve.

Needs the whole dataset, found through D4_MNIST_ROOT (`.ci/run` points it at ../shared/mnist).
"""

import os
import re
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from conftest import run_script, script_env
from d4.data import load_mnist
from d4.model import to_model_input
from d4.weights import load_weights

MNIST_ROOT = os.environ.get("D4_MNIST_ROOT")
pytestmark = pytest.mark.skipif(not MNIST_ROOT, reason="set D4_MNIST_ROOT to a folder holding MNIST/raw/")


def test_default_training_reaches_its_promised_accuracy_and_its_weights_load_into_the_api(tmp_path, monkeypatch):
    out = tmp_path / "d4_cnn.pt"
    args = ["--data-dir", str(Path(MNIST_ROOT)), "--out", str(out), "--no-plot"]
    result = run_script("d4_tiny_cnn_mnist.py", *args, env=script_env(), timeout=900)
    assert result.returncode == 0, result.stderr
    accuracy = float(re.search(r"^test accuracy=(\S+)$", result.stdout, re.MULTILINE).group(1))
    assert accuracy >= 0.985  # README's promise for the default run (0.9878-0.9887 over seeds 0-2)

    from d4_api_mnist import app

    monkeypatch.setenv("D4_MODEL_PATH", str(out))
    trained = load_weights(out)
    images, labels = load_mnist(MNIST_ROOT, train=False)
    pixels = to_model_input(images[:1])
    with torch.inference_mode():
        expected = trained(pixels).softmax(dim=1)[0].tolist()
    with TestClient(app) as client:
        answer = client.post("/predict", json={"pixels": pixels[0, 0].tolist()}).json()
    assert answer["probabilities"] == pytest.approx(expected, abs=1e-6)  # the trained file is what serves
    assert answer["predicted_digit"] == labels[0].item()
