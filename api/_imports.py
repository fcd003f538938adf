"""Import: upload an embedding file (h5ad, npz, parquet or csv bytes) as a new set."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Request
from pertstore.api._deps import WRITES, State
from pertstore.api._models import Card
from pertstore.store import check_names
from starlette.concurrency import run_in_threadpool

from pertstore.errors import InvalidInputError, PertstoreError

router = APIRouter(prefix="/v1", tags=["import"], dependencies=WRITES)


@router.post("/import", status_code=201, response_model=Card)
async def import_(
    state: State,
    request: Request,
    source: str,
    kind: Literal["gene", "molecule"] = "gene",
    context: str = "",
    format: Literal["h5ad", "npz", "parquet", "csv"] = "parquet",
    field: str | None = None,
    id_col: str | None = None,
) -> dict:
    """Publish the request body (the file's bytes) as a set of ``source``; answers its card."""
    check_names(source=source, context=context)
    body = await request.body()
    if not body:
        raise InvalidInputError("the request body is empty: send the embedding file's bytes")

    def write_set() -> dict:
        with tempfile.TemporaryDirectory() as tmp, state.lock:
            path = Path(tmp) / f"upload.{format}"
            path.write_bytes(body)
            try:
                card = state.store.import_file(
                    path, source=source, kind=kind, context=context, field=field, id_col=id_col
                )
            except PertstoreError as e:  # name the upload, not the server's temporary folder
                e.args = tuple(str(a).replace(str(path), f"upload.{format}") for a in e.args)
                raise
        return card.model_dump(mode="json")

    return await run_in_threadpool(write_set)
