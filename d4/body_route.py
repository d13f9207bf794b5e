"""Request bodies read the API's way: JSON by pydantic's compiled parser, uploads checked to be whole.

FastAPI reads a JSON body with `await request.json()`, then validates the result against the
endpoint's model. Starlette's `json()` calls `json.loads`, the largest single cost of a
/predict request, paid on the event loop; `pydantic_core.from_json` builds the same Python
objects 2.2x faster (docs/performance.md). A body that is not valid
JSON, not UTF-8 or nested too deep still gets FastAPI's 422 "json_invalid", now with the
parser's reason and position.

A multipart upload cut short (a dropped connection, a client bug) parses without error but
without its file part, which would read as "file: Field required". Its stream is checked to
hold the closing boundary, so it gets a 400 that says the upload is incomplete. Text may follow
that boundary (an epilogue, RFC 2046): the parser ignores it, and so does the check.

A JSON body's values are counted before it is parsed, from the commas and brackets that separate
them (bytes.count, fast): an 8 MiB body of 2.8 million empty lists would build 2.8 million Python
lists (+384 MB) and hold the event loop for seconds. A body with more values than its route's
images can hold gets 413 unparsed. One larger than OFF_LOOP_JSON_BYTES is parsed in a worker
thread, one at a time, so that /healthz and other requests are answered between parses.

Endpoints keep their declarative body parameters; only how the body is read changes
(FastAPI's "custom Request and APIRoute class" pattern).
"""

import json
import re
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any

import anyio
import pydantic_core
from fastapi import Request, Response
from fastapi.routing import APIRoute
from python_multipart.multipart import parse_options_header
from starlette.exceptions import HTTPException

from d4.limits import MAX_BATCH_IMAGES
from d4.model import IMAGE_SIZE

IMAGES_PER_BODY = {"/predict/batch": MAX_BATCH_IMAGES}  # the other JSON route takes one image
# Parsing 64 KiB takes ~0.3 ms here, ~3 ms at a Render free instance's 0.1 CPU: fine on the loop.
OFF_LOOP_JSON_BYTES = 64 * 1024


# A body that opens this many lists before anything else is refused by the parser at its depth
# limit before it builds another object: it gets the parser's 422, as any other invalid JSON does.
TOO_DEEP_AT_ONCE = re.compile(rb'\s*(?:\{\s*"[^"]{0,64}"\s*:\s*)?(?:\[\s*){256}')


def json_shape_problem(body: bytes, path: str) -> str | None:
    """Why the body holds more JSON than `path` takes, counted without parsing it; None when it does not.

    It may hold one image more than the route takes, so that a batch one image too long still gets
    the validation error that says how many it takes. An image is 29 lists (itself and its rows)
    and 784 numbers, with a comma between each two.
    """
    images = IMAGES_PER_BODY.get(path, 1)
    room = images + 1
    takes = f"{path} takes {images} image{'s' * (images > 1)} of 28x28 numbers"
    containers = body.count(b"[") + body.count(b"{")
    if containers > room * (IMAGE_SIZE + 1) + 2:
        return f"the request body holds {containers:,} JSON lists and objects: {takes}"
    values = body.count(b",") + 1
    if values > room * (IMAGE_SIZE * IMAGE_SIZE + IMAGE_SIZE):
        return f"the request body holds {values:,} JSON values or more: {takes}"
    return None


class BodyRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            # Only a large body can hold enough values to block the event loop while it is built;
            # a small one of the wrong shape gets the validation error that says where.
            large = len(body) > OFF_LOOP_JSON_BYTES
            problem = (
                large
                and not TOO_DEEP_AT_ONCE.match(body)
                and json_shape_problem(body, self.url.path)
            )
            if problem:
                raise HTTPException(413, problem)
            try:
                if large:
                    # One at a time: the parser holds the GIL throughout, and the event loop waits.
                    parser = self.state.json_parser
                    self._json = await anyio.to_thread.run_sync(
                        pydantic_core.from_json, body, limiter=parser
                    )
                else:
                    self._json = pydantic_core.from_json(body)
            except ValueError as error:  # FastAPI turns a JSONDecodeError into its 422 json_invalid
                raise json.JSONDecodeError(
                    str(error), body.decode("utf-8", errors="replace"), 0
                ) from None
        return self._json

    async def stream(self) -> AsyncGenerator[bytes, None]:
        content_type, options = parse_options_header(self.headers.get("content-type", ""))
        if (
            content_type != b"multipart/form-data" or b"boundary" not in options
        ):  # JSON: nothing to check
            async for chunk in super().stream():
                yield chunk
            return
        closing = b"--" + options[b"boundary"] + b"--"
        closed, tail = False, b""
        async for chunk in super().stream():
            recent = tail + chunk  # the closing boundary may straddle two chunks
            closed = closed or closing in recent
            tail = recent[-len(closing) :]
            yield chunk
        if not closed:
            raise HTTPException(
                400, "the multipart upload is incomplete: it ends before its closing boundary"
            )


class BodyRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle_with_body_request(request: Request) -> Response:
            return await handler(BodyRequest(request.scope, request.receive))

        return handle_with_body_request
