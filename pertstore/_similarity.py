"""Nearest-neighbour queries over stored sets (``Store.neighbors``, ``Store.compare_neighbors``).

The search itself is :mod:`pertstore.store._neighbors`; this module resolves ids, picks the method,
keeps prepared indexes (the last two set/metric pairs per store) and joins labels.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pertstore.errors import InvalidInputError
from pertstore.store import OpenSet, check_ids, check_names, neighbor_index_key

if TYPE_CHECKING:
    from pertstore._store import Store

KEPT = 2
"""Prepared indexes kept per store (least recently used dropped)."""


class IndexCache:
    """Prepared search indexes of one store, keyed by (set, kind of index)."""

    def __init__(self) -> None:
        self._indexes: dict[tuple[str, str], object] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str], make):
        with self._lock:
            index = self._indexes.pop(key, None)
        if index is None:
            index = make()
        with self._lock:
            self._indexes[key] = index
            while len(self._indexes) > KEPT:
                self._indexes.pop(next(iter(self._indexes)))
        return index


def exact_index(store: Store, s: OpenSet, metric: str):
    """The prepared matrix of set ``s`` for ``metric``."""
    from pertstore.store import ExactIndex

    return store._indexes.get((s.key, metric), lambda: ExactIndex(s.all_rows(), metric))  # type: ignore[arg-type]


def graph_index(store: Store, s: OpenSet, metric: str):
    """The approximate index of set ``s`` for ``metric``: in memory, read from the store, or built and
    written there (atomically) on first use."""
    from pertstore.store import GraphIndex

    def make():
        stored = neighbor_index_key(s.card.source, s.card.version, metric)
        if store.storage.exists(stored):
            return GraphIndex.restore(store.storage.read_bytes(stored), s.all_rows(), metric)  # type: ignore[arg-type]
        index = GraphIndex.build(s.all_rows(), metric)  # type: ignore[arg-type]
        if not store.storage.read_only:
            store.storage.write_bytes(stored, index.to_bytes())
        return index

    return store._indexes.get((s.key, f"graph-{metric}"), make)


def labels(store: Store, kind: str, entity_ids: Sequence[str]) -> list[str]:
    """The registry label (gene symbol, molecule name) of each entity id, empty if unregistered."""
    if not len(entity_ids):
        return []
    found = store.catalog.labels(kind, pd.unique(pd.Series(entity_ids, dtype=object)).tolist())
    return [found.get(e, "") for e in entity_ids]


def neighbors(
    store: Store,
    source: str,
    ids: Sequence[str],
    *,
    k: int = 20,
    metric: str = "cosine",
    context: str | None = None,
    version: str | None = None,
    tag: str | None = None,
    restrict_to: Sequence[str] | None = None,
    method: str = "auto",
) -> pd.DataFrame:
    """The ``k`` entities of set ``source`` nearest to each of ``ids``.

    Parameters
    ----------
    ids
        Query entities in any namespace the registry knows (resolved as :meth:`align` does).
    metric
        ``cosine`` (score: cosine similarity, higher is nearer) or ``euclidean`` (score: distance).
    restrict_to
        Only these entities are candidates (ids of any namespace; those not in the set are ignored);
        searched exactly.
    method
        ``exact`` (torch matrix products), ``index`` (an approximate HNSW graph, usearch, built on
        first use and kept in the store beside the set) or ``auto``: exact up to 100,000 rows.

    Returns
    -------
    One row per (query, rank): ``query, query_entity_id, rank, entity_id, symbol, score``, nearest
    first; a query's own row is never its neighbour. ``attrs``: ``source``, ``version``, ``context``,
    ``metric``, ``k``, ``method`` (the one used), ``unresolved``, ``ambiguous``, ``rules``, ``missing``
    (resolved ids the set lacks) and ``restrict_ignored`` (``restrict_to`` ids that did not resolve or the set lacks).
    """
    from pertstore.store import EXACT_MAX_ROWS, check_search

    ids = check_ids([str(i) for i in ids])
    check_names(source=source, context=context, version=version, tags=tag)
    check_search(k, metric)
    row = store.catalog.find_set(source, context=context, version=version, tag=tag)
    s = store.cache.get(row.path)
    res = store.resolve(ids, row.kind)
    pos = s.positions([i or "" for i in res.ids])
    found = np.flatnonzero(pos >= 0)
    candidates, ignored = None, []
    if restrict_to is not None:
        restrict = check_ids([str(i) for i in restrict_to])
        rres = store.resolve(restrict, row.kind)
        rpos = s.positions([i or "" for i in rres.ids])
        ignored = [q for q, p in zip(restrict, rpos) if p < 0]
        candidates = np.unique(rpos[rpos >= 0])
    if method not in ("auto", "exact", "index"):
        raise InvalidInputError(f"unknown method {method!r}; use auto, exact or index")
    if method == "auto":
        method = "exact" if s.card.n_rows <= EXACT_MAX_ROWS or candidates is not None else "index"
    if method == "index" and candidates is not None:
        raise InvalidInputError("restrict_to is searched exactly; use method='exact' (or 'auto') with it")
    queries = s.rows(pos[found]) if len(found) else np.zeros((0, s.card.dim), "f4")
    if method == "index":
        nb, scores = graph_index(store, s, metric).search(queries, k, exclude=pos[found])
    else:
        nb, scores = exact_index(store, s, metric).search(queries, k, candidates=candidates, exclude=pos[found])
    store.cache.trim()
    set_ids = np.asarray(s.ids, dtype=object)
    q_rows = np.repeat(found, k)
    keep = nb.ravel() >= 0
    entity = set_ids[nb.ravel()[keep]].tolist()
    out = pd.DataFrame(
        {
            "query": np.asarray(ids, dtype=object)[q_rows[keep]],
            "query_entity_id": np.asarray(res.ids, dtype=object)[q_rows[keep]],
            "rank": np.tile(np.arange(1, k + 1), len(found))[keep],
            "entity_id": entity,
            "symbol": labels(store, row.kind, entity),
            "score": scores.ravel()[keep].astype(float),
        }
    )
    out.attrs = {
        "source": source,
        "version": row.version,
        "context": row.context,
        "metric": metric,
        "k": k,
        "method": method,
        "unresolved": res.unresolved,
        "ambiguous": res.ambiguous,
        "rules": res.rules,
        "missing": [ids[i] for i in np.flatnonzero((pos < 0) & np.array([e is not None for e in res.ids], dtype=bool))],
        "restrict_ignored": ignored,
    }
    return out


def compare_neighbors(
    store: Store,
    a: str,
    b: str,
    ids: Sequence[str] | None = None,
    *,
    k: int = 20,
    metric: str = "cosine",
    context: str | None = None,
) -> pd.DataFrame:
    """Per entity, how far two sets agree on its neighbours: the share of its top-``k`` in set ``a``
    that are also its top-``k`` in set ``b``, both searched among the entities the sets share.

    ``ids``: the entities to compare (any namespace; default every shared entity). Returns
    ``entity_id, symbol, overlap`` rows (attrs: ``versions``, ``n_shared``, ``mean_overlap``, ``k``,
    ``metric``, ``unresolved``, ``ambiguous``, ``missing``).
    """
    from pertstore.store import check_search, top_k_overlap

    check_names(source=a, context=context)
    check_names(source=b, context=context)
    check_search(k, metric)
    rows = [store.catalog.find_set(x, context=context) for x in (a, b)]
    if rows[0].kind != rows[1].kind:
        raise InvalidInputError(f"{a} holds {rows[0].kind}s and {b} {rows[1].kind}s; compare sets of one kind")
    sa, sb = (store.cache.get(r.path) for r in rows)
    shared = pd.Index(sa.ids).intersection(pd.Index(sb.ids))
    if len(shared) < 2:
        raise InvalidInputError(f"{a} and {b} share {len(shared)} entit(ies); neighbours need at least 2")
    res = None
    if ids is None:
        query = shared
    else:
        res = store.resolve(check_ids([str(i) for i in ids]), rows[0].kind)
        got = pd.Index([i for i in res.ids if i is not None]).unique()
        query = got[got.isin(shared)]
    common = [np.asarray(x.positions(shared)) for x in (sa, sb)]
    found = []
    for x, pool in zip((sa, sb), common):
        qpos = x.positions(query)
        nb, _ = exact_index(store, x, metric).search(x.rows(qpos), k, candidates=pool, exclude=qpos)
        column = np.full(x.card.n_rows + 1, -1)
        column[pool] = np.arange(len(pool))
        found.append(column[nb])  # set positions -> places in ``shared``, comparable across sets
    store.cache.trim()
    entity = query.tolist()
    out = pd.DataFrame(
        {
            "entity_id": entity,
            "symbol": labels(store, rows[0].kind, entity),
            "overlap": top_k_overlap(found[0], found[1]),
        }
    )
    out.attrs = {
        "versions": {a: rows[0].version, b: rows[1].version},
        "n_shared": len(shared),
        "k": k,
        "metric": metric,
        "mean_overlap": float(out.overlap.mean()) if len(out) else float("nan"),
        "unresolved": res.unresolved if res else [],
        "ambiguous": res.ambiguous if res else {},
        "missing": [] if res is None else sorted({i for i in res.ids if i is not None} - set(shared)),
    }
    return out
