"""Full MNIST: the default training run reaches its accuracy floor and its weights serve.

Needs the whole dataset, found through D4_MNIST_ROOT (`.ci/run` points it at ../shared/mnist).
"""

import ast
import os
import re
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from conftest import REPO, run_script, script_env, uvicorn_server
from d4.data import load_mnist
from d4.model import to_model_input
from d4.weights import load_weights

MNIST_ROOT = os.environ.get("D4_MNIST_ROOT")
TRAINING_LINE = re.compile(
    r"^epoch=\d+ loss=[\d.]+ accuracy=[\d.]+$|^test accuracy=[\d.]+$", re.MULTILINE
)
pytestmark = pytest.mark.skipif(
    not MNIST_ROOT, reason="set D4_MNIST_ROOT to a folder holding MNIST/raw/"
)


def test_default_training_reaches_its_promised_accuracy_and_its_weights_load_into_the_api(
    tmp_path, monkeypatch
):
    out = tmp_path / "d4_cnn.pt"
    args = ["--data-dir", str(Path(MNIST_ROOT)), "--out", str(out), "--no-plot"]
    result = run_script("d4_tiny_cnn_mnist.py", *args, env=script_env(), timeout=900)
    assert result.returncode == 0, result.stderr
    accuracy = float(re.search(r"^test accuracy=(\S+)$", result.stdout, re.MULTILINE).group(1))
    assert accuracy >= 0.985  # README's promise for the default run (0.9878-0.9887 over seeds 0-2)
    assert_same_figures(TRAINING_LINE.findall(result.stdout), readme_block_after("### 2. Train"))
    with uvicorn_server(out) as url:  # README's step 4, on the weights of its step 2
        client = run_script(
            "d4_test_api.py", "--url", url, "--data-dir", MNIST_ROOT, env=script_env()
        )
    assert client.returncode == 0, client.stderr
    assert_same_client_output(client.stdout.splitlines(), readme_client_block())

    from d4_api_mnist import app

    monkeypatch.setenv("D4_MODEL_PATH", str(out))
    trained = load_weights(out)
    images, labels = load_mnist(MNIST_ROOT, train=False)
    pixels = to_model_input(images[:1])
    with torch.inference_mode():
        expected = trained(pixels).softmax(dim=1)[0].tolist()
    with TestClient(app) as client:
        answer = client.post("/predict", json={"pixels": pixels[0, 0].tolist()}).json()
    assert answer["probabilities"] == pytest.approx(
        expected, abs=1e-6
    )  # the trained file is what serves
    assert answer["predicted_digit"] == labels[0].item()


def readme_block_after(heading: str) -> list[str]:
    """The training lines of README's first output block after `heading`, as README shows them."""
    section = (REPO / "README.md").read_text().split(heading, 1)[1].split("\n### ", 1)[0]
    return TRAINING_LINE.findall(section)  # whole lines: the output block's, not inline quotes


def readme_inline_figures(command: str) -> list[str]:
    """The training lines README quotes inline, in backticks, after `command`."""
    after = (REPO / "README.md").read_text().split(command + "`", 1)[1].split("\n\n", 1)[0]
    return TRAINING_LINE.findall("\n".join(re.findall(r"`([^`]+)`", after)))


def assert_same_figures(printed: list[str], shown: list[str]) -> None:
    """The lines a run printed are the ones README shows, to the rounding of float sums on another CPU."""
    assert len(printed) == len(shown) > 0, (printed, shown)
    for line, expected in zip(printed, shown, strict=True):
        numbers, expected_numbers = (
            re.findall(r"[\d.]+(?=\s|$)", text) for text in (line, expected)
        )
        assert re.sub(r"[\d.]+", "#", line) == re.sub(r"[\d.]+", "#", expected), (line, expected)
        assert [float(n) for n in numbers] == pytest.approx(
            [float(n) for n in expected_numbers], rel=1e-3
        )


def test_the_notes_recipe_prints_the_figures_readme_shows(tmp_path):
    command = "python d4_tiny_cnn_mnist.py --batch-size 64 --lr 0.001 --schedule constant"
    args = [
        *command.split()[2:],
        "--data-dir",
        str(Path(MNIST_ROOT)),
        "--out",
        str(tmp_path / "w.pt"),
    ]
    result = run_script("d4_tiny_cnn_mnist.py", *args, "--no-plot", env=script_env(), timeout=900)
    assert result.returncode == 0, result.stderr
    assert_same_figures(TRAINING_LINE.findall(result.stdout), readme_inline_figures(command))


def readme_client_block() -> list[str]:
    """What README's step 4 shows `python d4_test_api.py` printing."""
    section = (REPO / "README.md").read_text().split("$ python d4_test_api.py\n", 1)[1]
    return section.split("```", 1)[0].splitlines()


def assert_same_client_output(printed: list[str], shown: list[str]) -> None:
    """The client printed README's lines: the same label and verdict, the same answer to float rounding."""
    assert len(printed) == len(shown) == 3, (printed, shown)
    assert printed[0] == shown[0] and printed[2] == shown[2]
    answer, expected = ast.literal_eval(printed[1]), ast.literal_eval(shown[1])
    assert answer["predicted_digit"] == expected["predicted_digit"]
    numbers = [answer["confidence"], *answer["probabilities"]]
    assert numbers == pytest.approx(
        [expected["confidence"], *expected["probabilities"]], rel=1e-3, abs=1e-9
    )
