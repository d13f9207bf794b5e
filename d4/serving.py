"""What the API does around the notes' loaded model while it serves: the inference thread and start-up.

`serving(model, path, classify)` wraps the time the server runs: it starts the inference
thread that runs `classify` on batches of requests (d4/batching.py), describes the model
for GET /model, and hands every request that state; when the server stops, it answers what
is queued and ends the thread.
`exit_on_bad_weights(path)` turns a weights file that cannot be loaded into one line and exit 1.
"""

import gc
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TypedDict

import anyio

from d4.batching import BatchingPredictor, Classify
from d4.image_endpoint import DecoderClock
from d4.model import TinyCNN
from d4.model_card import ModelCard, describe
from d4.weights import WeightsError, weights_errors_explained

# PyTorch sizes its thread pool from the host's cores, not the container's CPU share; one
# thread is fastest for one small image and keeps a 0.1-CPU Render instance responsive.
TORCH_THREADS = int(os.environ.get("D4_TORCH_THREADS", "1"))


class ServerState(TypedDict):
    """What lifespan yields becomes each request's request.state: one set per running server."""

    predictor: BatchingPredictor
    model_card: ModelCard
    # Decoding one picture takes up to MAX_DECODE_BYTES (128 MiB) at its peak; a 4096x4096 RGBA PNG
    # measured 81 MB (2026-12-02, d4/preprocess.py). One at a time keeps a 512 MB instance safe.
    image_workers: anyio.CapacityLimiter
    decoder_clock: DecoderClock  # how long the picture being decoded has taken, for /healthz
    # A large JSON body is parsed in a worker thread (d4/body_route.py), one at a time.
    json_parser: anyio.CapacityLimiter


@contextmanager
def exit_on_bad_weights(path: Path) -> Iterator[None]:
    """Exit with one line when the weights cannot be loaded.

    An exception raised from lifespan would be printed by uvicorn as a long Starlette
    traceback that buries the reason.
    """
    try:
        with weights_errors_explained(path):
            yield
    except WeightsError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        os._exit(1)


@asynccontextmanager
async def serving(model: TinyCNN, path: Path, classify: Classify) -> AsyncIterator[ServerState]:
    model_card = describe(model, path)
    predictor = BatchingPredictor(model, classify, threads=TORCH_THREADS)
    predictor.start()
    # Start-up leaves ~190,000 objects (torch, pydantic, FastAPI) that live as long as the
    # server. Frozen, Python's oldest-generation collections skip them: each took ~80 ms under
    # load, stalling every request, /healthz included. No full collection first: it found ~50
    # garbage objects and took ~100 ms, a whole second of a free instance's 0.1 CPU at wake-up.
    gc.freeze()
    try:
        yield {
            "predictor": predictor,
            "model_card": model_card,
            "image_workers": anyio.CapacityLimiter(1),
            "decoder_clock": DecoderClock(),
            "json_parser": anyio.CapacityLimiter(1),
        }
    finally:
        predictor.stop()
