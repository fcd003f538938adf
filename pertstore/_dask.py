"""The one Dask client factory: used by jobs, task building and the benchmarks.

Its clients are never made Dask's process-wide default (``set_as_default=False``): several jobs may
run at once in one process (the API server), and a default client left behind by one of them would
make later xarray reads ask a closed client. The in-process clusters it starts run their workers
without ``MALLOC_TRIM_THRESHOLD_`` (:func:`worker_environment`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import Client

MALLOC_VAR = "MALLOC_TRIM_THRESHOLD_"
"""Dask's nanny sets it to 65536 in its workers, which turns off glibc's adaptive mmap threshold:
every tensor above 128 KiB is then mapped and unmapped on each use, and the page faults made the
graph and text producers up to 3.5x slower (node2vec steps: 12.5 s vs 3.6 s). docker-compose
workers drop it through ``producers/dask.yaml``."""
CONNECT_TIMEOUT = "30s"
"""How long a client waits for a scheduler given by address."""


@contextmanager
def dask_client(scheduler: str | None = None, *, n_workers: int | None = None) -> Iterator[Client]:
    """A client of the scheduler at ``scheduler``, or of a new in-process ``LocalCluster`` of ``n_workers``
    processes (default: up to 2) with one thread each; closed (with its cluster) on leaving."""
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)
    if scheduler:
        with Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False) as client:
            yield client
        return
    workers = n_workers or min(2, os.cpu_count() or 1)
    with (
        worker_environment(),
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


@contextmanager
def worker_environment() -> Iterator[None]:
    """Dask workers started inside this block run without ``MALLOC_TRIM_THRESHOLD_``.

    The nanny is told not to set it, and it is absent from this process's environment while the
    workers spawn (a Dask cluster started earlier in this process leaves it set here, and children
    inherit it); the environment is restored afterwards. Clients running at once in one process share
    one change: the first to enter makes it, the last to leave undoes it (the environment and Dask's
    configuration are process-wide, so nested undos in another order would leak the change).
    """
    import dask

    key = f"distributed.nanny.pre-spawn-environ.{MALLOC_VAR}"
    with _ENV_LOCK:
        if _ENV_USERS[0] == 0:
            _ENV_SAVED[:] = [os.environ.pop(MALLOC_VAR, None), dask.config.get(key, None)]
            dask.config.set({key: None})
        _ENV_USERS[0] += 1
    try:
        yield
    finally:
        with _ENV_LOCK:
            _ENV_USERS[0] -= 1
            if _ENV_USERS[0] == 0:
                old_env, old_config = _ENV_SAVED
                if old_env is not None:
                    os.environ[MALLOC_VAR] = old_env
                dask.config.set({key: old_config})


_ENV_LOCK = threading.Lock()
_ENV_USERS = [0]
_ENV_SAVED: list = [None, None]
