"""What the API refuses before an endpoint runs: bodies over a size limit, and calls from other web pages.

Each POST route has its own body limit: a bigger body gets 413 before it is read, so a client
cannot make the server hold a huge request in memory. FastAPI enforces `max_body_size` while
the body streams in, and answers "Content Too Large" (plain text, or JSON when a chunked body
passes the limit); `ExplainTooLarge` answers in the API's error shape instead and names the
limit, so a client learns what to change. Browser pages from other origins may call the API only when
D4_CORS_ORIGINS lists them (`allow_origins_from_env`).
"""

import json
import os

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.datastructures import Headers
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 1024 * 1024  # /predict: a 28x28 JSON array is 6 to 16 KB
MAX_BATCH_IMAGES = 256
MAX_BATCH_BODY_BYTES = 8 * 1024 * 1024  # /predict/batch: 256 images of up to 16 KB, with room to spare
MAX_UPLOAD_BYTES = 5 * 1024 * 1024  # /predict/image: a phone photo as JPEG


def allow_origins_from_env(app: FastAPI) -> None:
    """Let browser pages from the origins in D4_CORS_ORIGINS (comma-separated) call the API; none by default."""
    origins = [origin.strip() for origin in os.environ.get("D4_CORS_ORIGINS", "").split(",") if origin.strip()]
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"], allow_headers=["*"])


class ExplainTooLarge:
    """A 413 for a body over its route's limit, in the API's error shape and naming the limit.

    Starlette answers a body declared too large with plain text, and FastAPI one that passes the
    limit while it streams in (chunked, with no declared size) with {"message": "Content Too
    Large"}: neither says the limit. Any 413 for a body over the limit is replaced; the 413s that
    endpoints raise themselves (a picture with too many pixels) pass through.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0
        replaced = False

        async def receive_counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def send_explained(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] == 413:
                limit = scope.get(MAX_BODY_SIZE_SCOPE_KEY)
                if limit is not None and max(_declared_size(scope), received) > limit:
                    replaced = True
                    await _send_problem(send, limit, scope["path"])
                    return
            if replaced:  # drop the body of the 413 replaced
                return
            await send(message)

        await self.app(scope, receive_counted, send_explained)


def _declared_size(scope: Scope) -> int:
    """The body's size from its Content-Length; 0 when it declares none (chunked) or not a number."""
    declared = Headers(scope=scope).get("content-length", "")
    return int(declared) if declared.isdigit() else 0


async def _send_problem(send: Send, limit: int, path: str) -> None:
    message = f"the request body is too large: {path} accepts at most {limit / 2**20:g} MiB"
    body = json.dumps({"message": message, "detail": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
