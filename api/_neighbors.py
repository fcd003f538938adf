"""``GET/POST /v1/neighbors``: the entities a set places nearest to query ids (see :meth:`Store.neighbors`).

JSON by default; ``Accept: application/vnd.apache.arrow.stream`` gives one Arrow IPC table of
``query, query_entity_id, rank, entity_id, symbol, score`` rows, the answer's other fields in the
schema metadata (``pertstore`` key, JSON).
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

import pandas as pd
import pyarrow as pa
from fastapi import APIRouter, Header, Query, Response
from pertstore.api._deps import READS, ApiState, State
from pertstore.api._formats import ARROW, negotiate
from pertstore.store import MAX_ID_CHARS
from pydantic import BaseModel, Field, StringConstraints

MAX_QUERIES = 2_000
MAX_K = 1_000
MAX_RESTRICT = 100_000
Id = Annotated[str, StringConstraints(max_length=MAX_ID_CHARS)]
Name = Annotated[str, StringConstraints(max_length=128)]
Metric = Literal["cosine", "euclidean"]
Method = Literal["auto", "exact", "index"]


class NeighborsRequest(BaseModel):
    source: Name
    ids: list[Id] = Field(min_length=1, max_length=MAX_QUERIES)
    k: int = Field(20, ge=1, le=MAX_K)
    metric: Metric = "cosine"
    context: Name | None = None
    version: Name | None = None
    tag: Name | None = None
    restrict_to: list[Id] | None = Field(None, min_length=1, max_length=MAX_RESTRICT)
    method: Method = Field("auto", description="exact, index (approximate HNSW) or auto (exact up to 100,000 rows)")


class Neighbor(BaseModel):
    entity_id: str
    symbol: str
    score: float = Field(description="cosine similarity (higher is nearer) or Euclidean distance (lower is nearer)")


class QueryNeighbors(BaseModel):
    query: str
    entity_id: str
    neighbors: list[Neighbor]


class NeighborsResponse(BaseModel):
    source: str
    version: str
    context: str
    metric: Metric
    method: Method
    k: int
    results: list[QueryNeighbors]
    unresolved: list[str]
    ambiguous: dict[str, list[str]]
    rules: dict[str, str] = Field(description="query ids several genes share, and the rule that resolved each")
    missing: list[str] = Field(description="query ids that resolve but the set lacks")
    restrict_ignored: list[str]


router = APIRouter(prefix="/v1", tags=["neighbors"], dependencies=READS)
ANSWERS = {
    200: {
        "content": {ARROW: {"schema": {"type": "string", "format": "binary"}}},
        "description": "The neighbours: JSON, or an Arrow IPC stream as the Accept header asks",
    }
}
Accept = Annotated[str | None, Header()]


def _answer(state: ApiState, body: NeighborsRequest, accept: str | None) -> NeighborsResponse | Response:
    df = state.store.neighbors(
        body.source,
        body.ids,
        k=body.k,
        metric=body.metric,
        context=body.context,
        version=body.version,
        tag=body.tag,
        restrict_to=body.restrict_to,
        method=body.method,
    )
    if negotiate(accept) == "arrow":
        return _arrow(df)
    return _model(df)


@router.post("/neighbors", response_model=NeighborsResponse, responses=ANSWERS)
def post_neighbors(state: State, body: NeighborsRequest, accept: Accept = None):
    """The ``k`` entities of a set nearest to each query id."""
    return _answer(state, body, accept)


@router.get("/neighbors", response_model=NeighborsResponse, responses=ANSWERS)
def get_neighbors(
    state: State,
    source: Annotated[str, Query(max_length=128)],
    ids: Annotated[list[str], Query(min_length=1, max_length=MAX_QUERIES)],
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 20,
    metric: Metric = "cosine",
    context: str | None = None,
    version: str | None = None,
    tag: str | None = None,
    restrict_to: Annotated[list[str] | None, Query(max_length=MAX_RESTRICT)] = None,
    method: Method = "auto",
    accept: Accept = None,
):
    """As ``POST /v1/neighbors``, with the query in the URL."""
    body = NeighborsRequest(
        source=source,
        ids=ids,
        k=k,
        metric=metric,
        context=context,
        version=version,
        tag=tag,
        restrict_to=restrict_to,
        method=method,
    )
    return _answer(state, body, accept)


def _model(df: pd.DataFrame) -> NeighborsResponse:
    results = []
    for _, g in df.groupby((df["rank"] == 1).cumsum(), sort=False):  # one group per query, a repeated one too
        neighbors = [Neighbor(entity_id=e, symbol=s, score=v) for e, s, v in zip(g.entity_id, g.symbol, g.score)]
        results.append(QueryNeighbors(query=g["query"].iat[0], entity_id=g.query_entity_id.iat[0], neighbors=neighbors))
    return NeighborsResponse(
        results=results, **{k: df.attrs[k] for k in NeighborsResponse.model_fields if k != "results"}
    )


def _arrow(df: pd.DataFrame) -> Response:
    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    table = table.replace_schema_metadata({"pertstore": json.dumps(df.attrs, default=str)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return Response(sink.getvalue().to_pybytes(), media_type=ARROW)
