"""POST /predict/image: a photo, scan or drawing of one digit, prepared as MNIST's digits were (d4/preprocess.py)."""

from array import array
from typing import Annotated, BinaryIO

import anyio
import torch
from fastapi import APIRouter, File, Query, Request, UploadFile
from pydantic import Field
from starlette.exceptions import HTTPException

from d4.api_errors import RETRY_AFTER_S
from d4.api_models import Explain, Explanation, Prediction, Problem, to_prediction
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


class ImagePrediction(Prediction):
    input: list[list[float]] | None = Field(
        default=None, description="with ?return_input=true: the 28x28 grey levels the model saw, after preprocessing"
    )


@router.post(
    "/predict/image",
    max_body_size=MAX_UPLOAD_BYTES,
    response_model_exclude_none=True,
    responses={
        400: {"model": Problem, "description": "The body could not be read (a broken multipart upload)"},
        413: {
            "model": Problem,
            "description": f"The upload is over {MAX_UPLOAD_BYTES // 2**20} MiB or {MAX_IMAGE_PIXELS:,} pixels, "
            f"or takes over {MAX_DECODE_BYTES // 2**20} MiB to decode",
        },
        422: {"model": Problem, "description": "Not an image, a broken or animated one, a thin strip, or blank"},
        503: {
            "model": Problem,
            "description": f"{MAX_WAITING_PICTURES} pictures already wait to be decoded, or the server is shutting "
            f"down: try again after Retry-After seconds",
        },
    },
)
async def predict_image(
    request: Request,
    file: Annotated[UploadFile, File(description="a picture of one digit: PNG, JPEG or MPO, GIF, BMP, WebP")],
    return_input: Annotated[bool, Query(description="also return the 28x28 input the model saw")] = False,
    explain: Explain = False,
) -> ImagePrediction:
    """Classify a photo, scan or drawing of one digit, dark on light or light on dark, any size.

    It is prepared the way MNIST's digits were (see d4/preprocess.py): cropped to the ink,
    scaled to fit 20x20, centred by its centre of mass in 28x28, white on black.
    """
    pixels = await _prepared(file.file, request.state.image_workers)
    views = torch.frombuffer(pixels, dtype=torch.float32).view(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    # The picture and 4 nearby views of it in one batch; their answers averaged read people's digits better.
    answers = await request.state.predictor.answers(views)
    probabilities = average_of_views([answer["probabilities"] for answer in answers])
    prediction = ImagePrediction(**to_prediction(probabilities).model_dump())
    upright = views[:1]  # the prepared picture itself, before the nearby views
    if return_input:
        prediction.input = upright[0, 0].tolist()
    if explain:
        prediction.explanation = Explanation(**await request.state.predictor.explanation(upright))
    return prediction


async def _prepared(upload: BinaryIO, decoder: anyio.CapacityLimiter) -> array:
    """The picture's views for the model, worked out in its turn for the decoder; 503 when the queue is full."""
    if decoder.statistics().tasks_waiting >= MAX_WAITING_PICTURES:
        raise HTTPException(
            status_code=503,
            detail=f"{MAX_WAITING_PICTURES} pictures are already waiting to be decoded; try again in a few seconds",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    try:
        # Decoding is slow next to inference: a worker thread does it so the event loop stays free.
        return await anyio.to_thread.run_sync(_read_and_prepare, upload, limiter=decoder)
    except ImageTooLarge as error:
        raise HTTPException(status_code=413, detail=str(error)) from None
    except ImageRejected as error:
        raise HTTPException(status_code=422, detail=str(error)) from None


def _read_and_prepare(upload: BinaryIO) -> array:
    """In the decoder's turn: read the upload's body (only now, so that waiting ones hold no memory) and prepare it."""
    return image_to_views(upload.read())
