"""Which job computes a recipe: claims shared by this process's jobs and, through marker files in the store,
by other processes' (a claim whose driver is gone is taken over)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field

from pertstore.store import Storage, claim_key

_RUNNING: set[str] = set()
"""Jobs driven by this process right now."""


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
