"""POST /predict/batch: up to 256 images of 28x28 grey levels in one request and one forward pass."""

from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from d4.api_models import EXAMPLE_PIXELS, TOO_LARGE, Pixels, Prediction, packed
from d4.body_route import BodyRoute
from d4.limits import MAX_BATCH_BODY_BYTES, MAX_BATCH_IMAGES

router = APIRouter(route_class=BodyRoute)


class BatchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"images": [EXAMPLE_PIXELS]}]}
    )

    images: Annotated[list[Pixels], Field(min_length=1, max_length=MAX_BATCH_IMAGES)]


class BatchPrediction(BaseModel):
    predictions: list[Prediction] = Field(description="one per image, in the order they were sent")


@router.post(
    "/predict/batch",
    max_body_size=MAX_BATCH_BODY_BYTES,
    responses={413: TOO_LARGE},
    response_model_exclude_none=True,
)
async def predict_batch(data: BatchRequest, request: Request) -> BatchPrediction:
    """Classify up to 256 images of 28x28 grey levels in one forward pass; answers come in the same order."""
    answers = await request.state.predictor.answers(
        packed([row for image in data.images for row in image])
    )
    return BatchPrediction(predictions=[Prediction(**answer) for answer in answers])
