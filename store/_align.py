"""Aligned retrieval: one block per source, rows in the caller's order, NaN where uncovered."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr
from pertstore.store._reader import OpenSet, load_rows


def aligned_dataset(
    query: Sequence[str],
    canonical: Sequence[str | None],
    sets: Mapping[str, OpenSet],
    rows: np.ndarray,
    *,
    context: str = "",
    unresolved: Sequence[str] = (),
    ambiguous: Mapping[str, list[str]] | None = None,
) -> xr.Dataset:
    """Build the dataset :meth:`pertstore.Store.align` returns.

    ``rows[i, j]`` is the row of ``canonical[j]`` in the i-th of ``sets``, -1 where it lacks it.
    Variables: one ``(entity, <source>_dim)`` float32 block per source, and ``covered``
    ``(entity, source)``. Coordinates: ``entity`` (the query ids as given), ``entity_id`` (canonical
    id, empty when unresolved) and ``source``. Attrs: versions, context, unresolved and ambiguous ids.
    """
    positions = dict(zip(sets, rows))
    covered = np.ascontiguousarray(rows.T >= 0)
    # one gather per set (the first covered row stands in for uncovered ones), all sets' reads together
    wanted = [
        (source, np.where(pos >= 0, pos, pos[pos >= 0][0])) for source, pos in positions.items() if (pos >= 0).any()
    ]
    blocks = dict(zip([source for source, _ in wanted], load_rows([(sets[source], pos) for source, pos in wanted])))
    data_vars = {}
    for source, s in sets.items():
        block = blocks.get(source)
        if block is None:
            block = np.full((len(query), s.card.dim), np.nan, dtype=np.float32)
        else:
            block[positions[source] < 0] = np.nan
        data_vars[source] = _variable(("entity", f"{source}_dim"), block)
    data_vars["covered"] = _variable(("entity", "source"), covered)
    return xr.Dataset(
        data_vars,
        coords={
            "entity": _variable("entity", np.asarray(list(query), dtype=object), index=True),
            "entity_id": _variable("entity", np.asarray([c or "" for c in canonical], dtype=object)),
            "source": _variable("source", np.asarray(list(sets)), index=True),
        },
        attrs={
            "context": context,
            "versions": {src: s.card.version for src, s in sets.items()},
            "unresolved": list(unresolved),
            "ambiguous": dict(ambiguous or {}),
        },
    )


def _variable(dims, values: np.ndarray, *, index: bool = False) -> xr.Variable:
    """Wrap a numpy array as is (an index as a pandas Index of objects). xarray's checks of arbitrary
    input import ``dask`` on first use when it is installed: 0.2-1.9 s of a fresh process's first
    align, for arrays known to be numpy."""
    if index:
        return xr.IndexVariable(dims, pd.Index(values, dtype=object, copy=False), fastpath=True)
    return xr.Variable(dims, values, fastpath=True)
