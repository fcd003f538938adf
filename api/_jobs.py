"""Batch jobs: submit a recipes file, watch it, read its failures, cancel or resume it.

Readers without the token see no host, pid or scheduler address, and errors reduced to their kinds
(a raw error can quote input files and the store's paths).
"""

from __future__ import annotations

import logging
import re
import threading

from fastapi import APIRouter, Response
from pertstore.api._deps import READS, WRITES, Owner, State
from pertstore.api._models import FailureRow, JobAccepted, JobRequest, JobRow, JobStatus, Name, plain, records
from pertstore.catalog import JobState
from pertstore.store import check_name

from pertstore._store import Store
from pertstore.errors import ConflictError

log = logging.getLogger("pertstore.api")
router = APIRouter(prefix="/v1", tags=["jobs"], dependencies=READS)
writes = APIRouter(prefix="/v1", tags=["jobs"], dependencies=WRITES)
PRIVATE = ("host", "pid", "scheduler")


@writes.post("/jobs", status_code=202)
def submit(state: State, body: JobRequest, response: Response) -> JobAccepted:
    """Plan the recipes, record the job and run it in the background (``Location``: its status)."""
    planned = state.store.jobs.plan(body.recipes)  # outside the write lock: planning reads and hashes inputs
    with state.lock:
        job_id = state.store.jobs.create(
            planned, max_failed_fraction=body.max_failed_fraction, scheduler=state.scheduler
        )
    _start(state.store, job_id, state.scheduler)
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return JobAccepted(job_id=job_id, state=JobState.QUEUED)


@router.get("/jobs", response_model=list[JobRow], response_model_exclude_unset=True)
def jobs(state: State, owner: Owner) -> list[dict]:
    return [_for_reader(r, owner) for r in records(state.store.jobs.ls())]


@router.get("/jobs/{job_id}", response_model=JobStatus, response_model_exclude_unset=True)
def job(state: State, job_id: Name, owner: Owner) -> dict:
    st = state.store.jobs.status(check_name(job_id, "job id"))
    row = {
        **{k: plain(v) for k, v in st.items() if k != "recipes"},
        "recipes": [_for_reader(r, owner) for r in records(st["recipes"])],
    }
    return _for_reader(row, owner)


@router.get("/jobs/{job_id}/failures", response_model=list[FailureRow])
def failures(state: State, job_id: Name) -> list[dict]:
    return records(state.store.jobs.failures(check_name(job_id, "job id")))


@writes.post("/jobs/{job_id}/cancel")
def cancel(state: State, job_id: Name) -> JobAccepted:
    return JobAccepted(job_id=job_id, state=state.store.jobs.cancel(check_name(job_id, "job id")))


@writes.post("/jobs/{job_id}/resume", status_code=202)
def resume(state: State, job_id: Name, response: Response) -> JobAccepted:
    current = state.store.jobs.status(check_name(job_id, "job id"))["state"]
    if current in (JobState.DONE, JobState.CANCELLED, JobState.CANCELLING):
        raise ConflictError(f"job {job_id} is {current}; nothing to resume")
    _start(state.store, job_id, state.scheduler, resume=True)
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return JobAccepted(job_id=job_id, state="resuming")


def _for_reader(row: dict, owner: bool) -> dict:
    """A job row as a reader may see it (token holders see all of it)."""
    if owner:
        return row
    return {k: _public_error(v) if k == "error" else v for k, v in row.items() if k not in PRIVATE}


def _public_error(text: str | None) -> str | None:
    """The kinds of error in a job's error text (``ValueError, ...``), without their messages."""
    if not text:
        return text
    kinds = sorted(set(re.findall(r"\b([A-Z][A-Za-z]*(?:Error|Exception|Exit|Interrupt))\b", text)))
    return f"{', '.join(kinds) or 'failed'} (details for token holders: GET /v1/jobs/{{id}} with the token)"


def _start(store: Store, job_id: str, scheduler: str | None, resume: bool = False) -> None:
    threading.Thread(target=_run_job, args=(store, job_id, scheduler, resume), daemon=True).start()


def _run_job(store: Store, job_id: str, scheduler: str | None, resume: bool) -> None:
    try:
        if resume:
            store.jobs.resume(job_id, scheduler=scheduler)
        else:
            store.jobs.run(job_id, scheduler=scheduler)
    except Exception:  # the job's state and error are in the catalog
        log.exception("job %s failed", job_id)
