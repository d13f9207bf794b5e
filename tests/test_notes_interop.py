"""d4_cnn.pt is the joint between the course notes' code and ours: weights move both ways and answer the same.

The notes' code here is its re-implementation in benchmarks/ (notes_model.py, notes_train.py,
notes_api.py), run as the notes run it: a script, and a real uvicorn.
"""

import ast
import shutil
from pathlib import Path

import pytest
import requests
import torch

import d4_tiny_cnn_mnist as trainer
from conftest import (
    FIXTURE_MNIST,
    REPO,
    SHIPPED_WEIGHTS,
    notes_api_server,
    old_layout_state_dict,
    run_script,
    script_env,
    uvicorn_process,
    uvicorn_server,
)
from d4.model import TinyCNN, to_model_input
from d4.weights import load_weights
from notes_model import TinyCNN as NotesTinyCNN

CLIENT_INDICES = (0, 1, 2, 3, 4)


@pytest.fixture(scope="module")
def our_trained_weights(tmp_path_factory) -> Path:
    """A d4_cnn.pt written by our trainer's main(), on the fixture."""
    out = tmp_path_factory.mktemp("ours") / "d4_cnn.pt"
    trainer.main(
        ["--data-dir", str(FIXTURE_MNIST), "--device", "cpu", "--no-plot", "--out", str(out)]
    )
    return out


@pytest.fixture(scope="module")
def notes_trained_folder(tmp_path_factory):
    """A folder holding the d4_cnn.pt that the notes' training script wrote, trained on the fixture."""
    folder = tmp_path_factory.mktemp("notes")
    notes_train = str(REPO / "benchmarks" / "notes_train.py")
    result = run_script(
        notes_train, "--data-dir", str(FIXTURE_MNIST), "--out", str(folder / "d4_cnn.pt")
    )
    assert result.returncode == 0, result.stderr
    assert "test accuracy=" in result.stdout
    return folder


@pytest.fixture(scope="module")
def fixture_pixels(fixture_test_digits) -> torch.Tensor:
    images, _ = fixture_test_digits
    return to_model_input(images)


@pytest.mark.parametrize("weights", ["shipped", "trained now"])
def test_our_weights_load_strictly_into_the_notes_class_and_give_identical_logits(
    weights, our_trained_weights, fixture_pixels
):
    path = SHIPPED_WEIGHTS if weights == "shipped" else our_trained_weights
    notes_model = NotesTinyCNN()
    notes_model.load_state_dict(
        torch.load(path, map_location="cpu", weights_only=True), strict=True
    )
    with torch.no_grad():
        assert torch.equal(load_weights(path)(fixture_pixels), notes_model.eval()(fixture_pixels))


def test_weights_saved_by_the_notes_training_loop_load_into_ours_with_identical_logits(
    notes_trained_folder, fixture_pixels
):
    state_dict = torch.load(
        notes_trained_folder / "d4_cnn.pt", map_location="cpu", weights_only=True
    )
    notes_model = NotesTinyCNN()
    notes_model.load_state_dict(state_dict)
    ours = TinyCNN()
    ours.load_state_dict(state_dict, strict=True)
    with torch.no_grad():
        notes_logits = notes_model.eval()(fixture_pixels)
        assert torch.equal(ours.eval()(fixture_pixels), notes_logits)
        assert torch.equal(
            load_weights(notes_trained_folder / "d4_cnn.pt")(fixture_pixels), notes_logits
        )


def client_answers(url: str) -> list[dict]:
    """What `python d4_test_api.py --url URL --index i` prints as the API's answer, for each test index."""
    answers = []
    for index in CLIENT_INDICES:
        result = run_script(
            "d4_test_api.py",
            "--data-dir",
            str(FIXTURE_MNIST),
            "--url",
            url,
            "--index",
            str(index),
            env=script_env(),
        )
        assert result.returncode == 0, result.stderr
        answers.append(
            ast.literal_eval(result.stdout.splitlines()[1])
        )  # print(r.json()), as the notes
    return answers


def assert_same_answers(ours: list[dict], notes: list[dict]) -> None:
    for our_answer, notes_answer in zip(ours, notes, strict=True):
        assert our_answer["predicted_digit"] == notes_answer["predicted_digit"]
        assert our_answer["confidence"] == pytest.approx(notes_answer["confidence"], abs=1e-5)
        assert our_answer["probabilities"] == pytest.approx(notes_answer["probabilities"], abs=1e-5)


def test_the_notes_api_on_the_shipped_weights_answers_the_client_as_ours_does(tmp_path):
    shutil.copy(SHIPPED_WEIGHTS, tmp_path / "d4_cnn.pt")
    with notes_api_server(tmp_path) as notes_url:
        notes = client_answers(notes_url)
    with uvicorn_server() as our_url:
        ours = client_answers(our_url)
    assert_same_answers(ours, notes)
    assert [answer["predicted_digit"] for answer in ours] == [
        7,
        2,
        1,
        0,
        4,
    ]  # the first five MNIST test digits


def test_our_api_serves_the_notes_trained_weights_and_agrees_with_the_notes_api(
    notes_trained_folder, fixture_pixels
):
    bodies = [{"pixels": pixels[0].tolist()} for pixels in fixture_pixels[:100]]
    with notes_api_server(notes_trained_folder) as notes_url, requests.Session() as session:
        notes = [
            session.post(f"{notes_url}/predict", json=body, timeout=10).json() for body in bodies
        ]
        wrong_shape = session.post(
            f"{notes_url}/predict", json={"pixels": [[0.0] * 28] * 27}, timeout=10
        )
    with (
        uvicorn_server(notes_trained_folder / "d4_cnn.pt") as our_url,
        requests.Session() as session,
    ):
        ours = [session.post(f"{our_url}/predict", json=body, timeout=10).json() for body in bodies]
    assert_same_answers(ours, notes)
    # The notes' API answers a wrong shape with a 200 and an error field; ours with a 422.
    assert wrong_shape.status_code == 200 and wrong_shape.json() == {
        "error": "pixels must be a 28x28 array"
    }


def test_our_api_refuses_old_layout_weights_at_start_up_in_one_line(tmp_path):
    path = tmp_path / "d4_cnn.pt"
    torch.save(old_layout_state_dict(), path)
    with pytest.raises(RuntimeError, match="uvicorn exited with 1") as error, uvicorn_process(path):
        pass
    output = str(error.value)
    [line] = [line for line in output.splitlines() if line.startswith("error:")]
    assert "earlier version of this project" in line and "python d4_tiny_cnn_mnist.py" in line
    assert "Traceback" not in output
