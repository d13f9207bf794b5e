"""GET /healthz: Render's health check, answered without running the model."""

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

router = APIRouter()


class Health(BaseModel):
    status: str


UNHEALTHY = {"model": Health, "description": "The inference thread has stopped or is stuck"}


@router.get("/healthz", responses={503: UNHEALTHY})
async def health(request: Request, response: Response) -> Health:
    """Cheap check for Render: ok once the model has loaded and while its thread is alive and answering.

    It never runs the model: it asks the inference thread's state, so a probe costs microseconds.
    """
    if request.state.predictor.healthy():
        return Health(status="ok")
    response.status_code = 503
    return Health(status="unavailable: the inference thread has stopped or is stuck")
