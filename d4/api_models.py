"""The shapes the API's JSON takes: pixels in, predictions and errors out.

FastAPI validates requests against these models and shows them, with examples, on /docs.
"""

from array import array
from typing import Annotated

from fastapi import Query
from pydantic import BaseModel, Field

from d4.model import IMAGE_SIZE, LABELS

Pixel = Annotated[float, Field(ge=0.0, le=1.0, strict=True, allow_inf_nan=False)]
PixelRow = Annotated[list[Pixel], Field(min_length=IMAGE_SIZE, max_length=IMAGE_SIZE)]
Pixels = Annotated[
    list[PixelRow],
    Field(
        min_length=IMAGE_SIZE,
        max_length=IMAGE_SIZE,
        description="28 rows of 28 grey levels, 0.0 = background (black) to 1.0 = ink (white), as in MNIST",
    ),
]
# A vertical bar: the digit 1, as an example for /docs.
EXAMPLE_PIXELS = [
    [1.0 if 4 <= row < 24 and 12 <= col < 16 else 0.0 for col in range(28)] for row in range(28)
]
PIXELS_EXAMPLE = {"examples": [{"pixels": EXAMPLE_PIXELS}]}  # /predict's example body, on /docs


class Explanation(BaseModel):
    feature_maps: dict[str, list[list[list[float]]]] = Field(
        description="what each conv block made of the image, after pooling and ReLU: "
        "conv1 is 8 maps of 14x14, conv2 is 16 maps of 7x7 (each map is one learned filter's response)"
    )
    fc1: list[float] = Field(
        min_length=64,
        max_length=64,
        description="fc1's 64 outputs, after ReLU: conv2's 16x7x7 = 784 values flattened, then Linear 784->64",
    )
    logits: list[float] = Field(
        min_length=len(LABELS),
        max_length=len(LABELS),
        description="fc2's 10 digit logits (64->10), before softmax; softmax of these is this image's probabilities",
    )
    saliency: list[list[float]] = Field(
        description="28x28 in 0..1: how much each input pixel moved the predicted digit's score "
        "(|gradient x input|, scaled to its largest value); bright where the strokes decided the answer"
    )


class Prediction(BaseModel):
    predicted_digit: int = Field(ge=0, le=9, examples=[1])
    confidence: float = Field(
        ge=0.0, le=1.0, description="probability of the predicted digit", examples=[0.998]
    )
    probabilities: list[float] = Field(
        min_length=len(LABELS),
        max_length=len(LABELS),
        description="probability of each digit 0..9, summing to 1",
    )
    explanation: Explanation | None = Field(
        default=None, description="with ?explain=true: what the network saw"
    )


class Problem(BaseModel):
    message: str = Field(description="what was wrong, in one sentence")
    detail: str | list


TOO_LARGE = {"model": Problem, "description": "The body is over the size limit"}
Explain = Annotated[
    bool,
    Query(
        description="also return both conv blocks' feature maps, fc1's 64 values, the 10 logits and a saliency map"
    ),
]


class ServiceInfo(BaseModel):
    ok: bool
    demo: str
    endpoint: str
    image_endpoint: str
    batch_endpoint: str
    ui: str
    model: str
    docs: str
    health: str


def to_prediction(probs: list[float]) -> Prediction:
    """The answer for one image's 10 probabilities: the likeliest digit, its probability, and all ten."""
    pred = max(range(len(LABELS)), key=probs.__getitem__)
    return Prediction(predicted_digit=pred, confidence=probs[pred], probabilities=probs)


def packed(rows: list[list[float]]) -> array:
    """Rows of grey levels, one after another, in one float32 buffer that torch reads without a copy.

    The inference thread views it as the images' tensor (d4/batching.py). For one 28x28 image
    this is 3.8x faster than torch.tensor on the nested lists (docs/performance.md).
    """
    pixels = array("f")
    for row in rows:
        pixels.fromlist(row)
    return pixels
