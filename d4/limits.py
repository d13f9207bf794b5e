"""Say in JSON, like every other error of the API, that a request body was too large.

FastAPI enforces `max_body_size` (per app and per route) while the body streams in, and
Starlette then answers with a plain-text "Content Too Large". This middleware replaces that
text with the API's error shape and names the limit, so a client learns what to change.
"""

import json

from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
from starlette.types import ASGIApp, Message, Receive, Scope, Send


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
