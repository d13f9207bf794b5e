"""GET /model: the network being served, its weights file, and how those weights were made.

The layers come from TinyCNN itself (`architecture` below), in the notes' order with their
output shapes and parameter counts; the training record (d4_cnn.json, written by the trainer)
is shown only when its sha256 says it describes these very weights. Each conv layer's learned
kernels and biases are given too, so that a page (GET /draw) can redo a feature map's arithmetic.

GET /model/weights gives every learned number, fc1's 50,176 weights included, so that /draw can run
the whole forward pass in the browser (and run it again on weights the learner edits there, which
the server never runs). They are 52,138 float32 values: as JSON numbers about 1 MB, so they come as
their bytes in base64 (278 KB), exact, worked out once when the server starts and cached by the
browser (ETag: the weights' sha256).
"""

import base64
import sys
from array import array
from pathlib import Path

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field, PrivateAttr
from torch import nn

from d4.model import IMAGE_SIZE, TinyCNN
from d4.report import read_record, record_path, sha256

router = APIRouter()


class Layer(BaseModel):
    name: str = Field(description="the attribute in TinyCNN, as in the course notes")
    operation: str
    output_shape: list[int] = Field(
        description="for one image: [channels, height, width], or [features]"
    )
    parameters: int = Field(description="learned weights and biases")


class WeightsFile(BaseModel):
    file: str
    bytes: int
    sha256: str


class FiltersFiring(BaseModel):
    conv1: list[int] = Field(
        description="per conv1 filter: on how many test digits its map is above 0 somewhere"
    )
    conv2: list[int] = Field(
        description="the same per conv2 filter; 0 means dead: ReLU zeroes it for every digit"
    )
    of: int = Field(description="test digits counted")


class TrainingRecord(BaseModel):
    test_accuracy: float = Field(description="on the 10,000 MNIST test images")
    command: str = Field(description="the training run that made these weights")
    epochs: int
    date: str
    filters_firing: FiltersFiring | None = Field(
        default=None,
        description="how often each conv filter fires on the test set; null in older records",
    )


class ConvFilters(BaseModel):
    weights: list[list[list[list[float]]]] = Field(
        description="[out][in][3][3]: each learned filter's 3x3 kernel for each input channel"
    )
    biases: list[float] = Field(
        description="[out]: each filter's bias, added to its sum of products"
    )


class ModelCard(BaseModel):
    layers: list[Layer] = Field(
        description="TinyCNN in the notes' order, from one 28x28 image to 10 logits"
    )
    parameters: int
    filters: dict[str, ConvFilters] = Field(
        description="conv1's and conv2's learned kernels and biases, as served"
    )
    weights: WeightsFile = Field(description="the weights being served")
    training: TrainingRecord | None = Field(
        description="from the record the trainer wrote beside the weights"
    )
    training_source: str = Field(description="where `training` comes from, or why it is unknown")
    all_weights: str = Field(
        default="/model/weights",
        description="every weight and bias (fc1's and fc2's too), as float32 bytes",
    )
    _all_weights: bytes = PrivateAttr(
        default=b""
    )  # GET /model/weights' body, made once in describe()


class AllWeights(BaseModel):
    """GET /model/weights: the state_dict's tensors, their float32 values one after another in `data`."""

    sha256: str = Field(description="the weights file's, as in GET /model")
    dtype: str = Field(
        default="float32", description="each value: 4 bytes, IEEE 754, little-endian"
    )
    tensors: dict[str, dict[str, list[int] | int]] = Field(
        description="name (as in the state_dict) -> its shape and the offset (in values) of its first value in data"
    )
    data: str = Field(
        description="base64 of all the values, tensor after tensor, each in row-major (C) order"
    )


@router.get("/model")
async def model_card(request: Request) -> ModelCard:
    """The network being served: its layers with their output shapes and parameters, its weights, how they were made."""
    return request.state.model_card


