"""Batch jobs: run many recipes as Dask tasks, with progress, a failure ledger, cancel and resume.

The submitting process is the job's driver: it plans the recipes, records the job in the catalog,
sends work items to Dask (an in-process ``LocalCluster`` by default, or a scheduler address), and
publishes the staged sets once their work is done. Workers write only to the store's staging area.
The driver writes the catalog in short bursts and lets go of it in between, so ``jobs ls`` and
``jobs status`` work from other processes while a job runs.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from pertstore.catalog import JobState, RecipeRow, RecipeState
from pertstore.producers import _work
from pertstore.producers._claims import _RUNNING, _alive, _release_all
from pertstore.producers._driver import _Driver, _frac
from pertstore.producers._spec import PlannedRecipe, RecipeSpec, load_recipes, plan
from pertstore.store import job_key

from pertstore._dask import dask_client
from pertstore.errors import ConflictError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from pertstore._store import Store

TERMINAL = (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


@dataclass
class RecipeProgress:
    source: str
    version: str
    context: str
    producer: str
    state: str = RecipeState.PENDING
    items_total: int = 0
    items_done: int = 0
    items_failed: int = 0
    items_reused: int = 0
    """Items finished by an earlier run (a resumed job) or an existing set (resubmission)."""
    seconds: float = 0.0
    error: str | None = None
    failed: dict[str, str] = field(default_factory=dict)


@dataclass
class JobProgress:
    """A job's state as the driver sees it; passed to progress callbacks."""

    job_id: str
    state: str
    recipes: list[RecipeProgress]

    @property
    def items_total(self) -> int:
        return sum(r.items_total for r in self.recipes)

    @property
    def items_done(self) -> int:
        return sum(r.items_done for r in self.recipes)

    @property
    def items_failed(self) -> int:
        return sum(r.items_failed for r in self.recipes)


