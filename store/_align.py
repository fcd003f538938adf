"""Aligned retrieval: one block per source, rows in the caller's order, NaN where uncovered."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr

from pertstore.store._reader import OpenSet

_MISSING = "\0missing"


def aligned_dataset(query: Sequence[str], canonical: Sequence[str | None], sets: Mapping[str, OpenSet], *,
                    context: str = "", unresolved: Sequence[str] = (), ambiguous: Mapping[str, list[str]] | None = None
                    ) -> xr.Dataset:
    """Build the dataset :meth:`pertstore.Store.align` returns.

    Variables: one ``(entity, <source>_dim)`` float32 block per source, and ``covered``
    ``(entity, source)``. Coordinates: ``entity`` (the query ids as given), ``entity_id`` (canonical
    id, empty when unresolved) and ``source``. Attrs: versions, context, unresolved and ambiguous ids.
    """
    keys = [c if c is not None else _MISSING for c in canonical]
    data_vars = {}
    covered = np.zeros((len(query), len(sets)), dtype=bool)
    for j, (source, s) in enumerate(sets.items()):
        pos = s.positions(keys)
        mask = pos >= 0
        if mask.any():
            block = s.rows(np.where(mask, pos, pos[mask][0]))  # one gather, then blank the uncovered rows
            block[~mask] = np.nan
        else:
            block = np.full((len(query), s.card.dim), np.nan, dtype=np.float32)
        covered[:, j] = mask
        data_vars[source] = (("entity", f"{source}_dim"), block)
    data_vars["covered"] = (("entity", "source"), covered)
    return xr.Dataset(
        data_vars,
        coords={"entity": np.asarray(list(query), dtype=object),
                "entity_id": ("entity", np.asarray([c or "" for c in canonical], dtype=object)),
                "source": list(sets)},
        attrs={"context": context, "versions": {src: s.card.version for src, s in sets.items()},
               "unresolved": list(unresolved), "ambiguous": dict(ambiguous or {})},
    )
