"""The Dask workers pertstore starts keep glibc's adaptive mmap threshold (no MALLOC_TRIM_THRESHOLD_)."""

from __future__ import annotations

import os
from pathlib import Path

import dask
import distributed  # noqa: F401 - loads dask's distributed defaults
import yaml

from pertstore._dask import MALLOC_VAR, dask_client

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def _worker_env() -> str | None:
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_local_cluster_workers_do_not_get_dasks_malloc_trim_threshold(monkeypatch):
    assert dask.config.get("distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_") is not None  # dask's default
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # as a default Dask cluster started earlier leaves it
    with dask_client(n_workers=1) as client:
        envs = client.run(_worker_env)
        threads = client.run(lambda: os.environ.get("OMP_NUM_THREADS"))
    assert list(envs.values()) == [None]
    assert list(threads.values()) == ["1"]  # the rest of dask's worker environment is kept
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"  # this process's environment is restored


def test_compose_workers_read_the_same_setting_from_producers_dask_yaml():
    env = yaml.safe_load(COMPOSE.read_text())["x-env"]
    assert env["DASK_CONFIG"] == "/app/producers/dask.yaml"  # the Dockerfile copies producers/ to /app
    path = COMPOSE.parent / "producers" / "dask.yaml"
    config = dask.config.collect(paths=[str(path)], env={})
    assert config["distributed"]["nanny"]["pre-spawn-environ"] == {MALLOC_VAR: None}
