"""docker-compose.yml: structure, and its Dask services started as plain processes on loopback."""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

import httpx
import s3fs
import yaml
from servers import free_port, make_bucket, process, s3_server

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
TOKEN = "compose-token"


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


def _command(service: dict, replacements: dict[str, str]) -> list[str]:
    """A compose command as a local process: ``$$`` unescaped, hosts and ports moved to loopback."""
    cmd = service["command"].replace("$$", "$")
    for old, new in replacements.items():
        cmd = cmd.replace(old, new)
    return shlex.split(cmd)


def test_compose_services_run_a_job_on_s3(tmp_path):
    """Every non-image service of the compose file as a plain process on loopback, with moto's S3 server
    standing in for MinIO: a job submitted to the API runs on the Dask worker and its set is read back over HTTP."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    sched_port, api_port = free_port(), free_port()
    replacements = {
        "tcp://scheduler:8786": f"tcp://127.0.0.1:{sched_port}",
        "--port 8786": f"--port {sched_port}",
        "--host 0.0.0.0": "--host 127.0.0.1",
        ":8787": ":0",
        "--port 8000": f"--port {api_port}",
        "--memory-limit 8GiB": "--memory-limit 2GiB",
    }
    with s3_server() as s3env:
        make_bucket(s3env, "pertstore")  # the createbucket service
        env = {k: str(v) for k, v in services["api"]["environment"].items()}
        env.update(
            s3env,
            PERTSTORE_CATALOG=str(tmp_path / "catalog.duckdb"),
            PERTSTORE_DATA_DIR=str(tmp_path),
            PERTSTORE_TOKEN=TOKEN,
            PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        )
        assert env["PERTSTORE_STORE"].startswith("s3://pertstore/")
        url = f"http://127.0.0.1:{api_port}"
        with (
            process(_command(services["scheduler"], replacements), env=env),
            process(_command(services["worker"], replacements), env=env),
            process(_command(services["api"], replacements), env=env, ready_url=f"{url}/v1/ready"),
        ):
            recipes = "recipes:\n  - {producer: checksum, source: ck, params: {limit: 300, dim: 4}}\n"
            auth = {"Authorization": f"Bearer {TOKEN}"}
            r = httpx.post(f"{url}/v1/jobs", json={"recipes": recipes}, headers=auth)
            assert r.status_code == 202, r.text
            deadline = time.monotonic() + 180
            while (job := httpx.get(url + r.headers["Location"]).json())["state"] not in ("done", "failed"):
                assert time.monotonic() < deadline, job
                time.sleep(0.5)
            assert job["state"] == "done", job
            card = httpx.get(f"{url}/v1/sets/ck").json()
            assert card["n_rows"] == 300
            assert httpx.post(f"{url}/v1/recipes", json={}).status_code == 405  # a wrong method is a 4xx
            got = httpx.post(f"{url}/v1/sets/ck/embeddings", json={"ids": ["TP53", "NOT_A_GENE"]}).json()
            assert got["unresolved"] == ["NOT_A_GENE"] and got["versions"] == {"ck": card["version"]}
        keys = s3fs.S3FileSystem(
            client_kwargs={"endpoint_url": s3env["AWS_ENDPOINT_URL"]}, key="testing", secret="testing"
        ).find("pertstore/store/sets/ck")
        assert any(k.endswith("zarr.json") for k in keys)
