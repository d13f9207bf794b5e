"""D4 Tiny CNN as a web API: POST 28x28 pixels (or a picture), get the digit back.

    uvicorn d4_api_mnist:app        # then open http://127.0.0.1:8000/draw, or /docs to try each endpoint

The first part is the course notes' API (section 4.2), in their order and under their names
(`app` comes after the `lifespan` that loads the model, which it needs); a line that does a
step differently says which line of the notes it replaces and why. The
second part wires in what goes beyond the notes, one line each, from modules under d4/.
The weights come from D4_MODEL_PATH (default: d4_cnn.pt beside this file).
"""

import os  # noqa: I001 (d4 is imported before torch on purpose, see below)
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import d4  # noqa: F401 (first: it silences torch's warning that NumPy is missing; the deploy installs none)
import torch
from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict

from d4 import batch_endpoint, health, image_endpoint, model_card, pages
from d4.api_errors import add_error_handlers
from d4.api_models import EXAMPLE_PIXELS, TOO_LARGE, Explain, Explanation, Pixels, Prediction, ServiceInfo, packed
from d4.body_route import BodyRoute
from d4.limits import MAX_BODY_BYTES, ExplainTooLarge, allow_origins_from_env
from d4.model import LABELS, TinyCNN
from d4.pages import HOME_PAGE, serve_docs_offline, wants_html
from d4.serving import ServerState, exit_on_bad_weights, serving

DEFAULT_MODEL_PATH = Path(__file__).with_name("d4_cnn.pt")
device = "cpu"


class DigitPixels(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"pixels": EXAMPLE_PIXELS}]})

    # The notes' list[list[float]], checked before the model runs: 28 rows of 28 numbers in 0..1.
    pixels: Pixels


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[ServerState]:
    # The notes load the model when the module is imported; lifespan loads it when the server
    # starts, so a bad file stops start-up in one line and each server gets its own thread.
    model_path = Path(os.environ.get("D4_MODEL_PATH", DEFAULT_MODEL_PATH))  # the notes' "d4_cnn.pt", or another
    model = TinyCNN().to(device)
    with exit_on_bad_weights(model_path):  # d4/serving.py: a missing or foreign file, in one line, not a traceback
        # weights_only=True: torch refuses a pickle that carries code, so a weights file cannot run anything.
        model.load_state_dict(torch.load(model_path, map_location=device, weights_only=True))
    model.eval()
    async with serving(model, model_path) as state:  # d4/serving.py: the inference thread, GET /model's card
        yield state


app = FastAPI(
    title="D4 Tiny CNN",
    summary="Classify a handwritten digit (MNIST, 28x28 grey levels) with a tiny CNN.",
    lifespan=lifespan,
    docs_url=None,  # /docs and /redoc are served offline instead (d4/pages.py, wired in below)
    redoc_url=None,
)
app.router.route_class = BodyRoute  # d4/body_route.py: JSON parsed 3x faster, uploads checked to be whole


@app.get("/", responses={200: {"content": {"text/html": {}}, "description": "JSON, or a page for a browser"}})
async def root(request: Request) -> ServiceInfo:
    if wants_html(request):  # not in the notes: a browser gets a page with links to /draw, /docs and /model
        return HOME_PAGE
    return ServiceInfo(
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


@app.post("/predict", max_body_size=MAX_BODY_BYTES, responses={413: TOO_LARGE}, response_model_exclude_none=True)
async def predict(data: DigitPixels, request: Request, explain: Explain = False) -> Prediction:
    """Classify one 28x28 image of grey levels in 0..1 (white digit on black, like MNIST)."""
    # The notes' X = torch.tensor(data.pixels, dtype=torch.float32), ~4x faster as a packed buffer.
    X = packed([data.pixels])
    # The notes' check `if X.shape != (28, 28)` is done: DigitPixels answered any other shape with a 422.
    # The notes' X.unsqueeze(0).unsqueeze(0) and `with torch.no_grad(): logits = model(X)` run on the
    # inference thread (d4/batching.py), in one forward pass with the other requests waiting.
    probs = (await request.state.predictor.probabilities(X))[0]  # the notes' probs = torch.softmax(logits, dim=1)[0]
    pred = max(range(len(LABELS)), key=probs.__getitem__)  # the notes' pred = logits.argmax(dim=1).item(): same digit
    prediction = Prediction(predicted_digit=pred, confidence=probs[pred], probabilities=probs)
    if explain:  # not in the notes: feature maps and saliency, worked out on the inference thread
        prediction.explanation = Explanation(**await request.state.predictor.explanation(X))
    return prediction


# Beyond the notes, one line each; every module says what it adds.
app.include_router(image_endpoint.router)  # POST /predict/image: a photo or drawing of a digit
app.include_router(batch_endpoint.router)  # POST /predict/batch: up to 256 images in one forward pass
app.include_router(model_card.router)  # GET /model: the layers, the weights and how they were trained
app.include_router(pages.router)  # GET /draw: draw a digit and see inside the network
serve_docs_offline(app)  # /docs and /redoc with their JavaScript and CSS served here, not from a CDN
app.include_router(health.router)  # GET /healthz: Render's health check, without running the model
add_error_handlers(app)  # every error as {"message", "detail"}, never echoing the input
app.add_middleware(ExplainTooLarge)  # a body over its route's limit: 413 naming the limit
allow_origins_from_env(app)  # other web pages may call the API only if D4_CORS_ORIGINS names them
