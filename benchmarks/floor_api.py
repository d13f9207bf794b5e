"""The floor for bench_api.py: the least a FastAPI app can do to answer /predict as ours does.

uvicorn and FastAPI with one route that reads the body, parses it with the same parser as the
API (pydantic_core.from_json), checks only that it holds 28 rows of 28 numbers, and runs the
same batched forward pass: the API's own `classify` on its inference thread (d4/batching.py).
No validation beyond the shape, no error handlers, no middleware, no other routes.

    uvicorn floor_api:app --app-dir benchmarks
"""

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pydantic_core
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from d4.api_models import packed  # noqa: E402
from d4.batching import BatchingPredictor  # noqa: E402
from d4.weights import load_weights  # noqa: E402
from d4_api_mnist import classify  # noqa: E402

SIDE = 28


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict]:
    model = load_weights(os.environ.get("D4_MODEL_PATH", "d4_cnn.pt"))
    predictor = BatchingPredictor(
        model, classify, threads=int(os.environ.get("D4_TORCH_THREADS", "1"))
    )
    predictor.start()
    try:
        yield {"predictor": predictor}
    finally:
        predictor.stop()


app = FastAPI(lifespan=lifespan, openapi_url=None)


@app.get("/")
async def health() -> Response:
    return Response("ok")


@app.post("/predict")
async def predict(request: Request) -> Response:
    pixels = pydantic_core.from_json(await request.body()).get("pixels")
    if len(pixels) != SIDE or any(len(row) != SIDE for row in pixels):
        return JSONResponse({"error": "pixels must be 28x28"}, status_code=422)
    (answer,) = await request.state.predictor.answers(packed(pixels))
    return JSONResponse(answer)
