"""The entity half of the :class:`~pertstore.catalog.Catalog`: the registry's tables, resolving ids, and the
in-memory alias indexes a process that resolves often keeps (a mixin of ``Catalog``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

import duckdb
import pandas as pd
from pertstore.catalog._molecules import smiles_to_inchikey
from pertstore.catalog._registry import (
    ANSWER_BYTES,
    AliasIndex,
    Resolution,
    aliases_for,
    entity_rows,
    note_rules,
    pick,
    probe_keys,
    rules_from_hits,
)

log = logging.getLogger(__name__)

INDEX_AFTER_CALLS = 2
"""A process that resolves ids of a kind this often keeps that kind's aliases in memory (servers,
notebooks). The index is built in the background (about 2 s for the human genes' 445,000
aliases) while the catalog's join answers (60 ms for 2,000 ids, 0.36 s for 60,000), so a one-shot
process never pays for it and no request waits for it."""
INDEX_SHARE = 4
"""An alias index is kept only within 1/``INDEX_SHARE`` of the store's cache budget (the human
genes': about 65 MB), its kept answers within 1/16 of it; decoded rows of sets get the rest (see
``SetCache.trim``)."""


class EntityMethods:
    """Registering entities and resolving ids; :class:`~pertstore.catalog.Catalog` inherits these methods, which
    use its connection and the alias-index state it sets up."""

    cache_bytes: int | None
    _alias_indexes: dict[str, tuple[int, AliasIndex | None]]
    _resolve_calls: dict[str, int]
    _index_lock: threading.Lock
    _index_builders: dict[str, threading.Thread]
    _registry_generation: int
    _shared_rules: tuple[int, dict[str, tuple[str, str]]] | None

    if TYPE_CHECKING:

        @property
        def con(self) -> duckdb.DuckDBPyConnection: ...

        def transaction(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]: ...

    def replace_registry(self, kind: str, registry: pd.DataFrame) -> None:
        """Replace the entities and aliases of ``kind`` with those derived from ``registry``."""
        ents = entity_rows(kind, registry)
        al = aliases_for(kind, registry).assign(kind=kind)[["kind", "key", "namespace", "priority", "entity_id"]]
        with self._registry_change(), self.transaction() as con:
            con.execute("DELETE FROM entities WHERE kind = ?", [kind]).fetchall()
            con.execute("DELETE FROM aliases WHERE kind = ?", [kind]).fetchall()
            con.register("_ents", ents[["entity_id", "kind", "label", "description"]])
            con.register("_al", al)
            con.execute("INSERT INTO entities SELECT * FROM _ents").fetchall()
            con.execute("INSERT INTO aliases SELECT * FROM _al").fetchall()
            con.unregister("_ents")
            con.unregister("_al")

    @contextmanager
    def _registry_change(self) -> Iterator[None]:
        try:
            yield
        finally:
            self._registry_generation += 1  # alias indexes read before now are stale

    def n_entities(self, kind: str) -> int:
        return int(self.con.execute("SELECT count(*) FROM entities WHERE kind = ?", [kind]).fetchall()[0][0])

    def resolve(self, ids: Sequence[str], kind: str) -> Resolution:
        """Resolve ids of any namespace to canonical ids of ``kind`` (see :mod:`._registry`)."""
        query = [str(i) for i in ids]
        index = self._alias_index(kind)
        if index is not None:
            res = index.resolve(query)
            if kind == "gene":
                note_rules(res, self._shared_rules_now())
        else:
            res = self._resolve_in_db(query, kind)
        if kind == "molecule" and res.unresolved:
            self._resolve_smiles(res)
        return res

    def _alias_index(self, kind: str) -> AliasIndex | None:
        """The in-memory alias index of ``kind`` once built; starts building it when the process
        resolves often (see :data:`INDEX_AFTER_CALLS`)."""
        with self._index_lock:
            kept = self._alias_indexes.get(kind)
            if kept is not None and kept[0] == self._registry_generation:
                return kept[1]
            self._resolve_calls[kind] = calls = self._resolve_calls.get(kind, 0) + 1
            builder = self._index_builders.get(kind)
            if calls >= INDEX_AFTER_CALLS and (builder is None or not builder.is_alive()):
                builder = threading.Thread(
                    target=self._build_alias_index,
                    args=(kind, self._registry_generation),
                    name=f"pertstore-alias-index-{kind}",
                    daemon=True,
                )
                self._index_builders[kind] = builder
                builder.start()
        return None

    def _build_alias_index(self, kind: str, generation: int) -> None:
        budget = None if self.cache_bytes is None else self.cache_bytes // INDEX_SHARE
        answer_bytes = ANSWER_BYTES if budget is None else min(ANSWER_BYTES, budget // 4)
        try:
            index: AliasIndex | None = AliasIndex(
                self.con.execute("SELECT key, priority, entity_id FROM aliases WHERE kind = ?", [kind]).fetchall(),
                answer_bytes=answer_bytes,
            )
        except duckdb.Error as e:  # the catalog closed meanwhile: the join keeps answering
            log.debug("alias index of %s not built: %s", kind, e)
            return
        assert index is not None
        if budget is not None and index.nbytes > budget:  # remembered as None: not built again for this registry
            log.info(
                "alias index of %s not kept: %d bytes exceed 1/%d of the cache budget", kind, index.nbytes, INDEX_SHARE
            )
            index = None
        with self._index_lock:
            if generation == self._registry_generation:  # not kept when the registry changed meanwhile
                self._alias_indexes[kind] = (generation, index)

    def shared_id_rules(self) -> dict[str, tuple[str, str]]:
        """Ensembl ids several genes share, resolved by a rule: key -> (gene, rule)."""
        rows = self.con.execute(
            "SELECT key, namespace, entity_id FROM aliases WHERE kind = 'gene' AND namespace "
            "LIKE 'ensembl_gene:%' AND namespace <> 'ensembl_gene:shared'"
        ).fetchall()
        return {key: (entity, namespace.split(":", 1)[1]) for key, namespace, entity in rows}

    def _shared_rules_now(self) -> dict[str, tuple[str, str]]:
        """:meth:`shared_id_rules` of the current registry, read once per registry version."""
        kept = self._shared_rules
        if kept is None or kept[0] != self._registry_generation:
            kept = self._shared_rules = (self._registry_generation, self.shared_id_rules())
        return kept[1]

    def _resolve_in_db(self, query: list[str], kind: str) -> Resolution:
        probes = probe_keys(query)
        con = self.con
        con.register("_probe", probes)
        try:
            hits = con.execute(
                "SELECT DISTINCT p.pos, a.priority, a.entity_id, a.namespace FROM _probe p "
                "JOIN aliases a ON a.kind = ? AND a.key = p.key",
                [kind],
            ).df()
        finally:
            con.unregister("_probe")
        return rules_from_hits(pick(query, hits), hits)  # the rules come with the hits: no scan of their own

    def _resolve_smiles(self, res: Resolution) -> None:
        still = []
        for q in res.unresolved:
            key = smiles_to_inchikey(q.strip())
            if key is None:
                still.append(q)
                continue
            for pos, item in enumerate(res.query):
                if item == q:
                    res.ids[pos] = key
        res.unresolved = still
