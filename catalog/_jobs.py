"""The catalog's job tables (``jobs``, ``job_recipes``, ``job_failures``) behind one typed interface.

The job driver (``producers/_jobs.py``) decides what happens; this module is where it is recorded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pandas as pd
from pertstore.catalog import _job_records
from pertstore.catalog._schema import first
from pertstore.catalog._states import JobState, RecipeState

from pertstore.errors import NotFoundError

if TYPE_CHECKING:
    from pertstore.catalog._catalog import Catalog


@dataclass(frozen=True)
class RecipeRow:
    """One recipe of a job as the driver reports it."""

    state: str
    items_total: int
    items_done: int
    items_failed: int
    items_reused: int
    seconds: float
    error: str | None


def _now() -> datetime:
    return datetime.now(UTC)


def _missing(job_id: str) -> NotFoundError:
    return NotFoundError(f"no job {job_id!r}; `pertstore jobs ls` lists them")


class JobIndex:
    """Record and read producer jobs (``catalog.jobs``)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def add(
        self,
        job_id: str,
        *,
        recipes: Sequence[tuple[str, str, str, str]],
        plan: list[dict],
        max_failed_fraction: float,
        scheduler: str,
        host: str,
        pid: int,
    ) -> None:
        """Record a queued job; ``recipes``: ``(source, version, context, producer)`` in plan order."""
        now = _now()
        with self.catalog.transaction() as con:
            con.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, NULL, NULL, ?, ?, 0, 0, 0, ?, ?, ?, ?, NULL, ?)",
                [
                    job_id,
                    JobState.QUEUED,
                    now,
                    now,
                    len(recipes),
                    max_failed_fraction,
                    scheduler,
                    host,
                    pid,
                    json.dumps(plan),
                ],
            ).fetchall()
            con.executemany(
                "INSERT INTO job_recipes VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0, 0, NULL)",
                [[job_id, pos, *r[:4], RecipeState.PENDING] for pos, r in enumerate(recipes)],
            ).fetchall()

    def ls(self) -> pd.DataFrame:
        """Every job, newest first."""
        return self.catalog.query(
            "SELECT job_id, state, submitted_at, finished_at, n_recipes, items_total, "
            "items_done, items_failed, scheduler, error FROM jobs ORDER BY submitted_at DESC"
        )

    def row(self, job_id: str) -> dict:
        """A job's row (without its plan); :class:`NotFoundError` when unknown."""
        job = self.catalog.query("SELECT * EXCLUDE (plan) FROM jobs WHERE job_id = ?", [job_id])
        if job.empty:
            raise _missing(job_id)
        return job.iloc[0].to_dict()

    def recipes(self, job_id: str) -> pd.DataFrame:
        return self.catalog.query(
            "SELECT * EXCLUDE (job_id) FROM job_recipes WHERE job_id = ? ORDER BY position", [job_id]
        )

    def failures(self, job_id: str) -> pd.DataFrame:
        return self.catalog.query(
            "SELECT source, version, entity_id, reason FROM job_failures WHERE job_id = ? ORDER BY source, entity_id",
            [job_id],
        )

    def plan(self, job_id: str) -> tuple[list[dict], float]:
        """The job's planned recipes (JSON documents) and its ``max_failed_fraction``."""
        row = first(self.catalog.con.execute("SELECT plan, max_failed_fraction FROM jobs WHERE job_id = ?", [job_id]))
        if row is None:
            raise _missing(job_id)
        return json.loads(row[0]), float(row[1])

    def state(self, job_id: str) -> str:
        row = first(self.catalog.con.execute("SELECT state FROM jobs WHERE job_id = ?", [job_id]))
        if row is None:
            raise _missing(job_id)
        return str(row[0])

    def start(self, job_id: str, *, host: str, pid: int) -> bool:
        """Mark the job running in process ``pid`` on ``host``; False when it was cancelled meanwhile."""
        with self.catalog.transaction() as con:
            return bool(
                con.execute(
                    "UPDATE jobs SET state = ?, started_at = coalesce(started_at, ?), updated_at = ?, pid = ?, "
                    "host = ?, error = NULL WHERE job_id = ? AND state NOT IN (?, ?) RETURNING job_id",
                    [JobState.RUNNING, _now(), _now(), pid, host, job_id, JobState.CANCELLED, JobState.CANCELLING],
                ).fetchall()
            )

    def set_state(self, job_id: str, state: str, *, finished: bool, error: str | None = None) -> None:
        with self.catalog.transaction() as con:
            con.execute(
                "UPDATE jobs SET state = ?, updated_at = ?, finished_at = coalesce(?, finished_at), "
                "error = coalesce(?, error) WHERE job_id = ?",
                [state, _now(), _now() if finished else None, error, job_id],
            ).fetchall()

    def cancel_open_recipes(self, job_id: str) -> None:
        """Mark every recipe not done or failed as cancelled."""
        with self.catalog.transaction() as con:
            con.execute(
                "UPDATE job_recipes SET state = ? WHERE job_id = ? AND state NOT IN (?, ?)",
                [RecipeState.CANCELLED, job_id, RecipeState.DONE, RecipeState.FAILED],
            ).fetchall()

    def progress(
        self,
        job_id: str,
        recipes: Sequence[RecipeRow],
        totals: tuple[int, int, int],
        failures: Sequence[tuple[str, str, str, str, str]],
    ) -> None:
        """Record the driver's progress: each recipe's row, new failure-ledger rows and the job's totals
        ``(items_total, items_done, items_failed)``."""
        with self.catalog.transaction() as con:
            con.executemany(
                "UPDATE job_recipes SET state = ?, items_total = ?, items_done = ?, items_failed = ?, "
                "items_reused = ?, seconds = ?, error = ? WHERE job_id = ? AND position = ?",
                [
                    [
                        r.state,
                        r.items_total,
                        r.items_done,
                        r.items_failed,
                        r.items_reused,
                        r.seconds,
                        r.error,
                        job_id,
                        pos,
                    ]
                    for pos, r in enumerate(recipes)
                ],
            ).fetchall()
            if failures:
                con.executemany("INSERT INTO job_failures VALUES (?, ?, ?, ?, ?)", list(failures)).fetchall()
            con.execute(
                "UPDATE jobs SET items_total = ?, items_done = ?, items_failed = ?, updated_at = ? WHERE job_id = ?",
                [*totals, _now(), job_id],
            ).fetchall()

    def export(self, job_id: str) -> bytes:
        """The job's rows (job, recipes, failures) as the record kept in the store."""
        return _job_records.export(self.catalog.con, job_id)
