"""Every error the API answers, in one JSON shape: {"message": one sentence, "detail": ...}.

`add_error_handlers(app)` installs the three handlers: FastAPI's validation errors (422) made
readable, without echoing what was sent; Starlette's HTTP errors (400, 404, 405, 413, ...) in
the same shape; and work refused while the server shuts down (503 with Retry-After).
"""

import json
import re
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import Send

from d4.api_models import Problem
from d4.batching import PredictorStopped

PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")
HOW_TO_CALL = {
    "/predict": 'send JSON {"pixels": [[28 numbers] x 28]} with Content-Type: application/json',
    "/predict/batch": 'send JSON {"images": [[[28 numbers] x 28], ...]} with Content-Type: application/json',
    "/predict/image": "send multipart/form-data with the picture in the field named file",
}
RETRY_AFTER_S = 5


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, explain_validation_error)
    app.add_exception_handler(HTTPException, explain_http_error)
    app.add_exception_handler(PredictorStopped, explain_shutting_down)


async def explain_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """422 with one readable sentence, plus FastAPI's list without the echoed input.

    Field names come from the client when a field is unexpected; only plain names are repeated.
    """
    errors = [
        {**problem, "loc": tuple(map(_safe_name, problem["loc"]))} for problem in error.errors()
    ]
    first = errors[0]
    if first["type"] == "json_invalid":  # loc holds a character position, not a field
        message = (
            f"request body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}"
        )
    else:
        where = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"][1:]
        )
        message = f"{where.lstrip('.') or 'request body'}: {first['msg']}"
    if first["type"] == "json_invalid" or first["loc"] == ("body",) or first["type"] == "missing":
        message += f" ({HOW_TO_CALL.get(request.url.path, 'see /docs')})"  # the body's overall shape was wrong
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problems)"
    problems = [
        {"loc": problem["loc"], "msg": problem["msg"], "type": problem["type"]}
        for problem in errors[:10]
    ]
    return JSONResponse(status_code=422, content={"message": message, "detail": problems})


def _safe_name(part: str | int) -> str | int:
    """A place in the body as the client named it, if it is a plain name; otherwise a placeholder."""
    if isinstance(part, int) or PLAIN_NAME.fullmatch(part):
        return part
    return "(a field whose name is not shown)"


async def explain_http_error(request: Request, error: HTTPException) -> JSONResponse:
    """Every other error (400 unreadable body, 404, 405, 413, 503) in the same shape as a 422."""
    body = Problem(message=str(error.detail), detail=str(error.detail))
    return JSONResponse(
        status_code=error.status_code, content=body.model_dump(), headers=error.headers
    )


async def explain_shutting_down(request: Request, error: PredictorStopped) -> JSONResponse:
    """Work that arrives while the server stops is refused at once, never left waiting."""
    message = f"{error}; try again in a few seconds"
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    return JSONResponse(
        status_code=503, content={"message": message, "detail": message}, headers=headers
    )


async def send_problem(
    send: Send, status: int, message: str, headers: Mapping[str, str] = {}
) -> None:  # noqa: B006
    """Answer in the API's error shape from an ASGI middleware, where no exception handler runs."""
    body = json.dumps({"message": message, "detail": message}).encode()
    fields = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    fields += [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": fields})
    await send({"type": "http.response.body", "body": body})
