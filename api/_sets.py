"""Embedding sets: sources, sets and their versions, cards, contexts, coverage, tags and recipes."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query
from pertstore.api._deps import READS, WRITES, State
from pertstore.api._models import (
    MAX_PAGE,
    Card,
    CoverageRow,
    RecipePage,
    SetPage,
    SetRow,
    SourceRow,
    TagRequest,
    TagRow,
    TagSet,
    records,
)

from pertstore.errors import NotFoundError

router = APIRouter(prefix="/v1", tags=["sets"], dependencies=READS)
writes = APIRouter(prefix="/v1", tags=["sets"], dependencies=WRITES)
Offset = Annotated[int, Query(ge=0)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]


@router.get("/sources", response_model=list[SourceRow])
def sources(state: State) -> list[dict]:
    return records(state.store.sources())


@router.get("/sets", response_model=SetPage)
def sets(
    state: State, source: str | None = None, context: str | None = None, offset: Offset = 0, limit: Limit = 100
) -> dict:
    frame = state.store.ls(source, context)
    return {"total": len(frame), "offset": offset, "items": records(frame.iloc[offset : offset + limit])}


@router.get("/sets/{source}", response_model=Card)
def show(
    state: State, source: str, context: str | None = None, version: str | None = None, tag: str | None = None
) -> dict:
    return state.store.show(source, context=context, version=version, tag=tag).model_dump(mode="json")


@router.get("/sets/{source}/versions", response_model=list[SetRow])
def versions(state: State, source: str, context: str | None = None) -> list[dict]:
    frame = state.store.ls(source, context)
    if frame.empty:
        raise NotFoundError(f"no sets of source {source!r}")
    return records(frame)


@router.get("/contexts")
def contexts(state: State) -> list[str]:
    return state.store.contexts()


@router.get("/coverage", response_model=list[CoverageRow])
def coverage(state: State) -> list[dict]:
    return records(state.store.catalog.coverage())


@router.get("/tags", response_model=list[TagRow])
def tags(state: State, source: str | None = None) -> list[dict]:
    return records(state.store.catalog.tags(source))


@writes.put("/sets/{source}/tags/{tag}")
def put_tag(state: State, source: str, tag: str, body: TagRequest) -> TagSet:
    with state.lock:
        state.store.tag(source, body.version, tag)
    return TagSet(source=source, tag=tag, version=body.version)


@router.get("/recipes", response_model=RecipePage)
def recipes(
    state: State, source: str | None = None, producer: str | None = None, offset: Offset = 0, limit: Limit = 100
) -> dict:
    frame = state.store.catalog.recipes(source=source, producer=producer)
    items = [{**row, "recipe": json.loads(row["recipe"])} for row in records(frame.iloc[offset : offset + limit])]
    return {"total": len(frame), "offset": offset, "items": items}
