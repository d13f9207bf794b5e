"""GET /model: the served network's layers, its weights file, and the training record when it belongs to them."""

import base64
import hashlib
import json
import shutil

import pytest
import torch
from fastapi.testclient import TestClient

from conftest import SHIPPED_WEIGHTS
from d4_api_mnist import app

NOTES_SHAPES = [[1, 28, 28], [8, 28, 28], [8, 14, 14], [16, 14, 14], [16, 7, 7], [784], [64], [10]]


def card_for(weights, monkeypatch) -> dict:
    monkeypatch.setenv("D4_MODEL_PATH", str(weights))
    with TestClient(app) as client:
        assert client.get("/").json()["model"] == "/model"
        return client.get("/model").json()


def test_the_card_shows_the_notes_layers_the_weights_and_how_they_were_trained(monkeypatch):
    card = card_for(SHIPPED_WEIGHTS, monkeypatch)
    assert [layer["output_shape"] for layer in card["layers"]] == NOTES_SHAPES
    assert [layer["name"] for layer in card["layers"]] == [
        "input", "conv1", "pool", "conv2", "pool", "flatten", "fc1", "fc2",
    ]  # fmt: skip
    assert card["parameters"] == sum(layer["parameters"] for layer in card["layers"]) == 52_138
    assert card["weights"] == {
        "file": "d4_cnn.pt",
        "bytes": SHIPPED_WEIGHTS.stat().st_size,
        "sha256": hashlib.sha256(SHIPPED_WEIGHTS.read_bytes()).hexdigest(),
    }
    shipped_record = json.loads(SHIPPED_WEIGHTS.with_suffix(".json").read_text())
    assert card["training"]["test_accuracy"] == shipped_record["test_accuracy"] >= 0.99
    assert card["training"]["command"] == shipped_record["command"]
    assert (
        card["training"]["epochs"] == len(shipped_record["epochs"]) == 10
    )  # --augment --epochs 10


@pytest.mark.parametrize("record", ["none", "of other weights"])
def test_without_a_record_of_these_weights_the_training_is_unknown(tmp_path, monkeypatch, record):
    weights = tmp_path / "mine.pt"
    shutil.copy(SHIPPED_WEIGHTS, weights)
    if record == "of other weights":
        other = json.loads(SHIPPED_WEIGHTS.with_suffix(".json").read_text())
        other["weights"]["sha256"] = "0" * 64
        weights.with_suffix(".json").write_text(json.dumps(other))
    card = card_for(weights, monkeypatch)
    assert card["training"] is None and card["training_source"].startswith("unknown")
    assert card["weights"]["file"] == "mine.pt" and card["parameters"] == 52_138


def test_the_card_gives_each_conv_filters_kernels_and_biases_as_served(monkeypatch):
    card = card_for(SHIPPED_WEIGHTS, monkeypatch)
    weights = torch.load(SHIPPED_WEIGHTS, weights_only=True)
    for layer, shape in (("conv1", (8, 1, 3, 3)), ("conv2", (16, 8, 3, 3))):
        kernels, biases = (
            torch.tensor(card["filters"][layer][key]) for key in ("weights", "biases")
        )
        assert tuple(kernels.shape) == shape and tuple(biases.shape) == shape[:1]
        assert torch.equal(kernels, weights[f"{layer}.weight"]) and torch.equal(
            biases, weights[f"{layer}.bias"]
        )


@pytest.mark.parametrize(
    "counts", [{"conv1": [300] * 8, "conv2": [300] * 14 + [0, 0], "of": 300}, None]
)
def test_the_records_filter_counts_are_shown_and_their_absence_is_null(
    tmp_path, monkeypatch, counts
):
    weights = tmp_path / "d4_cnn.pt"
    shutil.copy(SHIPPED_WEIGHTS, weights)
    record = json.loads(
        SHIPPED_WEIGHTS.with_suffix(".json").read_text()
    )  # of the same weights: same sha256
    record.pop("filters_firing", None)  # as a record written before the trainer counted them
    if counts is not None:
        record["filters_firing"] = counts
    weights.with_suffix(".json").write_text(json.dumps(record))
    assert card_for(weights, monkeypatch)["training"]["filters_firing"] == counts


def test_every_weight_comes_from_its_own_endpoint_exactly_as_served_and_cached(monkeypatch):
    monkeypatch.setenv("D4_MODEL_PATH", str(SHIPPED_WEIGHTS))
    with TestClient(app) as client:
        card = client.get("/model").json()
        response = client.get(card["all_weights"])
        assert (
            response.status_code == 200
            and response.headers["etag"] == f'"{card["weights"]["sha256"]}"'
        )
        assert (
            client.get(
                card["all_weights"], headers={"If-None-Match": response.headers["etag"]}
            ).status_code
            == 304
        )
    body = response.json()
    assert body["sha256"] == card["weights"]["sha256"] and body["dtype"] == "float32"
    values = torch.frombuffer(
        bytearray(base64.b64decode(body["data"])), dtype=torch.float32
    )  # little-endian
    state = torch.load(SHIPPED_WEIGHTS, weights_only=True)
    assert list(body["tensors"]) == list(state) and values.numel() == 52_138
    for name, tensor in state.items():
        where = body["tensors"][name]
        assert where["shape"] == list(tensor.shape)
        assert torch.equal(
            values[where["offset"] : where["offset"] + tensor.numel()].reshape(tensor.shape), tensor
        )
    assert set(card["filters"]) == {
        "conv1",
        "conv2",
    }  # the card itself keeps its fields and stays small
