"""D4 Tiny CNN as a web API: POST 28x28 pixels (or a picture), get the digit back.

    uvicorn d4_api_mnist:app        # then open http://127.0.0.1:8000/draw, or /docs

The first part is the course notes' API (section 4.2), in their order and under their names;
a line that does a step differently says which line of the notes it replaces and why. The
second part wires in what goes beyond the notes, one line each, from modules under d4/.
The weights come from D4_MODEL_PATH (default: d4_cnn.pt beside this file).
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict

from d4 import (
    api_errors,
    api_models,
    batch_endpoint,
    health,
    image_endpoint,
    limits,
    model_card,
    pages,
    serving,
)
from d4.api_models import TOO_LARGE, Explain, Prediction
from d4.body_route import BodyRoute
from d4.limits import MAX_BODY_BYTES
from d4.model import TinyCNN

app = FastAPI(
    title="D4 Tiny CNN",
    summary="Classify a handwritten digit (MNIST, 28x28 grey levels) with a tiny CNN.",
    docs_url=None,  # /docs and /redoc are served offline instead (d4/pages.py, wired in below)
    redoc_url=None,
)
app.router.route_class = BodyRoute  # d4/body_route.py: JSON parsed faster, uploads checked whole
device = "cpu"


class DigitPixels(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=api_models.PIXELS_EXAMPLE)

    # The notes' list[list[float]], checked before the model runs: 28 rows of 28 numbers in 0..1.
    pixels: api_models.Pixels


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[serving.ServerState]:
    # The notes load the model when the module is imported; lifespan loads it when the server
    # starts, so a bad file stops start-up in one line and each server gets its own thread.
    model_path = Path(os.environ.get("D4_MODEL_PATH", Path(__file__).with_name("d4_cnn.pt")))
    model = TinyCNN().to(device)
    with serving.exit_on_bad_weights(model_path):  # a bad file: one line, no traceback
        # weights_only=True: torch refuses a pickle that carries code, so the file cannot run any.
        model.load_state_dict(torch.load(model_path, map_location=device, weights_only=True))
    model.eval()
    async with serving.serving(model, model_path, classify) as state:  # the inference thread
        yield state


app.router.lifespan_context = lifespan  # FastAPI(lifespan=...) would need it above `app`


@app.get("/", responses={200: {"content": {"text/html": {}}, "description": "JSON, or a page"}})
async def root(request: Request) -> api_models.ServiceInfo:
    if pages.wants_html(request):  # not in the notes: a browser gets a page of links
        return pages.HOME_PAGE
    return api_models.ServiceInfo(
        ok=True,
        demo="D4 Tiny CNN: handwritten digit classifier trained on MNIST",
        endpoint="/predict",
        image_endpoint="/predict/image",
        batch_endpoint="/predict/batch",
        ui="/draw",
        model="/model",
        docs="/docs",
        health="/healthz",
    )


@app.post("/predict", max_body_size=MAX_BODY_BYTES, responses={413: TOO_LARGE},
          response_model_exclude_none=True)  # fmt: skip
async def predict(data: DigitPixels, request: Request, explain: Explain = False) -> Prediction:
    """Classify one 28x28 image of grey levels in 0..1 (white digit on black, like MNIST)."""
    # The notes' X = torch.tensor(data.pixels, dtype=torch.float32) and X.unsqueeze(0).unsqueeze(0):
    # the same pixels in a flat buffer, faster to make, that the inference thread turns into
    # [1, 1, 28, 28] (d4/batching.py). DigitPixels has already answered any other shape with a 422.
    X = api_models.packed(data.pixels)
    # The notes' forward pass and answer are classify() below. The inference thread runs it
    # once for all the requests waiting together, which serves many more of them a second.
    (answer,) = await request.state.predictor.answers(X)
    prediction = Prediction(**answer)
    if explain:  # not in the notes: feature maps and saliency, from the inference thread too
        explanation = await request.state.predictor.explanation(X)
        prediction.explanation = api_models.Explanation(**explanation)
    return prediction


def classify(model: TinyCNN, X: torch.Tensor) -> list[dict]:
    """The notes' forward pass and answer, for a batch of images X [N, 1, 28, 28].

    The notes' [0] and .item() take the one image's row; here each image gets its own answer.
    """
    with torch.no_grad():
        logits = model(X)
    pred = logits.argmax(dim=1).tolist()
    probs = torch.softmax(logits, dim=1).tolist()
    return [
        {"predicted_digit": digit, "confidence": row[digit], "probabilities": row}
        for digit, row in zip(pred, probs, strict=True)
    ]


# Beyond the notes, one line each; every module says what it adds.
app.include_router(image_endpoint.router)  # POST /predict/image: a photo or drawing of a digit
app.include_router(batch_endpoint.router)  # POST /predict/batch: up to 256 images in one pass
app.include_router(model_card.router)  # GET /model: the layers, the weights, how they were made
app.include_router(pages.router)  # GET /draw: draw a digit and see inside the network
pages.serve_docs_offline(app)  # /docs and /redoc with their scripts served here, not from a CDN
app.include_router(health.router)  # GET /healthz: Render's health check, without the model
api_errors.add_error_handlers(app)  # every error as {"message", "detail"}, never echoing input
app.add_middleware(limits.ExplainTooLarge)  # a body over its route's limit: 413 naming the limit
app.add_middleware(limits.BodyBudget)  # bodies in flight: 32 MiB together, none stalled
limits.allow_origins_from_env(app)  # other web pages may call the API if D4_CORS_ORIGINS says so
