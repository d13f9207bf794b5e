"""POST /predict/image: a photo, scan or drawing of one digit, prepared as MNIST's digits were (d4/preprocess.py)."""

import logging
import time
from array import array
from typing import Annotated, BinaryIO

import anyio
from fastapi import APIRouter, File, Query, Request, UploadFile
from pydantic import Field
from starlette.exceptions import HTTPException

from d4.api_errors import RETRY_AFTER_S
from d4.api_models import Explain, Explanation, Prediction, Problem, to_prediction
from d4.batching import PIXELS_PER_IMAGE
from d4.body_route import BodyRoute
from d4.limits import MAX_UPLOAD_BYTES
from d4.model import IMAGE_SIZE
from d4.preprocess import (
    MAX_DECODE_BYTES,
    MAX_IMAGE_PIXELS,
    ImageRejected,
    ImageTooLarge,
    average_of_views,
    image_to_views,
)

router = APIRouter(route_class=BodyRoute)
# Pictures are decoded one at a time (d4/serving.py); at most this many wait for their turn, and
# one more gets 503. A waiting upload is not read: Starlette keeps up to 1 MiB of it in memory
# and the rest in a temporary file, so the queue holds at most 8 MiB of bodies.
MAX_WAITING_PICTURES = 8
# An upload waits this long at most for its turn, then gets 503: 8 of the slowest pictures take
# ~40 s at a free instance's 0.1 CPU (a 4096x4096 PNG ~4.4 s, docs/SECURITY.md#memory).
WAIT_FOR_DECODER_S = 60
# A decode running longer than this is stuck, and /healthz says so (d4/health.py), so that Render
# restarts the instance: a thread cannot be stopped. Pictures that would take long are refused
# before decoding (d4/preprocess.py: pixels, memory, JPEG scans); the slowest allowed took ~5 s.
DECODER_STUCK_S = 30
log = logging.getLogger(__name__)


class DecoderClock:
    """When the picture being decoded started, for /healthz: a decode past `stuck_after_s` is stuck."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.stuck_after_s: float = DECODER_STUCK_S

    def stuck(self) -> bool:
        return self.since is not None and time.monotonic() - self.since > self.stuck_after_s


class ImagePrediction(Prediction):
    input: list[list[float]] | None = Field(
        default=None,
        description="with ?return_input=true: the 28x28 grey levels the model saw, after preprocessing",
    )


@router.post(
    "/predict/image",
    max_body_size=MAX_UPLOAD_BYTES,
    response_model_exclude_none=True,
    responses={
        400: {
            "model": Problem,
            "description": "The body could not be read (a broken multipart upload)",
        },
        413: {
            "model": Problem,
            "description": f"The upload is over {MAX_UPLOAD_BYTES // 2**20} MiB or {MAX_IMAGE_PIXELS:,} pixels, "
            f"or takes over {MAX_DECODE_BYTES // 2**20} MiB to decode",
        },
        422: {
            "model": Problem,
            "description": "Not an image, a broken or animated one, a thin strip, or blank",
        },
        503: {
            "model": Problem,
            "description": f"{MAX_WAITING_PICTURES} pictures already wait to be decoded, this one waited "
            f"{WAIT_FOR_DECODER_S} s for its turn, or the server is shutting down: try again after Retry-After seconds",
        },
    },
)
async def predict_image(
    request: Request,
    file: Annotated[
        UploadFile, File(description="a picture of one digit: PNG, JPEG or MPO, GIF, BMP, WebP")
    ],
    return_input: Annotated[
        bool, Query(description="also return the 28x28 input the model saw")
    ] = False,
    explain: Explain = False,
) -> ImagePrediction:
    """Classify a photo, scan or drawing of one digit, dark on light or light on dark, any size.

    It is prepared the way MNIST's digits were (see d4/preprocess.py): cropped to the ink,
    scaled to fit 20x20, centred by its centre of mass in 28x28, white on black.
    """
    views = await _prepared(file.file, request.state.image_workers, request.state.decoder_clock)
    # The picture and 4 nearby views of it in one batch; their answers averaged read people's digits better.
    answers = await request.state.predictor.answers(views)
    probabilities = average_of_views([answer["probabilities"] for answer in answers])
    prediction = ImagePrediction(**to_prediction(probabilities).model_dump())
    upright = views[:PIXELS_PER_IMAGE]  # the prepared picture itself, before the nearby views
    if return_input:
        prediction.input = [
            upright[row * IMAGE_SIZE : (row + 1) * IMAGE_SIZE].tolist() for row in range(IMAGE_SIZE)
        ]
    if explain:
        prediction.explanation = Explanation(**await request.state.predictor.explanation(upright))
    return prediction


async def _prepared(upload: BinaryIO, decoder: anyio.CapacityLimiter, clock: DecoderClock) -> array:
    """The picture's views for the model, worked out in its turn for the decoder; 503 when the queue is full
    or the turn does not come."""
    if decoder.statistics().tasks_waiting >= MAX_WAITING_PICTURES:
        raise _busy(f"{MAX_WAITING_PICTURES} pictures are already waiting to be decoded")
    acquired = False
    with anyio.move_on_after(WAIT_FOR_DECODER_S):
        await decoder.acquire()
        acquired = True
    if not acquired:
        raise _busy(f"the picture waited {WAIT_FOR_DECODER_S} s for its turn to be decoded")
    try:
        # Decoding is slow next to inference: a worker thread does it so the event loop stays free.
        return await anyio.to_thread.run_sync(_read_and_prepare, upload, clock)
    except ImageTooLarge as error:
        raise HTTPException(status_code=413, detail=str(error)) from None
    except ImageRejected as error:
        raise HTTPException(status_code=422, detail=str(error)) from None
    except Exception:  # a decoder's failure not foreseen: the upload is at fault, never the server
        log.exception("a picture could not be read")
        raise HTTPException(
            status_code=422, detail="the picture could not be read: it is damaged"
        ) from None
    finally:
        decoder.release()


def _busy(reason: str) -> HTTPException:
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    return HTTPException(
        status_code=503, detail=f"{reason}; try again in a few seconds", headers=headers
    )


def _read_and_prepare(upload: BinaryIO, clock: DecoderClock) -> array:
    """In the decoder's turn: read the upload's body (only now, so that waiting ones hold no memory) and prepare it."""
    clock.since = time.monotonic()
    try:
        return image_to_views(upload.read())
    finally:
        clock.since = None