@router.get(
    "/model/weights",
    response_model=AllWeights,
    responses={304: {"description": "the browser's copy is still these weights"}},
)
async def all_weights(request: Request) -> Response:
    """Every learned weight and bias, conv1 to fc2, for a page that runs the model itself (GET /draw)."""
    card: ModelCard = request.state.model_card
    etag = f'"{card.weights.sha256}"'
    headers = {
        "ETag": etag,
        "Cache-Control": "no-cache",
    }  # the browser keeps it, asks whether it is still current
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(card._all_weights, media_type="application/json", headers=headers)


def describe(model: TinyCNN, weights: Path) -> ModelCard:
    layers = [Layer(**layer) for layer in architecture(model)]
    digest = sha256(weights)
    record = read_record(weights, digest)
    if record is None:
        training = None
        source = f"unknown: no training record of these weights ({record_path(weights).name}) beside them"
    else:
        training = TrainingRecord(
            test_accuracy=record["test_accuracy"], command=record["command"], epochs=len(record["epochs"]),
            date=record["date"], filters_firing=record.get("filters_firing"),
        )  # fmt: skip
        source = (
            f"{record_path(weights).name}, written by the trainer with these weights (same sha256)"
        )
    card = ModelCard(
        layers=layers,
        parameters=sum(layer.parameters for layer in layers),
        filters={
            name: filters_of(conv)
            for name, conv in (("conv1", model.conv1), ("conv2", model.conv2))
        },
        weights=WeightsFile(file=weights.name, bytes=weights.stat().st_size, sha256=digest),
        training=training,
        training_source=source,
    )
    card._all_weights = all_weights_of(model, digest).model_dump_json().encode()
    return card


def all_weights_of(model: nn.Module, digest: str) -> AllWeights:
    """Every tensor of the state_dict, as float32 bytes (exactly the served values), and where each one starts."""
    values, tensors = array("f"), {}
    for name, tensor in model.state_dict().items():
        tensors[name] = {"shape": list(tensor.shape), "offset": len(values)}
        values.extend(tensor.detach().float().flatten().tolist())
    if sys.byteorder == "big":
        values.byteswap()
    return AllWeights(
        sha256=digest, tensors=tensors, data=base64.b64encode(values.tobytes()).decode("ascii")
    )


def filters_of(conv: nn.Conv2d) -> ConvFilters:
    """A conv layer's kernels and biases as plain numbers (float32 values, exactly)."""
    return ConvFilters(weights=conv.weight.tolist(), biases=conv.bias.tolist())


def architecture(model: TinyCNN) -> list[dict]:
    """The layers in the notes' order, each with its output shape for one image and its number of parameters."""

    def layer(name: str, operation: str, shape: list[int], module: nn.Module | None = None) -> dict:
        parameters = sum(p.numel() for p in module.parameters()) if module is not None else 0
        return {
            "name": name,
            "operation": operation,
            "output_shape": shape,
            "parameters": parameters,
        }

    channels, side = 1, IMAGE_SIZE
    layers = [layer("input", "grey levels in 0..1", [channels, side, side])]
    for name, conv in (("conv1", model.conv1), ("conv2", model.conv2)):
        channels = conv.out_channels
        operation = f"Conv2d {conv.in_channels}->{channels}, 3x3, padding 1, then ReLU"
        layers.append(layer(name, operation, [channels, side, side], conv))
        side //= 2
        layers.append(layer("pool", "MaxPool2d 2x2", [channels, side, side]))
    layers.append(layer("flatten", "reshape to one vector", [channels * side * side]))
    for name, linear, then in (
        ("fc1", model.fc1, ", then ReLU"),
        ("fc2", model.fc2, ": one logit per digit"),
    ):
        operation = f"Linear {linear.in_features}->{linear.out_features}{then}"
        layers.append(layer(name, operation, [linear.out_features], linear))
    return layers
