"""What the API refuses before an endpoint runs: bodies over a size limit, and calls from other web pages.

Each POST route has its own body limit: a bigger body gets 413 before it is read, so a client
cannot make the server hold a huge request in memory. FastAPI enforces `max_body_size` while
the body streams in, and Starlette then answers with a plain-text "Content Too Large";
`ExplainTooLarge` replaces that text with the API's error shape and names the limit, so a client
learns what to change. Browser pages from other origins may call the API only when
D4_CORS_ORIGINS lists them (`allow_origins_from_env`).
"""

import json
import os

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
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
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replaced = False

        async def send_explained(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] == 413:
                headers = dict(message.get("headers", []))
                if headers.get(b"content-type", b"").startswith(b"text/plain"):  # Starlette's, not ours
                    replaced = True
                    await _send_problem(send, scope[MAX_BODY_SIZE_SCOPE_KEY], scope["path"])
                    return
            if replaced:  # drop Starlette's plain-text body
                return
            await send(message)

        await self.app(scope, receive, send_explained)


async def _send_problem(send: Send, limit: int, path: str) -> None:
    message = f"the request body is too large: {path} accepts at most {limit / 2**20:g} MiB"
    body = json.dumps({"message": message, "detail": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
