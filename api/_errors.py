"""pertstore's errors as HTTP answers, in one place: the status of each error class, and 422s that name
each bad field without echoing the input."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from pertstore.errors import ConflictError, CorruptedSetError, InvalidInputError, NotFoundError, PertstoreError

log = logging.getLogger("pertstore.api")

STATUS: list[tuple[type[PertstoreError], int]] = [
    (NotFoundError, 404),
    (ConflictError, 409),
    (CorruptedSetError, 500),
    (InvalidInputError, 422),
]
"""HTTP status of each error class (first match); any other :class:`PertstoreError` is a 400."""


def status_of(exc: PertstoreError) -> int:
    return next((status for cls, status in STATUS if isinstance(exc, cls)), 400)


async def store_errors(_request: Request, exc: PertstoreError) -> JSONResponse:
    """4xx with the error's message; a 5xx says only that the store needs attention (and logs the error)."""
    status = status_of(exc)
    detail = str(exc) if status < 500 else f"{type(exc).__name__}: the store needs attention (`pertstore verify`)"
    if status >= 500:
        log.error("%s", exc)
    return JSONResponse({"detail": detail}, status_code=status)


async def model_errors(_request: Request, exc: ValidationError | RequestValidationError) -> Response:
    """422 naming each bad field, without echoing the input (it may not even encode as UTF-8)."""
    detail = [
        {"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type"))}
        for e in exc.errors()
    ]
    return Response(json.dumps({"detail": detail}, ensure_ascii=True), status_code=422, media_type="application/json")


def install(app: FastAPI) -> None:
    """Map pertstore's errors and validation errors to HTTP answers for every route of ``app``."""
    app.add_exception_handler(PertstoreError, store_errors)
    app.add_exception_handler(ValidationError, model_errors)
    app.add_exception_handler(RequestValidationError, model_errors)
