"""GET /model: the network being served, its weights file, and how those weights were made.

The layers come from TinyCNN itself (d4.model.architecture), in the notes' order with their
output shapes and parameter counts; the training record (d4_cnn.json, written by the trainer)
is shown only when its sha256 says it describes these very weights.
"""

from pathlib import Path

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from d4.model import TinyCNN, architecture
from d4.report import read_record, record_path, sha256

router = APIRouter()


class Layer(BaseModel):
    name: str = Field(description="the attribute in TinyCNN, as in the course notes")
    operation: str
    output_shape: list[int] = Field(description="for one image: [channels, height, width], or [features]")
    parameters: int = Field(description="learned weights and biases")


class WeightsFile(BaseModel):
    file: str
    bytes: int
    sha256: str


class TrainingRecord(BaseModel):
    test_accuracy: float = Field(description="on the 10,000 MNIST test images")
    command: str = Field(description="the training run that made these weights")
    epochs: int
    date: str


class ModelCard(BaseModel):
    layers: list[Layer] = Field(description="TinyCNN in the notes' order, from one 28x28 image to 10 logits")
    parameters: int
    weights: WeightsFile = Field(description="the weights being served")
    training: TrainingRecord | None = Field(description="from the record the trainer wrote beside the weights")
    training_source: str = Field(description="where `training` comes from, or why it is unknown")


@router.get("/model")
async def model_card(request: Request) -> ModelCard:
    """The network being served: its layers with their output shapes and parameters, its weights, how they were made."""
    return request.state.model_card


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
            date=record["date"],
        )  # fmt: skip
        source = f"{record_path(weights).name}, written by the trainer with these weights (same sha256)"
    return ModelCard(
        layers=layers,
        parameters=sum(layer.parameters for layer in layers),
        weights=WeightsFile(file=weights.name, bytes=weights.stat().st_size, sha256=digest),
        training=training,
        training_source=source,
    )
