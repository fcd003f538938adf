"""The DuckDB catalog: an index over the store that can always be rebuilt from it."""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from pertstore.catalog._entities import EntityMethods
from pertstore.catalog._jobs import JobIndex
from pertstore.catalog._registry import (
    AliasIndex,
)
from pertstore.catalog._results import ResultIndex
from pertstore.catalog._schema import first, migrate
from pertstore.catalog._tasks import TaskIndex
from pertstore.store import SetCard

from pertstore.errors import ConflictError, NotFoundError, PertstoreError

LOCK_WAIT_S = 30.0
_OPEN_CATALOGS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _settle_at_exit() -> None:
    """Let alias indexes being built finish before the interpreter stops its threads.

    A daemon thread stopped inside DuckDB's C++ code at interpreter exit aborts the process
    ("terminate called after throwing an instance of ''", exit code 134); atexit handlers run before
    that, so a store left open (no ``close``/``with``) still exits cleanly.
    """
    for catalog in list(_OPEN_CATALOGS):
        catalog.settle()


class Catalog(EntityMethods):
    """Index of sources, sets, tags, contexts, entities, aliases and per-set coverage.

    One DuckDB file with a single writing process (the coordinator). The connection is opened on
    first use and kept until :meth:`close`; opening waits up to 30 s while another process holds
    the file's lock. Each thread works through its own cursor, so a server can read while a job
    publishes.

    ``cache_bytes`` is the store's cache budget: the in-memory alias indexes and their answers stay
    within a share of it (``INDEX_SHARE`` of ``_entities``) and are counted in it (:attr:`cache_nbytes`).
    """

    def __init__(self, path: str | Path, *, cache_bytes: int | None = None) -> None:
        self.path = Path(path)
        self.cache_bytes = cache_bytes
        self._con: duckdb.DuckDBPyConnection | None = None
        self._local = threading.local()
        self._open_lock = threading.Lock()
        self._sets_view: _SetsView | None = None
        """The sources, sets and tags tables for find_set; valid while this process holds the catalog
        (no other process can write it then) and until this process writes (see ``_generation``)."""
        self._generation = 0
        """Bumped after every write; a view read while a write was under way is not kept."""
        self._alias_indexes: dict[str, tuple[int, AliasIndex | None]] = {}
        """Per kind: the registry generation and its index (None: too large for the budget)."""
        self._resolve_calls: dict[str, int] = {}
        self._index_lock = threading.Lock()
        self._index_builders: dict[str, threading.Thread] = {}
        _OPEN_CATALOGS.add(self)
        self._shared_rules: tuple[int, dict[str, tuple[str, str]]] | None = None
        """``(registry generation, shared_id_rules())`` once the alias index needed them."""
        self._registry_generation = 0
        """Bumped when a registry changes; an alias index built while it changed is not kept."""

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor on the catalog."""
        root = self._root()
        cursor = getattr(self._local, "cursor", None)
        if cursor is None or getattr(self._local, "root", None) is not root:
            cursor = root.cursor()
            self._local.cursor, self._local.root = cursor, root
        return cursor

    def _root(self) -> duckdb.DuckDBPyConnection:
        with self._open_lock:
            return self._connect()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            deadline = time.monotonic() + LOCK_WAIT_S
            while True:
                try:
                    self._con = duckdb.connect(str(self.path))
                    break
                except duckdb.IOException as e:
                    if "lock" not in str(e).lower() or time.monotonic() > deadline:
                        raise PertstoreError(f"catalog {self.path} cannot be opened: {e}") from e
                    time.sleep(0.05)
            self._con.execute("SET enable_progress_bar = false").fetchall()
            # times come back in UTC: converting to another zone loads pytz's whole zone list first
            # (about 50 ms of a fresh process's first query of the sets table)
            self._con.execute("SET GLOBAL TimeZone = 'UTC'").fetchall()
            migrate(self._con)
        return self._con

    def settle(self) -> None:
        """Wait for alias indexes being built in the background."""
        for builder in list(self._index_builders.values()):
            builder.join()

    @property
    def cache_nbytes(self) -> int:
        """Estimated memory of the alias indexes kept and their answers."""
        return sum(index.nbytes + index.answer_nbytes for _, index in list(self._alias_indexes.values()) if index)

    def close(self) -> None:
        self.settle()  # an alias index being built holds a cursor
        with self._open_lock:
            if self._con is not None:
                self._con.close()
                self._con = None
            self._local = threading.local()
            self._sets_view = None
            self._alias_indexes.clear()

    @property
    def tasks(self) -> TaskIndex:
        """The index of tasks (find, list, add, reindex)."""
        return TaskIndex(self)

    @property
    def results(self) -> ResultIndex:
        """Benchmark results (save, rows, errors, reindex)."""
        return ResultIndex(self)

    @property
    def jobs(self) -> JobIndex:
        """Producer jobs (add, ls, row, recipes, failures, state changes, progress, export)."""
        return JobIndex(self)

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self.con
        con.execute("BEGIN TRANSACTION").fetchall()
        try:
            yield con
            con.execute("COMMIT").fetchall()
        except BaseException:
            con.execute("ROLLBACK").fetchall()
            raise
        finally:
            self._generation += 1
            self._sets_view = None

    def query(self, sql: str, params: Sequence | None = None) -> pd.DataFrame:
        return self.con.execute(sql, params or []).df()

    # ---- sets and tags -------------------------------------------------------------------------

    def check_compatible(self, source: str, kind: str, dim: int) -> None:
        """Raise :class:`ConflictError` if ``source`` exists with another kind or dim."""
        row = first(self.con.execute("SELECT kind, dim FROM sources WHERE source = ?", [source]))
        if row and (row[0], row[1]) != (kind, dim):
            raise ConflictError(
                f"source {source!r} holds {row[0]} embeddings of dim {row[1]}; the new set is {kind} with dim {dim}"
            )

    def index_set(self, card: SetCard, path: str, entity_ids: Sequence[str]) -> None:
        """Record a published set, its entities and its ``latest`` tag (idempotent)."""
        with self.transaction() as con:
            self._insert_set(con, card, path, entity_ids)

    def _insert_set(self, con: duckdb.DuckDBPyConnection, card: SetCard, path: str, entity_ids: Sequence[str]) -> None:
        row = first(con.execute("SELECT kind, dim FROM sources WHERE source = ?", [card.source]))
        if row and (row[0], row[1]) != (card.kind, card.dim):
            raise ConflictError(
                f"source {card.source!r} holds {row[0]} embeddings of dim {row[1]}; "
                f"set {card.version} is {card.kind} with dim {card.dim}"
            )
        if not row:
            con.execute(
                "INSERT INTO sources VALUES (?, ?, ?, ?)", [card.source, card.kind, card.dim, card.created_at]
            ).fetchall()
        if first(con.execute("SELECT 1 FROM sets WHERE source = ? AND version = ?", [card.source, card.version])):
            return
        con.execute(
            "INSERT INTO sets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                card.source,
                card.version,
                card.kind,
                card.context,
                card.dim,
                card.n_rows,
                card.chunk_rows,
                card.recipe.producer,
                card.recipe.canonical_json(),
                card.checksum,
                len(card.failed),
                path,
                card.created_at,
            ],
        ).fetchall()
        ents = pd.DataFrame(
            {
                "source": card.source,
                "version": card.version,
                "entity_id": list(entity_ids),
                "position": range(len(entity_ids)),
            }
        )
        con.register("_ents", ents)
        con.execute("INSERT INTO set_entities SELECT * FROM _ents").fetchall()
        con.unregister("_ents")

    def set_tag(self, source: str, context: str, tag: str, version: str, updated_at: datetime | None = None) -> None:
        with self.transaction() as con:
            self._upsert_tag(con, source, context, tag, version, updated_at)

    def _upsert_tag(self, con, source, context, tag, version, updated_at=None) -> None:
        con.execute(
            "INSERT OR REPLACE INTO tags VALUES (?, ?, ?, ?, ?)",
            [source, context, tag, version, updated_at or datetime.now(UTC)],
        ).fetchall()

    def find_set(
        self, source: str, *, context: str | None = None, version: str | None = None, tag: str | None = None
    ) -> pd.Series:
        """The set row for ``source`` in ``context`` at ``version`` or ``tag`` (default: ``latest``).

        A source without a set in ``context`` falls back to its global set (empty context).
        Answered from one in-memory copy of the small ``sources``, ``sets`` and ``tags`` tables
        (three queries, then dictionary lookups), so aligning many sources costs no query per source.
        """
        view = self._view()
        if source not in view.contexts:
            raise NotFoundError(f"unknown source {source!r}; known sources: {sorted(view.contexts)}")
        if version is not None:
            if (source, version) not in view.rows:
                raise NotFoundError(f"source {source!r} has no version {version!r}")
            return view.row(source, version)
        ctx = context or ""
        contexts = view.contexts[source]
        if ctx not in contexts:
            if "" in contexts:
                ctx = ""
            elif context is None:
                raise NotFoundError(f"source {source!r} is contextual; pass a context, one of {contexts}")
            else:
                raise NotFoundError(f"source {source!r} has no set for context {context!r}; contexts: {contexts}")
        name = tag or "latest"
        tags = view.tags.get((source, ctx), {})
        if name not in tags:
            raise NotFoundError(f"source {source!r} (context {ctx!r}) has no tag {name!r}; tags: {sorted(tags)}")
        return view.row(source, tags[name])

    def _view(self) -> _SetsView:
        view = self._sets_view
        if view is None:
            generation = self._generation
            con = self.con
            sets = con.execute("SELECT * FROM sets ORDER BY source, version").df()
            view = _SetsView(
                sources=[r[0] for r in con.execute("SELECT source FROM sources").fetchall()],
                sets=sets,
                tags=con.execute("SELECT source, context, tag, version FROM tags").fetchall(),
            )
            if generation == self._generation:
                self._sets_view = view
        return view

    def positions(self, sets: Sequence[tuple[str, str]], entity_ids: Sequence[str | None]) -> np.ndarray:
        """Row of each canonical id in each ``(source, version)`` set: ``[n_sets, n_ids]``, -1 where
        a set lacks the id (or the id is None).

        One join over ``set_entities``, which answers a fresh process in about 30 ms whether it asks
        for 50 or 2,000 ids from 30 sets, where reading and hashing each set's 20,000 stored ids
        took 0.2-0.3 s.
        """
        out = np.full((len(sets), len(entity_ids)), -1, dtype=np.int64)
        known = [(i, e) for i, e in enumerate(entity_ids) if e is not None]
        if not sets or not known:
            return out
        probe = pd.DataFrame(
            {"pos": np.fromiter((i for i, _ in known), np.int64, len(known)), "entity_id": [e for _, e in known]}
        )
        wanted = pd.DataFrame(
            {"k": np.arange(len(sets), dtype=np.int64), "source": [s for s, _ in sets], "version": [v for _, v in sets]}
        )
        con = self.con
        con.register("_probe", probe)
        con.register("_wanted", wanted)
        try:
            # a literal source list: a filter pushed into the scan of set_entities, before the joins
            marks = ", ".join("?" * len({s for s, _ in sets}))
            hits = con.execute(
                "SELECT w.k, p.pos, e.position FROM set_entities e "
                "JOIN _wanted w ON w.source = e.source AND w.version = e.version "
                f"JOIN _probe p ON p.entity_id = e.entity_id WHERE e.source IN ({marks})",
                list(dict.fromkeys(s for s, _ in sets)),
            ).fetchnumpy()
        finally:
            con.unregister("_probe")
            con.unregister("_wanted")
        out[hits["k"], hits["pos"]] = hits["position"]
        return out

    def list_sets(self, source: str | None = None, context: str | None = None) -> pd.DataFrame:
        where, params = [], []
        if source:
            where.append("s.source = ?")
            params.append(source)
        if context is not None:
            where.append("s.context = ?")
            params.append(context)
        sql = (
            "SELECT s.source, s.version, s.kind, s.context, s.dim, s.n_rows, s.producer, s.n_failed, s.created_at, "
            "coalesce(string_agg(t.tag, ',' ORDER BY t.tag), '') AS tags FROM sets s "
            "LEFT JOIN tags t ON t.source = s.source AND t.version = s.version AND t.context = s.context "
            + ("WHERE " + " AND ".join(where) if where else "")
            + " GROUP BY ALL ORDER BY s.source, s.context, s.created_at"
        )
        return self.query(sql, params)

    def coverage(self) -> pd.DataFrame:
        return self.query("SELECT * FROM coverage ORDER BY source, context, version")

    def contexts(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT context FROM contexts ORDER BY 1").fetchall()]

    def labels(self, kind: str, entity_ids: Sequence[str]) -> dict[str, str]:
        """The registry label (gene symbol, molecule name) of each registered id among ``entity_ids``."""
        con = self.con
        con.register("_wanted", pd.DataFrame({"entity_id": list(entity_ids)}, dtype=object))
        try:
            got = con.execute(
                "SELECT e.entity_id, e.label FROM entities e JOIN _wanted w USING (entity_id) WHERE e.kind = ?", [kind]
            ).fetchall()
        finally:
            con.unregister("_wanted")
        return dict(got)

    def tags(self, source: str | None = None) -> pd.DataFrame:
        """``source, context, tag, version, updated_at`` of every tag (of ``source``)."""
        sql = "SELECT source, context, tag, version, updated_at FROM tags" + (" WHERE source = ?" if source else "")
        return self.query(sql + " ORDER BY source, context, tag", [source] if source else None)

    def recipes(self, *, source: str | None = None, producer: str | None = None) -> pd.DataFrame:
        """``source, version, context, producer, recipe`` (JSON text) of every set, optionally filtered."""
        where = [c for c, v in (("source = ?", source), ("producer = ?", producer)) if v]
        sql = (
            "SELECT source, version, context, producer, recipe FROM sets"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY source, version"
        )
        return self.query(sql, [v for v in (source, producer) if v] or None)

    def ping(self) -> None:
        """Raise unless the catalog answers a query."""
        self.con.execute("SELECT 1").fetchall()

    def sources(self) -> pd.DataFrame:
        """One row per source: kind, dim and description."""
        return self.query("SELECT * FROM sources ORDER BY source")

    def indexed_paths(self) -> set[str]:
        """Store keys of every indexed set."""
        return {r[0] for r in self.con.execute("SELECT path FROM sets").fetchall()}

    def is_indexed(self, path: str) -> bool:
        return first(self.con.execute("SELECT 1 FROM sets WHERE path = ?", [path])) is not None

    # ---- rebuild -------------------------------------------------------------------------------

    def clear(self) -> None:
        """Empty every table (the schema stays)."""
        with self._registry_change(), self.transaction() as con:
            for table in ["set_entities", "tags", "sets", "sources", "aliases", "entities"]:
                con.execute(f"DELETE FROM {table}").fetchall()


class _SetsView:
    """The ``sources``, ``sets`` and ``tags`` tables held in memory for :meth:`Catalog.find_set`."""

    def __init__(self, sources: list[str], sets: pd.DataFrame, tags: list[tuple[str, str, str, str]]) -> None:
        self.sets = sets
        self.rows = {(src, ver): i for i, (src, ver) in enumerate(zip(sets.source.tolist(), sets.version.tolist()))}
        self.contexts: dict[str, list[str]] = {src: [] for src in sources}
        for src, ctx in sorted(set(zip(sets.source.tolist(), sets.context.tolist()))):
            self.contexts.setdefault(src, []).append(ctx)
        self.tags: dict[tuple[str, str], dict[str, str]] = {}
        for src, ctx, tag, ver in tags:
            self.tags.setdefault((src, ctx), {})[tag] = ver
        self._series: dict[tuple[str, str], pd.Series] = {}

    def row(self, source: str, version: str) -> pd.Series:
        key = (source, version)
        if key not in self._series:
            self._series[key] = self.sets.iloc[self.rows[key]].rename(0)
        return self._series[key]
