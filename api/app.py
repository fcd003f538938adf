"""The REST API: thin routes over :class:`pertstore.Store` under ``/v1``, one router per resource.

Reads may be open or token-protected; every write needs a bearer token (``PERTSTORE_TOKEN`` or
``create_app(token=...)``), compared in constant time and never logged. Aligned embeddings come
back as JSON, or streamed as Arrow IPC (``Accept: application/vnd.apache.arrow.stream``) or
``.npy`` (``Accept: application/x-npy``).
"""

from __future__ import annotations

import logging
import uuid

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pertstore.api import _entities, _errors, _health, _imports, _jobs, _neighbors, _sets, _tasks
from pertstore.api._deps import ApiState
from pertstore.api._models import MAX_BODY, MAX_IDS, MAX_PAGE, Problem

from pertstore._config import get_settings
from pertstore._store import Store

__all__ = ["MAX_BODY", "MAX_IDS", "MAX_PAGE", "ROUTERS", "BodyLimit", "create_app"]
log = logging.getLogger("pertstore.api")

ROUTERS: list[APIRouter] = [
    _health.router,
    _sets.router,
    _sets.writes,
    _entities.router,
    _tasks.router,
    _jobs.router,
    _jobs.writes,
    _imports.router,
    _neighbors.router,
]
"""Every route of the API, one router per resource (a new resource adds its router here)."""
ERRORS = {status: {"model": Problem} for status in (400, 401, 403, 404, 409, 413)}
"""Error answers every route may give (422s are documented by FastAPI per route)."""


def create_app(
    store: Store, *, token: str | None = None, protect_reads: bool = False, scheduler: str | None = None
) -> FastAPI:
    """The FastAPI application serving ``store`` (the process owns its catalog); ``token`` defaults to the
    ``PERTSTORE_TOKEN`` setting."""
    token = token if token is not None else get_settings().token
    app = FastAPI(
        title="pertstore",
        version="1",
        responses=ERRORS,
        description="Embedding feature store for perturbation-response prediction",
    )
    app.state.pertstore = ApiState(store, token, protect_reads=protect_reads, scheduler=scheduler)
    _errors.install(app)
    for router in ROUTERS:
        app.include_router(router)

    @app.middleware("http")
    async def request_ids(request: Request, call_next):
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex[:12]
        response = await call_next(request)
        response.headers["x-request-id"] = rid
        log.info("%s %s %s -> %d", rid, request.method, request.url.path, response.status_code)
        return response

    app.add_middleware(BodyLimit, max_bytes=MAX_BODY)
    return app


class BodyLimit:
    """Refuse (413) a request whose body grows past ``max_bytes``, counting the bytes actually received,
    so a chunked body without Content-Length is capped too; the body is read before the route runs."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._refuse(send, declared.decode("latin-1"))
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await self._refuse(send, f"more than {size}")
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send, size: str) -> None:
        await JSONResponse(
            {"detail": f"request body of {size} bytes exceeds the limit of {self.max_bytes}"},
            status_code=413,
            headers={"Connection": "close"},
        )({"type": "http"}, None, send)
