"""The driver of one running job: sends its work items to Dask, tracks progress, publishes the staged sets and
honours cancellation (see :mod:`~pertstore.producers._jobs`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from pertstore.catalog import JobState, RecipeState
from pertstore.producers import _work
from pertstore.producers._claims import _Claim, _claim, _release
from pertstore.producers._spec import PlannedRecipe

from pertstore.errors import PertstoreError

if TYPE_CHECKING:
    from pertstore.producers._jobs import JobProgress, Jobs

FLUSH_EVERY_S = 0.5
WAIT_S = 0.2
"""How often a driver that waits (on Dask work or another job's recipe) looks for a cancel request."""


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