class Jobs:
    """Submit, watch, cancel and resume producer jobs of a store (``store.jobs``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ---- creating --------------------------------------------------------------------------------

    def plan(self, recipes: str | Path | list | dict | Sequence[RecipeSpec]) -> list[PlannedRecipe]:
        """Expand and version recipes without running anything."""
        if isinstance(recipes, (list, tuple)) and recipes and isinstance(recipes[0], RecipeSpec):
            specs = list(recipes)
        else:
            specs = load_recipes(
                recipes, data_dir=self.store.settings.data_dir, max_recipes=self.store.settings.max_plan_recipes
            )
        return plan(specs, self._find_version)

    def _find_version(self, source: str, context: str, *, version: str | None = None, tag: str | None = None) -> str:
        try:
            row = self.store.catalog.find_set(source, context=context or None, version=version, tag=tag)
        except NotFoundError:
            if context:  # a context-free set serves every context
                row = self.store.catalog.find_set(source, version=version, tag=tag)
            else:
                raise
        return str(row.version)

    def create(self, recipes, *, max_failed_fraction: float = 0.05, scheduler: str | None = None) -> str:
        """Plan ``recipes`` (or take the result of :meth:`plan`) and record a new job; returns its id
        (run it with :meth:`run`)."""
        if not 0.0 <= max_failed_fraction <= 1.0:
            raise InvalidInputError(f"max_failed_fraction must be within [0, 1], got {max_failed_fraction}")
        is_plan = isinstance(recipes, (list, tuple)) and recipes and isinstance(recipes[0], PlannedRecipe)
        planned = list(recipes) if is_plan else self.plan(recipes)
        job_id = uuid.uuid4().hex[:12]
        with self._catalog() as cat:
            cat.jobs.add(
                job_id,
                recipes=[(p.recipe.source, p.recipe.version, p.recipe.context, p.recipe.producer) for p in planned],
                plan=[p.to_json() for p in planned],
                max_failed_fraction=max_failed_fraction,
                scheduler=scheduler or "local",
                host=socket.gethostname(),
                pid=os.getpid(),
            )
            self._keep_record(cat, job_id)
        return job_id

    def submit(
        self,
        recipes,
        *,
        scheduler: str | None = None,
        n_workers: int | None = None,
        max_failed_fraction: float = 0.05,
        progress: Callable[[JobProgress], None] | None = None,
    ) -> JobProgress:
        """Plan, record and run a job to the end; returns its final progress."""
        job_id = self.create(recipes, max_failed_fraction=max_failed_fraction, scheduler=scheduler)
        return self.run(job_id, scheduler=scheduler, n_workers=n_workers, progress=progress)

    # ---- watching --------------------------------------------------------------------------------

    def ls(self) -> pd.DataFrame:
        """Every job, newest first."""
        with self._catalog() as cat:
            return cat.jobs.ls()

    def status(self, job_id: str) -> dict:
        """A job's row plus one row per recipe."""
        with self._catalog() as cat:
            return {**cat.jobs.row(job_id), "recipes": cat.jobs.recipes(job_id)}

    def failures(self, job_id: str) -> pd.DataFrame:
        """The per-entity failure ledger of a job."""
        with self._catalog() as cat:
            cat.jobs.row(job_id)
            return cat.jobs.failures(job_id)

    def cancel(self, job_id: str) -> str:
        """Ask a running job to stop (its driver aborts it), or abort a job whose driver is gone."""
        st = self.status(job_id)
        if st["state"] in TERMINAL:
            raise ConflictError(f"job {job_id} is already {st['state']}")
        if st["state"] == JobState.RUNNING and _alive(st["host"], int(st["pid"]), job_id):
            self._set_state(job_id, JobState.CANCELLING)
            return JobState.CANCELLING
        self._abort(job_id, self._load_plan(job_id)[0])
        return JobState.CANCELLED

    # ---- running ---------------------------------------------------------------------------------

    def resume(
        self,
        job_id: str,
        *,
        scheduler: str | None = None,
        n_workers: int | None = None,
        progress: Callable[[JobProgress], None] | None = None,
        force: bool = False,
    ) -> JobProgress:
        """Finish an interrupted job, reusing every finished work item."""
        st = self.status(job_id)
        if st["state"] in (JobState.DONE, JobState.CANCELLED, JobState.CANCELLING):
            raise ConflictError(f"job {job_id} is {st['state']}; nothing to resume")
        if st["state"] == JobState.RUNNING and _alive(st["host"], int(st["pid"]), job_id) and not force:
            raise ConflictError(f"job {job_id} is still running in process {st['pid']} on {st['host']}")
        return self.run(job_id, scheduler=scheduler, n_workers=n_workers, progress=progress)

    def run(
        self,
        job_id: str,
        *,
        scheduler: str | None = None,
        n_workers: int | None = None,
        progress: Callable[[JobProgress], None] | None = None,
    ) -> JobProgress:
        """Run (or rerun) a recorded job to the end in this process."""
        planned, frac = self._load_plan(job_id)
        with self._catalog() as cat:  # a job cancelled while queued stays cancelled
            started = cat.jobs.start(job_id, host=socket.gethostname(), pid=os.getpid())
        if not started:
            return JobProgress(job_id, self._state(job_id), [])
        recipes = [
            RecipeProgress(p.recipe.source, p.recipe.version, p.recipe.context, p.recipe.producer) for p in planned
        ]
        state = JobProgress(job_id, JobState.RUNNING, recipes)
        _RUNNING.add(job_id)
        try:
            if all(self.store.has(p.recipe) for p in planned):  # a resubmission: no cluster needed
                driver = _Driver(self, None, job_id, planned, state, frac, progress)
                driver.run()
            else:
                with dask_client(scheduler, n_workers=n_workers) as client:
                    driver = _Driver(self, client, job_id, planned, state, frac, progress)
                    driver.run()
            if state.state == JobState.CANCELLED:  # the workers are gone: drop what this job staged
                self._abort(job_id, [planned[pos] for pos in sorted(driver.claimed)])
                if progress is not None:
                    progress(state)
        except BaseException as e:
            state.state = JobState.INTERRUPTED
            self._set_state(job_id, JobState.INTERRUPTED, f"{type(e).__name__}: {e}")
            raise
        finally:
            _release_all(self.store.storage, job_id)
            _RUNNING.discard(job_id)
        return state

    # ---- internals -------------------------------------------------------------------------------

    @contextmanager
    def _catalog(self):
        """The catalog, released afterwards unless the store keeps it open for other work."""
        cat = self.store.catalog
        try:
            yield cat
        finally:
            if self.store.release_catalog:
                cat.close()

    def _load_plan(self, job_id: str) -> tuple[list[PlannedRecipe], float]:
        """The job's planned recipes and its ``max_failed_fraction``."""
        with self._catalog() as cat:
            docs, frac = cat.jobs.plan(job_id)
        return [PlannedRecipe.from_json(d) for d in docs], frac

    def _set_state(self, job_id: str, state: JobState, error: str | None = None) -> None:
        with self._catalog() as cat:
            cat.jobs.set_state(job_id, state, finished=state in TERMINAL, error=error)
            self._keep_record(cat, job_id)

    def _keep_record(self, cat, job_id: str) -> None:
        """Write the job's record into the store (``jobs/<id>.json``), so a catalog rebuild keeps it."""
        self.store.storage.write_bytes(job_key(job_id), cat.jobs.export(job_id))

    def _state(self, job_id: str) -> str:
        with self._catalog() as cat:
            return cat.jobs.state(job_id)

    def _abort(self, job_id: str, planned: list[PlannedRecipe]) -> None:
        for p in planned:
            if not self.store.has(p.recipe):
                _work.abort(self.store.storage, p)
        with self._catalog() as cat:
            cat.jobs.cancel_open_recipes(job_id)
        self._set_state(job_id, JobState.CANCELLED)

    def _flush(self, state: JobProgress, ledger: list[tuple[str, str, str, str, str]]) -> None:
        rows = [
            RecipeRow(r.state, r.items_total, r.items_done, r.items_failed, r.items_reused, r.seconds, r.error)
            for r in state.recipes
        ]
        with self._catalog() as cat:
            cat.jobs.progress(state.job_id, rows, (state.items_total, state.items_done, state.items_failed), ledger)


def produce_inline(store: Store, planned: PlannedRecipe, *, max_failed_fraction: float = 0.05):
    """Compute one planned recipe in this process, without Dask; returns the set's card."""
    if store.has(planned.recipe):
        return store.published_card(planned.recipe, planned.spec.tags)
    storage = store.storage
    max_failed_fraction = _frac(planned, max_failed_fraction)
    try:
        if planned.producer_cls.chunked:
            parts = _work.split(_work.list_entities(storage, planned), planned.producer_cls.chunk_size)
            done = _work.done_parts(storage, planned)
            for i, ids in enumerate(parts):
                if i not in done:
                    _work.run_part(storage, planned, i, ids)
            _work.assemble(storage, planned, len(parts), max_failed_fraction)
        else:
            _work.run_whole(storage, planned, max_failed_fraction)
        card, newly = _work.publish_staged(storage, planned)
    except BaseException:
        _work.abort(storage, planned)
        raise
    if newly:
        store.index_published(card, ["latest", *planned.spec.tags])
        return card
    return store.published_card(planned.recipe, planned.spec.tags)
