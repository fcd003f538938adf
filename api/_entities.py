"""Entities: id resolution and aligned embeddings (JSON, or streamed Arrow IPC / ``.npy`` by ``Accept``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from pertstore.api._deps import READS, State
from pertstore.api._formats import ARROW, NPY, respond
from pertstore.api._models import Aligned, AlignRequest, FetchRequest, Resolved, ResolveRequest

router = APIRouter(prefix="/v1", tags=["entities"], dependencies=READS)
BULK = {
    200: {
        "content": {
            ARROW: {"schema": {"type": "string", "format": "binary"}},
            NPY: {"schema": {"type": "string", "format": "binary"}},
        },
        "description": "The aligned embeddings: JSON, or as the Accept header asks, an Arrow IPC stream "
        "(one column per source) or a float32 .npy (header x-pertstore-columns)",
    }
}
Accept = Annotated[str | None, Header()]


@router.post("/resolve")
def resolve(state: State, body: ResolveRequest) -> Resolved:
    res = state.store.resolve(body.ids, body.kind)
    return Resolved(ids=res.ids, unresolved=res.unresolved, ambiguous=res.ambiguous)


@router.post("/sets/{source}/embeddings", response_model=Aligned, responses=BULK)
def fetch(state: State, source: str, body: FetchRequest, accept: Accept = None):
    """The embeddings of ``ids`` in one set."""
    return respond(
        state.store.align([source], body.ids, context=body.context, version=body.version, tag=body.tag), accept
    )


@router.post("/align", response_model=Aligned, responses=BULK)
def align(state: State, body: AlignRequest, accept: Accept = None):
    """The embeddings of ``ids`` in several sets, row-aligned."""
    return respond(
        state.store.align(body.sources, body.ids, context=body.context, version=body.version, tag=body.tag), accept
    )
