"""Batch jobs: run many recipes as Dask tasks, with progress, a failure ledger, cancel and resume.

The submitting process is the job's driver: it plans the recipes, records the job in the catalog,
sends work items to Dask (an in-process ``LocalCluster`` by default, or a scheduler address), and
publishes the staged sets once their work is done. Workers write only to the store's staging area.
The driver writes the catalog in short bursts and lets go of it in between, so ``jobs ls`` and
``jobs status`` work from other processes while a job runs.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pertstore.catalog import JobState, RecipeRow, RecipeState
from pertstore.producers import _work
from pertstore.producers._spec import PlannedRecipe, RecipeSpec, load_recipes, plan
from pertstore.store import Storage, claim_key, job_key

from pertstore._dask import dask_client
from pertstore.errors import ConflictError, InvalidInputError, NotFoundError, PertstoreError

if TYPE_CHECKING:
    from pertstore._store import Store

FLUSH_EVERY_S = 0.5
TERMINAL = (JobState.DONE, JobState.FAILED, JobState.CANCELLED)
_RUNNING: set[str] = set()
"""Jobs driven by this process right now."""
WAIT_S = 0.2
"""How often a driver that waits (on Dask work or another job's recipe) looks for a cancel request."""


@dataclass
class _Claim:
    """The job that computes a recipe; other jobs with the same recipe wait on it.

    A claim of this process is an event; a claim of another process (``marker`` set: its
    ``claims/<source>/<version>.json`` in the store) is polled until the marker goes or its
    driver is gone.
    """

    job_id: str
    released: threading.Event = field(default_factory=threading.Event)
    storage: Storage | None = None
    marker: str = ""

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True once the claiming job let go of the recipe."""
        if self.storage is None:
            return self.released.wait(timeout)
        time.sleep(timeout)
        return not _held_by_live_driver(self.storage, self.marker)


_CLAIMS: dict[tuple[str, str], _Claim] = {}
_CLAIMS_LOCK = threading.Lock()


def _claim(storage: Storage, source: str, version: str, job_id: str) -> _Claim:
    """Claim a recipe for ``job_id``, or return the claim of the job (of this process or another)
    that computes it already. A marker left by a driver that is gone (or by this job, resumed) is
    taken over."""
    with _CLAIMS_LOCK:
        claim = _CLAIMS.get((source, version))
        if claim is not None:
            return claim
        marker = claim_key(source, version)
        mine = json.dumps({"job_id": job_id, "host": socket.gethostname(), "pid": os.getpid()}).encode()
        while not storage.create_exclusive(marker, mine):
            try:
                owner = _read_marker(storage, marker)
            except FileNotFoundError:  # released meanwhile: try again
                continue
            if owner is None or (owner["job_id"] != job_id and _alive(owner["host"], owner["pid"], owner["job_id"])):
                return _Claim(owner["job_id"] if owner else "(unknown)", storage=storage, marker=marker)
            storage.delete_prefix(marker)
        claim = _CLAIMS[(source, version)] = _Claim(job_id)
        return claim


def _read_marker(storage: Storage, marker: str) -> dict | None:
    """The claim marker's ``job_id``, ``host`` and ``pid``; None while it is being written."""
    try:
        owner = json.loads(storage.read_bytes(marker))
        return {"job_id": str(owner["job_id"]), "host": str(owner["host"]), "pid": int(owner["pid"])}
    except (ValueError, KeyError, TypeError):
        return None


def _held_by_live_driver(storage: Storage, marker: str) -> bool:
    try:
        owner = _read_marker(storage, marker)
    except FileNotFoundError:
        return False
    return owner is None or _alive(owner["host"], owner["pid"], owner["job_id"])


def _release(storage: Storage, source: str, version: str, job_id: str) -> None:
    with _CLAIMS_LOCK:
        claim = _CLAIMS.get((source, version))
        if claim is not None and claim.job_id == job_id:
            del _CLAIMS[(source, version)]
            storage.delete_prefix(claim_key(source, version))
            claim.released.set()


def _release_all(storage: Storage, job_id: str) -> None:
    with _CLAIMS_LOCK:
        mine = [key for key, claim in _CLAIMS.items() if claim.job_id == job_id]
    for key in mine:
        _release(storage, *key, job_id)


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


class _Driver:
    """Runs one job: sends work to Dask, tracks progress, publishes, honours cancellation."""

    def __init__(
        self,
        jobs: Jobs,
        client,
        job_id: str,
        planned: list[PlannedRecipe],
        state: JobProgress,
        max_failed_fraction: float,
        progress: Callable[[JobProgress], None] | None,
    ) -> None:
        self.jobs, self.client, self.job_id = jobs, client, job_id
        self.planned, self.state, self.frac, self.progress = planned, state, max_failed_fraction, progress
        self.storage = jobs.store.storage
        self.ledger: list[tuple[str, str, str, str, str]] = []
        self.staged: dict[int, dict] = {}
        self.t0: dict[int, float] = {}
        self.claimed: set[int] = set()
        """Recipes this job computes; the others it waits for (``waiting``) are computed by other jobs."""
        self.waiting: dict[int, _Claim] = {}

    def run(self) -> None:
        kind: dict[str, tuple[int, str]] = {}
        pending = set()
        for pos, p in enumerate(self.planned):
            for fut, what in self._schedule(pos, p):
                kind[fut.key] = (pos, what)
                pending.add(fut)
            if self._update() == JobState.CANCELLING:
                return self._cancel(pending)
        self._update(force=True)
        if pending:
            from distributed import wait

            while pending:
                try:
                    with self.client.as_current():  # this job's client, not a process-wide default
                        done, pending = wait(pending, timeout=WAIT_S, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    done = set()
                for fut in done:
                    pos, what = kind.pop(fut.key)
                    self._finish(fut, pos, what)
                if self._update() == JobState.CANCELLING:  # Jobs.run aborts once the workers are gone
                    return self._cancel(pending)
        self._publish()
        if self._await_others() == JobState.CANCELLING:
            return self._cancel(set())
        self._finalize()

    def _cancel(self, pending) -> None:
        if pending:
            self.client.cancel(list(pending))
        self.state.state = JobState.CANCELLED

    def _schedule(self, pos: int, p: PlannedRecipe):
        r = self.state.recipes[pos]
        self.t0[pos] = time.perf_counter()
        if self.jobs.store.has(p.recipe):
            card = self.jobs.store.published_card(p.recipe, p.spec.tags)
            r.state, r.items_total = RecipeState.EXISTS, card.n_rows + len(card.failed)
            r.items_done = r.items_reused = r.items_total
            r.items_failed = len(card.failed)
            return []
        claim = _claim(self.storage, p.recipe.source, p.recipe.version, self.job_id)
        if claim.job_id != self.job_id:  # another job computes it: wait for that one
            r.state = RecipeState.WAITING
            self.waiting[pos] = claim
            return []
        self.claimed.add(pos)
        r.state = RecipeState.RUNNING
        key = f"{self.job_id}-{pos}"
        if not p.producer_cls.chunked:
            r.items_total = 1
            return [
                (
                    self.client.submit(
                        _work.run_whole, self.storage, p, _frac(p, self.frac), key=f"{key}-whole", retries=2, pure=False
                    ),
                    "whole",
                )
            ]
        try:
            ids = _work.list_entities(self.storage, p)
        except Exception as e:  # a producer that cannot even list its entities fails its recipe
            self._fail(pos, e)
            return []
        parts = _work.split(ids, p.producer_cls.chunk_size)
        done = _work.done_parts(self.storage, p)
        r.items_total = len(ids)
        r.items_done = r.items_reused = sum(len(parts[i]) for i in done if i < len(parts))
        part_futures = [
            self.client.submit(
                _work.run_part, self.storage, p, i, np.array(part), key=f"{key}-part-{i}", retries=2, pure=False
            )
            for i, part in enumerate(parts)
            if i not in done
        ]
        assemble = self.client.submit(
            _assemble_after,
            self.storage,
            p,
            len(parts),
            _frac(p, self.frac),
            part_futures,
            key=f"{key}-assemble",
            retries=2,
            pure=False,
        )
        return [(f, "part") for f in part_futures] + [(assemble, "assemble")]

    def _finish(self, fut, pos: int, what: str) -> None:
        r = self.state.recipes[pos]
        if r.state == RecipeState.FAILED:
            return
        try:
            result = fut.result()
        except Exception as e:
            self._fail(pos, e)
            return
        if what == "part":
            r.items_done += result.n_items
            r.items_failed += len(result.failed)
        else:
            if what == "whole":
                r.items_total = r.items_done = result["n_rows"] + len(result["failed"])
            r.items_failed = len(result["failed"])
            r.failed = result["failed"]
            r.state, r.seconds = RecipeState.STAGED, time.perf_counter() - self.t0[pos]
            self.staged[pos] = result

    def _fail(self, pos: int, error: BaseException) -> None:
        r = self.state.recipes[pos]
        r.state, r.error = RecipeState.FAILED, f"{type(error).__name__}: {error}"
        r.seconds = time.perf_counter() - self.t0[pos]
        if pos in self.claimed:
            _work.abort(self.storage, self.planned[pos])
            _release(self.storage, self.planned[pos].recipe.source, self.planned[pos].recipe.version, self.job_id)

    def _publish(self) -> None:
        store = self.jobs.store
        for pos, result in sorted(self.staged.items()):
            p, r = self.planned[pos], self.state.recipes[pos]
            try:
                card, newly = _work.publish_staged(self.storage, p)
                with self.jobs._catalog():
                    if newly:
                        store.index_published(card, ["latest", *p.spec.tags])
                    else:
                        store.published_card(p.recipe, p.spec.tags)
                r.state = RecipeState.DONE
            except Exception as e:
                self._fail(pos, e)
                continue
            _release(self.storage, p.recipe.source, p.recipe.version, self.job_id)
            self.ledger.extend(
                (self.job_id, p.recipe.source, p.recipe.version, e, why) for e, why in sorted(result["failed"].items())
            )

    def _await_others(self) -> str:
        """Wait for the recipes other jobs compute; their sets then count as existing ones."""
        store = self.jobs.store
        for pos, claim in sorted(self.waiting.items()):
            while not claim.wait(WAIT_S):
                if self._update() == JobState.CANCELLING:
                    return JobState.CANCELLING
            p, r = self.planned[pos], self.state.recipes[pos]
            if store.has(p.recipe):
                with self.jobs._catalog():
                    card = store.published_card(p.recipe, p.spec.tags)
                r.state, r.items_total = RecipeState.EXISTS, card.n_rows + len(card.failed)
                r.items_done = r.items_reused = r.items_total
                r.items_failed = len(card.failed)
            else:
                self._fail(
                    pos,
                    PertstoreError(
                        f"job {claim.job_id}, which computed the same recipe, did not "
                        f"publish it (see `pertstore jobs status {claim.job_id}`)"
                    ),
                )
            r.seconds = time.perf_counter() - self.t0[pos]
        return self.state.state

    def _finalize(self) -> None:
        errors = [f"{r.source}: {r.error}" for r in self.state.recipes if r.state == RecipeState.FAILED]
        self.state.state = JobState.FAILED if errors else JobState.DONE
        self._update(force=True)
        self.jobs._set_state(self.job_id, self.state.state, "; ".join(errors) or None)

    def _update(self, force: bool = False) -> str:
        """Write progress to the catalog (at most every ``FLUSH_EVERY_S``) and read back the job state."""
        now = time.monotonic()
        if not force and now - getattr(self, "_last", 0.0) < FLUSH_EVERY_S:
            self._notify()
            return self.state.state
        self._last = now
        self.jobs._flush(self.state, self.ledger)
        self.ledger = []
        self._notify()
        return self.jobs._state(self.job_id)

    def _notify(self) -> None:
        if self.progress is not None:
            self.progress(self.state)


def _frac(planned: PlannedRecipe, default: float) -> float:
    return default if planned.spec.max_failed is None else planned.spec.max_failed


def _assemble_after(storage, planned, n_parts, frac, _parts):
    """Assemble once every part future (``_parts``) has finished."""
    return _work.assemble(storage, planned, n_parts, frac)


def _alive(host: str, pid: int, job_id: str) -> bool:
    """Whether a job's driver still runs (only knowable on its own host; assumed elsewhere)."""
    if host != socket.gethostname():
        return True
    if pid == os.getpid():
        return job_id in _RUNNING
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
