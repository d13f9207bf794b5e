"""The API with routes more, for tests on a real server: hold the picture decoder, see who waits, release it;
slow a decode down.

    uvicorn held_decoder_app:app --app-dir tests

While the decoder is held, uploads to /predict/image queue for it exactly as they do behind a
slow picture, but for as long as a test needs.
"""

import io
import time

from fastapi import Request

from conftest import drawn, encode
from d4 import image_endpoint
from d4_api_mnist import app

TEST = object()  # the decoder's borrower while a test holds it


@app.post("/test/decoder/hold")
async def hold(request: Request) -> None:
    await request.state.image_workers.acquire_on_behalf_of(TEST)


@app.post("/test/decoder/release")
async def release(request: Request) -> None:
    request.state.image_workers.release_on_behalf_of(TEST)


@app.get("/test/decoder/waiting")
async def waiting(request: Request) -> int:
    return request.state.image_workers.statistics().tasks_waiting


class SlowUpload(io.BytesIO):
    """An upload whose reading, done in the decoder's turn, takes `seconds`: a slow decode, as long as a test needs."""

    def __init__(self, data: bytes, seconds: float) -> None:
        super().__init__(data)
        self.seconds = seconds

    def read(self, size: int | None = -1) -> bytes:
        time.sleep(self.seconds)
        return super().read(size)


@app.post("/test/decoder/slow")
async def slow(request: Request, seconds: float, stuck_after_s: float) -> int:
    """Decode a picture the API's way, taking `seconds`, with the decoder called stuck past `stuck_after_s`."""
    clock = request.state.decoder_clock
    clock.stuck_after_s = stuck_after_s
    try:
        upload = SlowUpload(encode(drawn(7), "PNG"), seconds)
        return len(await image_endpoint._prepared(upload, request.state.image_workers, clock))
    finally:
        clock.stuck_after_s = image_endpoint.DECODER_STUCK_S
