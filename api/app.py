"""The REST API: thin routes over :class:`pertstore.Store` under ``/v1``.

Reads may be open or token-protected; every write needs a bearer token (``PERTSTORE_TOKEN`` or
``create_app(token=...)``), compared in constant time and never logged. Aligned embeddings come
back as JSON, or streamed as Arrow IPC (``Accept: application/vnd.apache.arrow.stream``) or
``.npy`` (``Accept: application/x-npy``).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StringConstraints, ValidationError
from starlette.concurrency import run_in_threadpool

from pertstore._store import Store
from pertstore.api._formats import respond
from pertstore.api._neighbors import neighbors_router
from pertstore.errors import ConflictError, CorruptedSetError, InvalidInputError, NotFoundError, PertstoreError
from pertstore.store import check_name, check_names
from pertstore.store._recipe import MAX_ID_CHARS

MAX_IDS = 20_000
MAX_PAGE = 1_000
MAX_BODY = 8 * 2**20
log = logging.getLogger("pertstore.api")
Id = Annotated[str, StringConstraints(max_length=MAX_ID_CHARS)]
Name = Annotated[str, StringConstraints(max_length=128)]


class AlignRequest(BaseModel):
    sources: list[Name] = Field(min_length=1, max_length=100)
    ids: list[Id] = Field(min_length=1, max_length=MAX_IDS)
    context: str | None = None
    version: str | dict[str, str] | None = None
    tag: str | dict[str, str] | None = None


class FetchRequest(BaseModel):
    ids: list[Id] = Field(min_length=1, max_length=MAX_IDS)
    context: str | None = None
    version: str | None = None
    tag: str | None = None


class TagRequest(BaseModel):
    version: str = Field(min_length=1, max_length=64)


class ResolveRequest(BaseModel):
    ids: list[Id] = Field(min_length=1, max_length=MAX_IDS)
    kind: str = Field("gene", pattern="^(gene|molecule)$")


class JobRequest(BaseModel):
    recipes: str = Field(min_length=1, max_length=MAX_BODY, description="A recipes file (YAML text)")
    max_failed_fraction: float = Field(0.05, ge=0, le=1)


def create_app(store: Store, *, token: str | None = None, protect_reads: bool = False,
               scheduler: str | None = None) -> FastAPI:
    """The FastAPI application serving ``store`` (the process owns its catalog)."""
    token = token if token is not None else os.environ.get("PERTSTORE_TOKEN")
    app = FastAPI(title="pertstore", version="1", description="Embedding feature store for perturbation-response prediction")
    lock = threading.Lock()

    def _check(authorization: str | None) -> None:
        if not token:
            raise HTTPException(403, "writes are disabled: the server has no token configured (PERTSTORE_TOKEN)")
        if not _authorised(authorization):
            raise HTTPException(401, "a valid bearer token is required (header 'Authorization: Bearer <token>')",
                                headers={"WWW-Authenticate": "Bearer"})

    def _authorised(authorization: str | None) -> bool:
        """Whether the request carries the server's token as ``Authorization: Bearer <token>``."""
        scheme, _, given = (authorization or "").partition(" ")
        return bool(token) and scheme.lower() == "bearer" and bool(given.strip()) and \
            hmac.compare_digest(given.strip().encode(), token.encode())

    def write_auth(authorization: Annotated[str | None, Header()] = None) -> None:
        _check(authorization)

    def read_auth(authorization: Annotated[str | None, Header()] = None) -> None:
        if protect_reads:
            _check(authorization)

    @app.middleware("http")
    async def request_ids(request: Request, call_next):
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex[:12]
        response = await call_next(request)
        response.headers["x-request-id"] = rid
        log.info("%s %s %s -> %d", rid, request.method, request.url.path, response.status_code)
        return response

    @app.exception_handler(PertstoreError)
    async def store_errors(_request: Request, exc: PertstoreError):
        status = 404 if isinstance(exc, NotFoundError) else 409 if isinstance(exc, ConflictError) else \
            500 if isinstance(exc, CorruptedSetError) else 422 if isinstance(exc, InvalidInputError) else 400
        detail = str(exc) if status < 500 else f"{type(exc).__name__}: the store needs attention (`pertstore verify`)"
        if status >= 500:
            log.error("%s", exc)
        return JSONResponse({"detail": detail}, status_code=status)

    @app.exception_handler(ValidationError)
    @app.exception_handler(RequestValidationError)
    async def model_errors(_request: Request, exc: ValidationError | RequestValidationError):
        """422 naming each bad field, without echoing the input (it may not even encode as UTF-8)."""
        detail = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type"))}
                  for e in exc.errors()]
        return Response(json.dumps({"detail": detail}, ensure_ascii=True), status_code=422,
                        media_type="application/json")

    reads = [Depends(read_auth)]

    @app.get("/v1/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/ready")
    def ready(authorization: Annotated[str | None, Header()] = None) -> dict:
        store.catalog.query("SELECT 1")
        return {"status": "ready", **({"store": store.uri} if _authorised(authorization) else {})}

    @app.get("/v1/sources", dependencies=reads)
    def sources() -> list[dict]:
        return _records(store.sources())

    @app.get("/v1/sets", dependencies=reads)
    def sets(source: str | None = None, context: str | None = None,
             offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100) -> dict:
        frame = store.ls(source, context)
        return {"total": len(frame), "offset": offset, "items": _records(frame.iloc[offset:offset + limit])}

    @app.get("/v1/sets/{source}", dependencies=reads)
    def show(source: str, context: str | None = None, version: str | None = None, tag: str | None = None) -> dict:
        return store.show(source, context=context, version=version, tag=tag).model_dump(mode="json")

    @app.get("/v1/contexts", dependencies=reads)
    def contexts() -> list[str]:
        return store.contexts()

    @app.get("/v1/coverage", dependencies=reads)
    def coverage() -> list[dict]:
        return _records(store.catalog.coverage())

    @app.post("/v1/resolve", dependencies=reads)
    def resolve(body: ResolveRequest) -> dict:
        res = store.resolve(body.ids, body.kind)
        return {"ids": res.ids, "unresolved": res.unresolved, "ambiguous": res.ambiguous}

    @app.get("/v1/sets/{source}/versions", dependencies=reads)
    def versions(source: str, context: str | None = None) -> list[dict]:
        frame = store.ls(source, context)
        if frame.empty:
            raise NotFoundError(f"no sets of source {source!r}")
        return _records(frame)

    @app.get("/v1/tags", dependencies=reads)
    def tags(source: str | None = None) -> list[dict]:
        sql = "SELECT source, context, tag, version, updated_at FROM tags" + (" WHERE source = ?" if source else "")
        return _records(store.catalog.query(sql + " ORDER BY source, context, tag", [source] if source else None))

    @app.put("/v1/sets/{source}/tags/{tag}", dependencies=[Depends(write_auth)])
    def put_tag(source: str, tag: str, body: TagRequest) -> dict:
        with lock:
            store.tag(source, body.version, tag)
        return {"source": source, "tag": tag, "version": body.version}

    @app.get("/v1/recipes", dependencies=reads)
    def recipes(source: str | None = None, producer: str | None = None,
                offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100) -> dict:
        where = [c for c, v in (("source = ?", source), ("producer = ?", producer)) if v]
        frame = store.catalog.query("SELECT source, version, context, producer, recipe FROM sets"
                                    + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY source, version",
                                    [v for v in (source, producer) if v] or None)
        items = [{**row, "recipe": json.loads(row["recipe"])} for row in _records(frame.iloc[offset:offset + limit])]
        return {"total": len(frame), "offset": offset, "items": items}

    @app.post("/v1/sets/{source}/embeddings", dependencies=reads)
    def fetch(source: str, body: FetchRequest, accept: Annotated[str | None, Header()] = None):
        return respond(store.align([source], body.ids, context=body.context, version=body.version, tag=body.tag),
                       accept)

    @app.post("/v1/align", dependencies=reads)
    def align(body: AlignRequest, accept: Annotated[str | None, Header()] = None):
        return respond(store.align(body.sources, body.ids, context=body.context, version=body.version, tag=body.tag),
                       accept)

    @app.post("/v1/import", status_code=201, dependencies=[Depends(write_auth)])
    async def import_(request: Request, source: str, kind: Literal["gene", "molecule"] = "gene", context: str = "",
                      format: Literal["h5ad", "npz", "parquet", "csv"] = "parquet", field: str | None = None,
                      id_col: str | None = None) -> dict:
        check_names(source=source, context=context)
        body = await request.body()
        if not body:
            raise InvalidInputError("the request body is empty: send the embedding file's bytes")

        def write_set() -> dict:
            with tempfile.TemporaryDirectory() as tmp, lock:
                path = Path(tmp) / f"upload.{format}"
                path.write_bytes(body)
                try:
                    card = store.import_file(path, source=source, kind=kind, context=context, field=field,
                                             id_col=id_col)
                except PertstoreError as e:  # name the upload, not the server's temporary folder
                    e.args = tuple(str(a).replace(str(path), f"upload.{format}") for a in e.args)
                    raise
            return card.model_dump(mode="json")

        return await run_in_threadpool(write_set)

    @app.post("/v1/jobs", status_code=202, dependencies=[Depends(write_auth)])
    def submit(body: JobRequest, response: Response) -> dict:
        planned = store.jobs.plan(body.recipes)  # outside the write lock: planning reads and hashes inputs
        with lock:
            job_id = store.jobs.create(planned, max_failed_fraction=body.max_failed_fraction, scheduler=scheduler)
        threading.Thread(target=_run_job, args=(store, job_id, scheduler), daemon=True).start()
        response.headers["Location"] = f"/v1/jobs/{job_id}"
        return {"job_id": job_id, "state": "queued"}

    def _for_reader(row: dict, authorization: str | None) -> dict:
        """A job row as a reader may see it: without the token, no host, pid or scheduler address, and
        errors reduced to their kinds (a raw error can quote input files and the store's paths)."""
        if _authorised(authorization):
            return row
        return {k: _public_error(v) if k == "error" else v for k, v in row.items()
                if k not in ("host", "pid", "scheduler")}

    @app.get("/v1/jobs", dependencies=reads)
    def jobs(authorization: Annotated[str | None, Header()] = None) -> list[dict]:
        return [_for_reader(r, authorization) for r in _records(store.jobs.ls())]

    @app.get("/v1/jobs/{job_id}", dependencies=reads)
    def job(job_id: Name, authorization: Annotated[str | None, Header()] = None) -> dict:
        st = store.jobs.status(check_name(job_id, "job id"))
        row = {**{k: _plain(v) for k, v in st.items() if k != "recipes"},
               "recipes": [_for_reader(r, authorization) for r in _records(st["recipes"])]}
        return _for_reader(row, authorization)

    @app.get("/v1/jobs/{job_id}/failures", dependencies=reads)
    def failures(job_id: Name) -> list[dict]:
        return _records(store.jobs.failures(check_name(job_id, "job id")))

    @app.post("/v1/jobs/{job_id}/cancel", dependencies=[Depends(write_auth)])
    def cancel(job_id: Name) -> dict:
        return {"job_id": job_id, "state": store.jobs.cancel(check_name(job_id, "job id"))}

    @app.post("/v1/jobs/{job_id}/resume", status_code=202, dependencies=[Depends(write_auth)])
    def resume(job_id: Name, response: Response) -> dict:
        state = store.jobs.status(check_name(job_id, "job id"))["state"]
        if state in ("done", "cancelled", "cancelling"):
            raise ConflictError(f"job {job_id} is {state}; nothing to resume")
        threading.Thread(target=_run_job, args=(store, job_id, scheduler, True), daemon=True).start()
        response.headers["Location"] = f"/v1/jobs/{job_id}"
        return {"job_id": job_id, "state": "resuming"}

    app.add_middleware(BodyLimit, max_bytes=MAX_BODY)
    app.include_router(neighbors_router(store), dependencies=reads)
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
        await JSONResponse({"detail": f"request body of {size} bytes exceeds the limit of {self.max_bytes}"},
                           status_code=413, headers={"Connection": "close"})({"type": "http"}, None, send)


def _public_error(text: str | None) -> str | None:
    """The kinds of error in a job's error text (``ValueError, ...``), without their messages."""
    if not text:
        return text
    kinds = sorted(set(re.findall(r"\b([A-Z][A-Za-z]*(?:Error|Exception|Exit|Interrupt))\b", text)))
    return f"{', '.join(kinds) or 'failed'} (details for token holders: GET /v1/jobs/{{id}} with the token)"


def _run_job(store: Store, job_id: str, scheduler: str | None, resume: bool = False) -> None:
    try:
        if resume:
            store.jobs.resume(job_id, scheduler=scheduler)
        else:
            store.jobs.run(job_id, scheduler=scheduler)
    except Exception:  # the job's state and error are in the catalog
        log.exception("job %s failed", job_id)


def _plain(value):
    if isinstance(value, (np.generic,)):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value


def _records(frame) -> list[dict]:
    return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]
