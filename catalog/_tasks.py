"""The catalog's index of tasks (``tasks`` table, ``latest_tasks`` view).

A task's group in the store (``tasks/<name>/<version>``, written by ``consumers.tasks``) is the truth;
this index is rebuilt from the groups' attributes and two small arrays, never from the targets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd
import zarr
from pertstore.store import GROUP_META, TASK_ENCODING_TYPE, TASKS_PREFIX, Storage

from pertstore.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from pertstore.catalog._catalog import Catalog


@dataclass(frozen=True)
class TaskEntry:
    """One indexed task version."""

    name: str
    version: str
    kind: str
    n_perts: int
    n_genes: int
    contexts: list[str]
    recipe: dict
    path: str
    created_at: datetime

    @classmethod
    def from_group(cls, storage: Storage, key: str) -> TaskEntry:
        """Read a published task's entry from its Zarr group at ``key`` (``tasks/<name>/<version>``)."""
        g = zarr.open_group(storage.zarr_store(key, read_only=True), mode="r")
        attrs = dict(g.attrs)
        if attrs.get("encoding-type") != TASK_ENCODING_TYPE:
            raise InvalidInputError(f"{key}: not a pertstore task (encoding-type {attrs.get('encoding-type')!r})")
        name, version = key.split("/")[1:3]
        context, targets = cast(zarr.Array, g["context"]), cast(zarr.Array, g["targets"])
        contexts = sorted({str(c) for c in np.asarray(context[...])}) if context.shape[0] else []
        created = pd.Timestamp(str(attrs.get("created_at") or datetime.now(UTC))).to_pydatetime()
        return cls(
            name,
            version,
            str(attrs["kind"]),
            int(targets.shape[0]),
            int(targets.shape[1]),
            contexts,
            dict(cast(dict, attrs["recipe"])),
            key,
            created,
        )


class TaskIndex:
    """Find, list and index tasks (``catalog.tasks``)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def find(self, name: str, version: str | None = None) -> pd.Series:
        """The row of a task version (latest when ``version`` is None); :class:`NotFoundError` naming
        the known names or versions."""
        q = self.catalog.query
        if version is None:
            df = q("SELECT * FROM latest_tasks WHERE name = ?", [name])
        else:
            df = q("SELECT * FROM tasks WHERE name = ? AND version = ?", [name, version])
        if df.empty:
            known = q("SELECT DISTINCT name FROM tasks ORDER BY 1")["name"].tolist()
            if name not in known:
                raise NotFoundError(f"no task named {name!r}; stored tasks: {known}")
            versions = q("SELECT version FROM tasks WHERE name = ? ORDER BY created_at", [name])
            raise NotFoundError(f"task {name!r} has no version {version!r}; versions: {versions['version'].tolist()}")
        return df.iloc[0]

    def ls(self, name: str | None = None) -> pd.DataFrame:
        """Task versions, newest first: ``name, version, kind, n_perts, n_genes, contexts, created_at,
        latest, path``."""
        sql = (
            "SELECT t.name, t.version, t.kind, t.n_perts, t.n_genes, t.contexts, t.created_at, "
            "(l.version IS NOT NULL) AS latest, t.path FROM tasks t "
            "LEFT JOIN latest_tasks l ON l.name = t.name AND l.version = t.version "
            + ("WHERE t.name = ? " if name else "")
            + "ORDER BY t.name, t.created_at DESC"
        )
        return self.catalog.query(sql, [name] if name else [])

    def recipes(self) -> pd.DataFrame:
        """``name, version, recipe`` (JSON text) of every task version."""
        return self.catalog.query("SELECT name, version, recipe FROM tasks")

    def add(self, entry: TaskEntry) -> None:
        """Index one task version (replacing its row if present)."""
        with self.catalog.transaction() as con:
            _insert(con, entry)

    def reindex(self, storage: Storage) -> int:
        """Index every task published in ``storage`` afresh; returns how many."""
        keys = [
            f"{TASKS_PREFIX}/{n}/{v}"
            for n in storage.list_dir(TASKS_PREFIX)
            for v in storage.list_dir(f"{TASKS_PREFIX}/{n}")
            if storage.exists(f"{TASKS_PREFIX}/{n}/{v}/{GROUP_META}")
        ]
        entries = [TaskEntry.from_group(storage, key) for key in keys]
        with self.catalog.transaction() as con:
            con.execute("DELETE FROM tasks").fetchall()
            for entry in entries:
                _insert(con, entry)
        return len(entries)


def _insert(con, entry: TaskEntry) -> None:
    con.execute(
        "INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            entry.name,
            entry.version,
            entry.kind,
            entry.n_perts,
            entry.n_genes,
            ",".join(entry.contexts),
            json.dumps(entry.recipe, sort_keys=True),
            entry.path,
            entry.created_at,
        ],
    ).fetchall()
