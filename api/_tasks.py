"""Tasks and results: the stored perturbation tasks and the benchmark results scored on them (read-only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pertstore.api._deps import READS, State
from pertstore.api._models import MAX_PAGE, ResultPage, TaskRow, records
from pertstore.store import check_names

router = APIRouter(prefix="/v1", tags=["tasks"], dependencies=READS)


@router.get("/tasks", response_model=list[TaskRow])
def tasks(state: State, name: str | None = None) -> list[dict]:
    """Stored tasks (of ``name``), newest version first."""
    check_names(task=name)
    return records(state.store.tasks.ls(name))


@router.get("/results", response_model=ResultPage)
def results(
    state: State,
    task: str | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> dict:
    """Benchmark result rows (of ``task``): one per context, fold, set, evaluator and metric."""
    from pertstore.consumers.evaluators import results as stored_results

    check_names(task=task)
    frame = stored_results(state.store, task)
    return {"total": len(frame), "offset": offset, "items": records(frame.iloc[offset : offset + limit])}
