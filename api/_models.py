"""Request and response bodies of the REST API (so ``/openapi.json`` types every answer).

Rows read from the catalog keep columns a later schema adds (``extra="allow"``); times are ISO 8601
strings as the catalog gives them.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import pandas as pd
from pertstore.store import MAX_ID_CHARS, SET_ENCODING_TYPE, SET_ENCODING_VERSION, SetCard
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_IDS = 20_000
MAX_PAGE = 1_000
MAX_BODY = 8 * 2**20
"""Largest request body (bytes) the server reads."""
Id = Annotated[str, StringConstraints(max_length=MAX_ID_CHARS)]
Name = Annotated[str, StringConstraints(max_length=128)]
Time = Annotated[str, Field(description="ISO 8601 time")]


# ---- requests ------------------------------------------------------------------------------------


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


# ---- responses -----------------------------------------------------------------------------------


class Row(BaseModel):
    """A catalog row; columns added by later schema versions come through too."""

    model_config = ConfigDict(extra="allow")


class Problem(BaseModel):
    """An error: what went wrong, naming the offending input (422: one entry per bad field)."""

    detail: str | list[dict[str, Any]]


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    store: str | None = Field(None, description="The store's URI (token holders only)")


class SourceRow(Row):
    source: str
    kind: str
    dim: int
    created_at: Time


class SetRow(Row):
    source: str
    version: str
    kind: str
    context: str
    dim: int
    n_rows: int
    producer: str
    n_failed: int
    created_at: Time
    tags: str = Field(description="Comma-separated tags of this version")


class Card(SetCard):
    """A set's card as the API answers it: :class:`SetCard` under its field names (the Zarr attributes
    spell the first two with dashes)."""

    encoding_type: str = SET_ENCODING_TYPE
    encoding_version: str = SET_ENCODING_VERSION


class SetPage(BaseModel):
    total: int
    offset: int
    items: list[SetRow]


class CoverageRow(Row):
    source: str
    version: str
    context: str
    kind: str
    n_rows: int
    n_registered: int = Field(description="Rows whose entity is in the registry")
    n_kind: int = Field(description="Registered entities of the set's kind")


class TagRow(Row):
    source: str
    context: str
    tag: str
    version: str
    updated_at: Time


class TagSet(BaseModel):
    source: str
    tag: str
    version: str


class RecipeRow(Row):
    source: str
    version: str
    context: str
    producer: str
    recipe: dict[str, Any]


class RecipePage(BaseModel):
    total: int
    offset: int
    items: list[RecipeRow]


class Resolved(BaseModel):
    ids: list[str | None] = Field(description="Canonical id per query id (null when unresolved or ambiguous)")
    unresolved: list[str]
    ambiguous: dict[str, list[str]]


class Aligned(BaseModel):
    """Aligned embeddings as JSON (``Accept: application/vnd.apache.arrow.stream`` or ``application/x-npy``
    stream them instead)."""

    ids: list[str]
    entity_ids: list[str]
    context: str
    versions: dict[str, str]
    unresolved: list[str]
    ambiguous: dict[str, list[str]]
    embeddings: dict[str, list[list[float] | None]] = Field(
        description="Per source, one row per id (null where the set has no row for it)"
    )


class TaskRow(Row):
    name: str
    version: str
    kind: str
    n_perts: int
    n_genes: int
    contexts: str = Field(description="Comma-separated contexts")
    created_at: Time
    latest: bool
    path: str = Field(description="The task's key in the store")


class ResultRow(Row):
    task: str
    task_version: str
    context: str
    fold: int
    set: str
    set_version: str
    evaluator: str
    metric: str
    value: float | None
    chosen: str
    coverage: float | None
    seconds: float


class ResultPage(BaseModel):
    total: int
    offset: int
    items: list[ResultRow]


class JobAccepted(BaseModel):
    job_id: str
    state: str


class JobRow(Row):
    """A job as listed; ``scheduler`` and the full ``error`` are for token holders only."""

    job_id: str
    state: str
    submitted_at: Time
    finished_at: Time | None
    n_recipes: int
    items_total: int
    items_done: int
    items_failed: int
    scheduler: str | None = None
    error: str | None


class JobRecipeRow(Row):
    position: int
    source: str
    version: str
    context: str
    producer: str
    state: str
    items_total: int
    items_done: int
    items_failed: int
    items_reused: int
    seconds: float
    error: str | None


class JobStatus(Row):
    """A job and its recipes; ``host``, ``pid``, ``scheduler`` and the full ``error`` are for token holders."""

    job_id: str
    state: str
    submitted_at: Time
    started_at: Time | None
    finished_at: Time | None
    updated_at: Time
    n_recipes: int
    items_total: int
    items_done: int
    items_failed: int
    max_failed_fraction: float
    scheduler: str | None = None
    host: str | None = None
    pid: int | None = None
    error: str | None
    recipes: list[JobRecipeRow]


class FailureRow(Row):
    source: str
    version: str
    entity_id: str
    reason: str


def plain(value: Any) -> Any:
    """A catalog value as JSON has it: numpy scalars as Python ones, times as ISO 8601, NaN as null."""
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value


def records(frame: pd.DataFrame) -> list[dict]:
    """The rows of a catalog frame as plain dicts."""
    return [{k: plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]
