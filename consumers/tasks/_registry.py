"""Tasks in a store: ``tasks/<name>/<version>`` Zarr groups, published atomically and indexed in the catalog.

A task's version is the first 16 hex digits of the SHA-256 of its recipe's
canonical JSON, leaving out what does not change the numbers (file name,
pertstore and library versions): the same input file (by content) and the same
parameters give the same version, and saving it again changes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from pertstore.catalog import TaskEntry
from pertstore.store import GROUP_META, TASKS_PREFIX, check_name

from pertstore.errors import InvalidInputError

from ._ingest import read_perturbation_data
from ._presets import Preset, get_preset
from ._task import Task, build_per_dose, build_task, deg_table_task, import_task

if TYPE_CHECKING:
    from pertstore._store import Store

VOLATILE = ("producer_version", "libraries")
"""Recipe entries that do not enter the version."""


def task_key(name: str, version: str) -> str:
    return f"{TASKS_PREFIX}/{name}/{version}"


def task_staging_key(name: str, version: str) -> str:
    return f"staging/_tasks/{name}/{version}"  # '_' cannot start a set's source name: no clash with sets


def task_version(recipe: dict[str, Any]) -> str:
    """The version of the task made by ``recipe``: a hash of its content-defining entries."""
    core = {k: v for k, v in recipe.items() if k not in VOLATILE}
    if isinstance(core.get("input"), dict):
        core["input"] = {k: v for k, v in core["input"].items() if k != "file"}
    text = json.dumps(core, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_task(store: Store, task: Task, *, name: str | None = None) -> tuple[str, str]:
    """Publish ``task`` under ``name`` (default ``task.name``) and index it.

    Written to ``staging/_tasks/<name>/<version>`` first, then moved to
    ``tasks/<name>/<version>`` with ``Storage.publish`` (readers never see a
    partial task). A version already published is left as it is.

    Returns
    -------
    ``(name, version)``; the catalog's ``tasks`` table holds its row.
    """
    name = name or task.name
    if not name:
        raise InvalidInputError("a stored task needs a name (pass name=... or --name)")
    try:
        check_name(name, "task name")
    except ValueError as e:
        raise InvalidInputError(str(e)) from None
    version = task_version(task.recipe)
    storage = store.storage
    final = task_key(name, version)
    if not storage.exists(f"{final}/{GROUP_META}"):
        task.name = name
        staged = task_staging_key(name, version)
        storage.delete_prefix(staged)
        try:
            g = task.write_zarr(storage.zarr_store(staged, read_only=False))
            g.attrs.update({"version": version, "created_at": datetime.now(UTC).isoformat()})
        except BaseException:
            storage.delete_prefix(staged)
            raise
        storage.publish(staged, final)
    store.catalog.tasks.add(TaskEntry.from_group(storage, final))
    return name, version


def load_task(store: Store, name: str, version: str | None = None) -> Task:
    """The stored task ``name`` at ``version`` (default: the latest saved)."""
    row = store.catalog.tasks.find(name, version)
    return Task.read_zarr(store.storage.zarr_store(row["path"], read_only=True))


def list_tasks(store: Store, name: str | None = None) -> pd.DataFrame:
    """Stored tasks, newest first: ``name, version, kind, n_perts, n_genes, contexts, created_at, latest, path``."""
    return store.catalog.tasks.ls(name)


class Tasks:
    """The tasks of one store (``Store.tasks``): ``build``, ``import_file``, ``save``, ``load``, ``ls``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def build(
        self,
        path: str | Path,
        *,
        name: str,
        kind: str = "lfc",
        preset: str | None = None,
        entity: str | None = None,
        variant: str | None = None,
        min_cells: int | None = None,
        build_options: dict[str, Any] | None = None,
        **read_options: Any,
    ) -> tuple[Task, str]:
        """Build a task from single-cell data (:func:`read_perturbation_data` + :func:`build_task`), its
        perturbations resolved through this store's registry, and save it; returns ``(task, version)``.

        With ``preset`` (``essential``, ``norman``, ``tahoe``, ``sciplex``; see :data:`PRESETS`) the
        reference's settings apply; ``read_options`` given (not None) override the preset's fields.
        ``build_options`` go to :func:`build_task` (``trials``, ``seed``, ``n_folds``, ...).
        """
        build_options = dict(build_options or {})
        settings = None
        if preset is not None:
            fields = {f.name for f in dataclasses.fields(Preset)}
            chosen = get_preset(preset).with_overrides(
                **{k: v for k, v in read_options.items() if k in fields},
                entity=entity,
                min_cells=min_cells,
                **({f"{kind}_variant": variant} if variant else {}),
            )
            settings = chosen.settings(kind)
            build_options.setdefault("inner", chosen.error_inner)
            read_options = {**chosen.read_options(kind), **{k: v for k, v in read_options.items() if k not in fields}}
            entity, variant, min_cells = chosen.entity, settings["variant"], chosen.min_cells
        read_options = {k: v for k, v in read_options.items() if v is not None}
        entity = entity or "gene"
        if entity not in ("gene", "molecule"):
            raise InvalidInputError(f"entity must be 'gene' or 'molecule', not {entity!r}")
        dose_as_context = read_options.pop("dose_as_context", False)
        resolve = lambda ids: self.store.resolve(ids, kind=entity)  # noqa: E731
        options = {k: v for k, v in {"variant": variant, "min_cells": min_cells}.items() if v is not None}
        if not dose_as_context:
            data = read_perturbation_data(path, resolve=resolve, **read_options)
            task = build_task(data, kind=kind, name=name, preset=settings, **options, **build_options)
        else:
            task = build_per_dose(
                path, read_options, resolve=resolve, kind=kind, name=name, preset=settings, **options, **build_options
            )
        return task, save_task(self.store, task)[1]

    def import_deg_table(self, path: str | Path, *, name: str, entity: str = "gene", **kwargs: Any) -> tuple[Task, str]:
        """A DEG task from a long table of significant genes (:func:`deg_table_task`), its perturbations
        resolved through this store's registry as ``entity`` ids, saved; returns ``(task, version)``."""
        if entity not in ("gene", "molecule"):
            raise InvalidInputError(f"entity must be 'gene' or 'molecule', not {entity!r}")
        task = deg_table_task(
            path, name=name, entity=entity, resolve=lambda ids: self.store.resolve(ids, kind=entity), **kwargs
        )
        return task, save_task(self.store, task)[1]

    def import_file(self, path: str | Path, *, name: str, entity: str = "gene", **kwargs: Any) -> tuple[Task, str]:
        """Import a precomputed task file (:func:`import_task`), its perturbations resolved through this
        store's registry as ``entity`` ids, and save it; returns ``(task, version)``."""
        if entity not in ("gene", "molecule"):
            raise InvalidInputError(f"entity must be 'gene' or 'molecule', not {entity!r}")
        task = import_task(
            path, name=name, entity=entity, resolve=lambda ids: self.store.resolve(ids, kind=entity), **kwargs
        )
        return task, save_task(self.store, task)[1]

    def save(self, task: Task, *, name: str | None = None) -> tuple[str, str]:
        return save_task(self.store, task, name=name)

    def load(self, name: str, version: str | None = None) -> Task:
        return load_task(self.store, name, version)

    def ls(self, name: str | None = None) -> pd.DataFrame:
        return list_tasks(self.store, name)
