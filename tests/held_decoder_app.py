"""The API with three routes more, for tests on a real server: hold the picture decoder, see who waits, release it.

    uvicorn held_decoder_app:app --app-dir tests

While the decoder is held, uploads to /predict/image queue for it exactly as they do behind a
slow picture, but for as long as a test needs.
"""

from fastapi import Request

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
