"""Response bodies for aligned embeddings: JSON for small answers, streamed Arrow IPC or ``.npy`` for bulk."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import numpy as np
import xarray as xr
from fastapi.responses import StreamingResponse
from pertstore.store import sources_of, to_arrow

ARROW = "application/vnd.apache.arrow.stream"
NPY = "application/x-npy"
BATCH_ROWS = 4096
"""Rows per streamed Arrow record batch or ``.npy`` block."""
_END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"


def negotiate(accept: str | None) -> str:
    """``arrow``, ``npy`` or ``json`` from an Accept header (JSON unless a bulk type is asked for)."""
    accept = accept or ""
    if ARROW in accept:
        return "arrow"
    if NPY in accept:
        return "npy"
    return "json"


def respond(ds: xr.Dataset, accept: str | None):
    """The aligned dataset in the format the client accepts."""
    fmt = negotiate(accept)
    if fmt == "arrow":
        return StreamingResponse(_arrow_stream(ds), media_type=ARROW)
    if fmt == "npy":
        return _npy_response(ds)
    return _json(ds)


def _json(ds: xr.Dataset) -> dict:
    covered = ds["covered"].values
    return {
        "ids": [str(i) for i in ds["entity"].values],
        "entity_ids": [str(i) for i in ds["entity_id"].values],
        "context": ds.attrs["context"],
        "versions": ds.attrs["versions"],
        "unresolved": ds.attrs["unresolved"],
        "ambiguous": ds.attrs["ambiguous"],
        "embeddings": {
            s: [row.tolist() if ok else None for row, ok in zip(ds[s].values, covered[:, j])]
            for j, s in enumerate(sources_of(ds))
        },
    }


def _arrow_stream(ds: xr.Dataset) -> Iterator[memoryview | bytes]:
    """The Arrow IPC stream of :func:`to_arrow`: the schema, one message per ``BATCH_ROWS`` rows, the end marker.

    Each message is Arrow's own encapsulated IPC bytes, sent without copying.
    """
    table = to_arrow(ds)
    yield memoryview(table.schema.serialize())
    for batch in table.to_batches(max_chunksize=BATCH_ROWS):
        yield memoryview(batch.serialize())
    yield _END_OF_STREAM


def _npy_response(ds: xr.Dataset) -> StreamingResponse:
    """All sources side by side as one float32 ``[ids, sum(dims)]`` ``.npy`` (NaN where uncovered).

    Rows follow the request's ids; the ``x-pertstore-columns`` header maps each source to its
    column span, ``x-pertstore-versions`` gives the versions read.
    """
    sources = sources_of(ds)
    block = np.hstack([ds[s].values for s in sources]).astype("<f4", copy=False)
    spans, start = {}, 0
    for s in sources:
        spans[s] = [start, start + ds[s].shape[1]]
        start += ds[s].shape[1]

    def body() -> Iterator[bytes]:
        head = io.BytesIO()
        np.lib.format.write_array_header_1_0(head, np.lib.format.header_data_from_array_1_0(block))
        yield head.getvalue()
        for i in range(0, len(block), BATCH_ROWS):
            yield np.ascontiguousarray(block[i : i + BATCH_ROWS]).tobytes()

    headers = {"x-pertstore-columns": json.dumps(spans), "x-pertstore-versions": json.dumps(ds.attrs["versions"])}
    return StreamingResponse(body(), media_type=NPY, headers=headers)
