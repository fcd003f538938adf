"""The states a job and each of its recipes go through, as the catalog stores them (``jobs.state``,
``job_recipes.state``). The values are the stored strings: never rename one."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"
    """Recorded, not started."""
    RUNNING = "running"
    CANCELLING = "cancelling"
    """Asked to stop; its driver aborts it."""
    CANCELLED = "cancelled"
    DONE = "done"
    FAILED = "failed"
    """Finished with at least one failed recipe."""
    INTERRUPTED = "interrupted"
    """Its driver stopped (an error or a signal); resumable."""


class RecipeState(StrEnum):
    PENDING = "pending"
    EXISTS = "exists"
    """The set was published before (by another job): reused."""
    WAITING = "waiting"
    """Another job of this process computes the same recipe."""
    RUNNING = "running"
    STAGED = "staged"
    """Computed into the staging area, not yet published."""
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
