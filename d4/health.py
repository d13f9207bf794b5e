"""GET /healthz: Render's health check, answered without running the model."""

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

router = APIRouter()


class Health(BaseModel):
    status: str


UNHEALTHY = {
    "model": Health,
    "description": "The inference thread has stopped or is stuck, or a picture's decoding is stuck",
}


@router.get("/healthz", responses={503: UNHEALTHY})
async def health(request: Request, response: Response) -> Health:
    """Cheap check for Render: ok once the model has loaded, while its thread is alive and answering,
    and while no picture's decoding has run past DECODER_STUCK_S (d4/image_endpoint.py).

    It never runs the model: it asks the inference thread's and the decoder's state, so a probe
    costs microseconds. A thread cannot be stopped: Render restarts an instance that is unhealthy.
    """
    if not request.state.predictor.healthy():
        response.status_code = 503
        return Health(status="unavailable: the inference thread has stopped or is stuck")
    if request.state.decoder_clock.stuck():
        response.status_code = 503
        return Health(status="unavailable: a picture's decoding is stuck")
    return Health(status="ok")
