"""Request bodies read the API's way: JSON by pydantic's compiled parser, uploads checked to be whole.

FastAPI reads a JSON body with `await request.json()`, then validates the result against the
endpoint's model. Starlette's `json()` calls `json.loads`, which takes ~180 us for the 784
numbers of a /predict body: the largest single cost of a request, paid on the event loop.
`pydantic_core.from_json` builds the same Python objects in ~60 us. A body that is not valid
JSON, not UTF-8 or nested too deep still gets FastAPI's 422 "json_invalid", now with the
parser's reason and position.

A multipart upload cut short (a dropped connection, a client bug) parses without error but
without its file part, which would read as "file: Field required". Its stream is checked to
hold the closing boundary, so it gets a 400 that says the upload is incomplete. Text may follow
that boundary (an epilogue, RFC 2046): the parser ignores it, and so does the check.

Endpoints keep their declarative body parameters; only how the body is read changes
(FastAPI's "custom Request and APIRoute class" pattern).
"""

import json
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any

import pydantic_core
from fastapi import Request, Response
from fastapi.routing import APIRoute
from python_multipart.multipart import parse_options_header
from starlette.exceptions import HTTPException


class BodyRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = pydantic_core.from_json(body)
            except ValueError as error:  # FastAPI turns a JSONDecodeError into its 422 json_invalid
                raise json.JSONDecodeError(str(error), body.decode("utf-8", errors="replace"), 0) from None
        return self._json

    async def stream(self) -> AsyncGenerator[bytes, None]:
        content_type, options = parse_options_header(self.headers.get("content-type", ""))
        if content_type != b"multipart/form-data" or b"boundary" not in options:  # JSON: nothing to check
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
            raise HTTPException(400, "the multipart upload is incomplete: it ends before its closing boundary")


class BodyRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle_with_body_request(request: Request) -> Response:
            return await handler(BodyRequest(request.scope, request.receive))

        return handle_with_body_request
