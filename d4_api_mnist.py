"""Serve TinyCNN as a web API: POST 28x28 pixels, get the digit back.

    uvicorn d4_api_mnist:app                    # http://127.0.0.1:8000/docs to try it

The weights come from D4_MODEL_PATH (default: d4_cnn.pt beside this file) and are loaded
once, on the CPU, when the server starts.
"""

import os
import sys
from array import array
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import chain
from pathlib import Path
from typing import Annotated

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from d4.batching import BatchingPredictor
from d4.model import IMAGE_SIZE, LABELS, WeightsError, load_weights

DEFAULT_MODEL_PATH = Path(__file__).with_name("d4_cnn.pt")
# Bodies over 1 MiB get 413 before they are read (a 28x28 JSON array is 6 to 16 KB), so a
# client cannot make the server hold a huge request in memory.
MAX_BODY_BYTES = 1024 * 1024
# Browser pages from these origins (comma-separated) may call the API; none by default.
CORS_ORIGINS = [origin for origin in os.environ.get("D4_CORS_ORIGINS", "").split(",") if origin]
# PyTorch sizes its thread pool from the host's cores, not the container's CPU share; one
# thread is fastest for one small image and keeps a 0.1-CPU Render instance responsive.
TORCH_THREADS = int(os.environ.get("D4_TORCH_THREADS", "1"))


# Request and response models: FastAPI validates against them and shows them on /docs.
Pixel = Annotated[float, Field(ge=0.0, le=1.0, strict=True, allow_inf_nan=False)]
PixelRow = Annotated[list[Pixel], Field(min_length=IMAGE_SIZE, max_length=IMAGE_SIZE)]
# A vertical bar: the digit 1, as an example for /docs.
EXAMPLE_PIXELS = [[1.0 if 4 <= row < 24 and 12 <= col < 16 else 0.0 for col in range(28)] for row in range(28)]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"pixels": EXAMPLE_PIXELS}]})

    pixels: Annotated[
        list[PixelRow],
        Field(
            min_length=IMAGE_SIZE,
            max_length=IMAGE_SIZE,
            description="28 rows of 28 grey levels, 0.0 = background (black) to 1.0 = ink (white), as in MNIST",
        ),
    ]


class Prediction(BaseModel):
    predicted_digit: int = Field(ge=0, le=9, examples=[1])
    confidence: float = Field(ge=0.0, le=1.0, description="probability of the predicted digit", examples=[0.998])
    probabilities: list[float] = Field(
        min_length=len(LABELS), max_length=len(LABELS), description="probability of each digit 0..9, summing to 1"
    )


class Problem(BaseModel):
    message: str = Field(description="what was wrong, in one sentence")
    detail: str | list


class ServiceInfo(BaseModel):
    ok: bool
    demo: str
    endpoint: str
    docs: str
    health: str


class Health(BaseModel):
    status: str


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, BatchingPredictor]]:
    torch.set_num_threads(TORCH_THREADS)
    model_path = Path(os.environ.get("D4_MODEL_PATH", DEFAULT_MODEL_PATH))
    try:
        model = load_weights(model_path)
    except WeightsError as error:
        # Exit here with one line: an exception raised from lifespan would be printed
        # by uvicorn as a long Starlette traceback that buries the reason.
        print(f"error: {error}", file=sys.stderr, flush=True)
        os._exit(1)
    predictor = BatchingPredictor(model)
    predictor.start()
    # What lifespan yields becomes each request's request.state: one predictor per running server.
    yield {"predictor": predictor}
    predictor.stop()


app = FastAPI(
    title="D4 Tiny CNN",
    summary="Classify a handwritten digit (MNIST, 28x28 grey levels) with a tiny CNN.",
    lifespan=lifespan,
    max_body_size=MAX_BODY_BYTES,
)
if CORS_ORIGINS:
    app.add_middleware(CORSMiddleware, allow_origins=CORS_ORIGINS, allow_methods=["GET", "POST"], allow_headers=["*"])


@app.exception_handler(RequestValidationError)
async def explain_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """422 with one readable sentence, plus FastAPI's list without the echoed input."""
    errors = error.errors()
    first = errors[0]
    if first["type"] == "json_invalid":  # loc holds a character position, not a field
        message = f"request body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}"
    else:
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"][1:])
        message = f"{where.lstrip('.') or 'request body'}: {first['msg']}"
    if first["type"] == "json_invalid" or first["loc"] == ("body",):  # no JSON object arrived
        message += ' (send JSON {"pixels": [[28 numbers] x 28]} with Content-Type: application/json)'
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problems)"
    problems = [{"loc": problem["loc"], "msg": problem["msg"], "type": problem["type"]} for problem in errors[:10]]
    return JSONResponse(status_code=422, content={"message": message, "detail": problems})


@app.exception_handler(HTTPException)
async def explain_http_error(request: Request, error: HTTPException) -> JSONResponse:
    """Every other error (400 unreadable body, 404, 405) in the same shape as a 422."""
    body = Problem(message=str(error.detail), detail=str(error.detail))
    return JSONResponse(status_code=error.status_code, content=body.model_dump(), headers=error.headers)


@app.get("/")
async def service_info() -> ServiceInfo:
    return ServiceInfo(
        ok=True,
        demo="D4 Tiny CNN: handwritten digit classifier trained on MNIST",
        endpoint="/predict",
        docs="/docs",
        health="/healthz",
    )


@app.get("/healthz")
async def health() -> Health:
    """Cheap check for Render: the server answers only once the model has loaded."""
    return Health(status="ok")


@app.post(
    "/predict",
    responses={
        400: {"model": Problem, "description": "The body could not be read (not UTF-8, nested too deep)"},
        413: {"description": "The body is over 1 MiB"},
    },
)
async def predict(body: PredictRequest, request: Request) -> Prediction:
    """Classify one 28x28 image of grey levels in 0..1 (white digit on black, like MNIST)."""
    # array() packs the 784 floats in one pass, twice as fast as torch.tensor(nested lists).
    pixels = array("f", chain.from_iterable(body.pixels))
    # The model runs on a worker thread, batched with other waiting requests: the event loop stays free.
    probabilities = await request.state.predictor.probabilities(pixels)
    digit = max(range(len(LABELS)), key=probabilities.__getitem__)
    return Prediction(predicted_digit=digit, confidence=probabilities[digit], probabilities=probabilities)
