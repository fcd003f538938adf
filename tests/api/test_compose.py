"""docker-compose.yml: structure, and its Dask services started as plain processes on loopback."""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from pertstore import Store

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def test_compose_declares_the_deployment():
    doc = yaml.safe_load(COMPOSE.read_text())
    services = doc["services"]
    assert {"minio", "createbucket", "scheduler", "worker", "api"} <= set(services)
    assert services["scheduler"]["build"] == "."
    for name in ("scheduler", "worker", "api"):
        assert services[name]["image"] == "pertstore:latest"
    for name in ("minio", "scheduler", "api"):
        assert "healthcheck" in services[name]
    assert services["api"]["environment"]["PERTSTORE_STORE"].startswith("s3://")
    assert "--scheduler tcp://scheduler:8786" in services["api"]["command"]
    assert (COMPOSE.parent / "Dockerfile").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_compose_dask_services_run_a_job(store):
    """The scheduler and worker commands of the compose file, on loopback, run a job submitted to them."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    port = _free_port()
    sched_cmd = shlex.split(services["scheduler"]["command"].replace("8786", str(port)).replace(":8787", ":0"))
    worker_cmd = shlex.split(services["worker"]["command"].replace("scheduler:8786", f"127.0.0.1:{port}"))
    sched_cmd = [sys.executable, "-m", "distributed.cli.dask_scheduler", *sched_cmd[2:]]
    sched_cmd[sched_cmd.index("--host") + 1] = "127.0.0.1"
    worker_cmd = [sys.executable, "-m", "distributed.cli.dask_worker", *worker_cmd[2:]]
    procs = [subprocess.Popen(sched_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        time.sleep(2)
        procs.append(subprocess.Popen(worker_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        recipes = "recipes:\n  - {producer: checksum, source: ck, params: {limit: 300, dim: 4}}\n"
        state = store.jobs.submit(recipes, scheduler=f"tcp://127.0.0.1:{port}")
        assert state.state == "done" and "ck" in set(store.ls().source)
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(20)
