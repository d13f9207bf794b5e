"""What the API refuses before an endpoint runs: bodies over a size limit or past the budget of all
bodies in flight, bodies that stall, and calls from other web pages.

Each POST route has its own body limit: a bigger body gets 413, before it is read when its size
is declared. FastAPI enforces `max_body_size` while the body streams in, and answers "Content Too
Large" (plain text, or JSON when a chunked body passes the limit); `ExplainTooLarge` answers in the
API's error shape instead and names the limit, so a client learns what to change.

That bounds one body. Many bodies within their limits, sent slowly or never finished, would each
be held until they end: 300 unfinished 1 MiB uploads took a 512 MB instance down in 9 s.
`BodyBudget` counts what the bodies in flight hold in memory, all routes together: from their
declared size as soon as their headers arrive, then byte by byte as they arrive, until their
answer has been sent.

- A body that would take the total past BODY_BUDGET_BYTES is refused at once with 503 and
  Retry-After: before it is read when its size is declared, or as soon as a streamed one passes it.
- A body that sends nothing for BODY_IDLE_S, or is not whole BODY_DEADLINE_S after its headers,
  gets 408 and its connection is closed.

An upload holds at most Starlette's spool size in memory (the rest of its file goes to a temporary
file on disk), so it counts for at most that much; a JSON body is held whole.

Browser pages from other origins may call the API only when D4_CORS_ORIGINS lists them
(`allow_origins_from_env`).
"""

import os
import time

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartParser
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from d4.api_errors import RETRY_AFTER_S, send_problem

MAX_BODY_BYTES = 1024 * 1024  # /predict: a 28x28 JSON array is 6 to 16 KB
MAX_BATCH_IMAGES = 256
# /predict/batch: 256 images of up to 16 KB, with room to spare
MAX_BATCH_BODY_BYTES = 8 * 1024 * 1024
MAX_UPLOAD_BYTES = 5 * 1024 * 1024  # /predict/image: a phone photo as JPEG

# Beside the server (~250 MB resident) and one picture being decoded (at most MAX_DECODE_BYTES,
# 128 MiB, d4/preprocess.py), this keeps a 512 MB instance under 400 MB: 4 batch bodies of 8 MiB,
# or 32 uploads' first MiB, at once.
BODY_BUDGET_BYTES = 32 * 2**20
BODY_IDLE_S = 10  # a body that sends nothing for this long has stalled
BODY_DEADLINE_S = 60  # 5 MiB in a minute is 85 KB/s, a slow phone connection
UPLOAD_HELD_BYTES = MultiPartParser.spool_max_size  # an upload's file past this goes to disk
# A declared size past every route's limit is refused by its route (413) before it is read.
LARGEST_BODY_BYTES = max(MAX_BODY_BYTES, MAX_BATCH_BODY_BYTES, MAX_UPLOAD_BYTES)


def allow_origins_from_env(app: FastAPI) -> None:
    """Let browser pages from the origins in D4_CORS_ORIGINS (comma-separated) call the API; none by default."""
    origins = [
        origin.strip()
        for origin in os.environ.get("D4_CORS_ORIGINS", "").split(",")
        if origin.strip()
    ]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
        )


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
    await send_problem(
        send, 413, f"the request body is too large: {path} accepts at most {limit / 2**20:g} MiB"
    )


class BodyRefused(Exception):
    """Raised from `receive` when a body passes the budget or stalls; its answer replaces the app's."""

    def __init__(self, status: int, message: str, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers

    async def answer(self, send: Send) -> None:
        await send_problem(send, self.status, self.message, self.headers)


def over_budget() -> BodyRefused:
    message = (
        f"the server is already receiving {BODY_BUDGET_BYTES // 2**20} MiB of request bodies, "
        f"all it takes at once; try again in a few seconds"
    )
    return BodyRefused(503, message, {"Retry-After": str(RETRY_AFTER_S), "Connection": "close"})


def stalled(reason: str) -> BodyRefused:
    return BodyRefused(
        408, f"the request body {reason}; send it again, whole", {"Connection": "close"}
    )


class BodyBudget:
    """Refuse the bodies that would take what all bodies in flight hold past BODY_BUDGET_BYTES, and stalled ones."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.held = 0  # bytes the bodies in flight hold, counted or reserved; the event loop's only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        upload = headers.get("content-type", "").lower().startswith("multipart/")
        declared = headers.get("content-length", "")
        counted = (
            _in_memory(min(int(declared), LARGEST_BODY_BYTES), upload) if declared.isdigit() else 0
        )
        if self.held + counted > BODY_BUDGET_BYTES:
            await over_budget().answer(send)
            return
        self.held += counted
        received, whole = 0, False
        deadline = time.monotonic() + BODY_DEADLINE_S
        refusal: BodyRefused | None = None
        started = False

        async def receive_within_budget() -> Message:
            nonlocal counted, received, whole, refusal
            if whole:  # after the body, a wait for the client to leave: no deadline
                return await receive()
            wait_s = min(BODY_IDLE_S, deadline - time.monotonic())
            with anyio.move_on_after(wait_s):
                message = await receive()
                received += len(message.get("body", b""))
                whole = message["type"] != "http.request" or not message.get("more_body", False)
                needed = _in_memory(received, upload)
                if needed > counted:
                    if self.held + needed - counted > BODY_BUDGET_BYTES:
                        refusal = over_budget()
                        raise refusal
                    self.held += needed - counted
                    counted = needed
                return message
            late = wait_s < BODY_IDLE_S
            refusal = stalled(
                f"took over {BODY_DEADLINE_S} s" if late else f"stalled for {BODY_IDLE_S} s"
            )
            raise refusal

        async def send_unless_refused(message: Message) -> None:
            nonlocal started
            # The app answers the error that receive raised (FastAPI: 400); ours replaces it.
            if refusal is not None:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await refusal.answer(send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive_within_budget, send_unless_refused)
        except BodyRefused as error:
            if not started:
                await error.answer(send)
        finally:
            self.held -= counted


def _in_memory(received: int, upload: bool) -> int:
    """How many of the bytes received stay in memory while the request is served."""
    return min(received, UPLOAD_HELD_BYTES) if upload else received
