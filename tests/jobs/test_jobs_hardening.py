"""Issue 23, items 7 and 8: concurrent jobs with the same recipe, bounded sweeps, prompt cancel.

Driven the way users drive them: a real ``pertstore serve`` process, the CLI as a subprocess, and
concurrent ``Store.jobs.submit`` calls in one process.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from servers import api_server

from pertstore import Store

pytestmark = pytest.mark.timeout(240)

TOKEN = "hardening-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SAME = """
recipes:
  - producer: checksum
    source: ck-same
    params: {limit: 1500, dim: 4}
"""


def _server_store(store: Store) -> str:
    """The fixture store's root, closed so that the server process owns its catalog."""
    root = store.uri
    store.close()
    return root


def _wait_terminal(url: str, job_id: str, timeout: float = 150.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def _staging_files(root: str) -> list[Path]:
    return [p for p in (Path(root) / "staging").rglob("*") if p.is_file()]


def test_same_recipe_posted_twice_at_once_is_computed_once(store: Store):
    root = _server_store(store)
    with api_server(root, env={"PERTSTORE_TOKEN": TOKEN}) as url:
        barrier = threading.Barrier(2)

        def post() -> httpx.Response:
            barrier.wait()
            return httpx.post(f"{url}/v1/jobs", json={"recipes": SAME}, headers=AUTH, timeout=60)

        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda _: post(), range(2)))
        assert [r.status_code for r in answers] == [202, 202]
        jobs = [_wait_terminal(url, r.json()["job_id"]) for r in answers]
        assert [j["state"] for j in jobs] == ["done", "done"], [j["error"] for j in jobs]
        states = sorted(j["recipes"][0]["state"] for j in jobs)
        assert states == ["done", "exists"], states  # one job computed it, the other waited for it
        versions = httpx.get(f"{url}/v1/sets/ck-same/versions", timeout=10)
        assert versions.status_code == 200 and len(versions.json()) == 1
        assert all(j["recipes"][0]["items_done"] == 1500 for j in jobs)
    assert _staging_files(root) == []
    with Store.open(root) as s:
        assert s.show("ck-same").n_rows == 1500


def test_concurrent_submits_in_one_process_share_the_computation(store: Store):
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: store.jobs.submit(SAME, n_workers=1), range(3)))
    assert [r.state for r in results] == ["done"] * 3
    states = sorted(r.recipes[0].state for r in results)
    assert states == ["done", "exists", "exists"], states
    assert len(store.ls("ck-same")) == 1
    assert store.show("ck-same").n_rows == 1500
    # jobs at once leave this process's Dask settings as they found them (no default client, dask's
    # nanny environment): a leak made later xarray/dask code ask for a closed distributed client
    import dask

    assert dask.config.get("scheduler", None) is None
    assert dask.config.get("distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_") is not None


SEEDS, DIMS = ", ".join(map(str, range(300))), ", ".join(map(str, range(1, 301)))
BIG = f"""
recipes:
  - producer: random
    source: "rnd-{{seed}}-{{dim}}"
    sweep: {{seed: [{SEEDS}], dim: [{DIMS}]}}
"""


def test_oversized_sweep_is_refused_at_once(store: Store, tmp_path: Path):
    root = _server_store(store)
    recipes = tmp_path / "big.yaml"
    recipes.write_text(BIG)
    t0 = time.monotonic()
    cli = subprocess.run(
        [sys.executable, "-m", "pertstore.cli", "jobs", "submit", str(recipes), "--store", root],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 2, cli.stderr
    assert "90,000 recipes" in cli.stderr + cli.stdout and "Traceback" not in cli.stderr
    with api_server(root, env={"PERTSTORE_TOKEN": TOKEN, "PERTSTORE_MAX_PLAN_RECIPES": "3"}) as url:
        r = httpx.post(f"{url}/v1/jobs", json={"recipes": BIG}, headers=AUTH, timeout=30)
        assert r.status_code == 422 and "limit of 3" in r.json()["detail"]
        four = BIG.replace(SEEDS, "0, 1").replace(DIMS, "2, 3")
        r = httpx.post(f"{url}/v1/jobs", json={"recipes": four}, headers=AUTH, timeout=30)
        assert r.status_code == 422 and "4 recipes" in r.json()["detail"]
        assert httpx.get(f"{url}/v1/jobs", timeout=10).json() == []
    assert time.monotonic() - t0 < 90


def test_cancel_stops_running_work_within_seconds(store: Store):
    root = _server_store(store)
    slow = SAME.replace("dim: 4}", "dim: 4, delay: 45}")
    with api_server(root, env={"PERTSTORE_TOKEN": TOKEN}) as url:
        job_id = httpx.post(f"{url}/v1/jobs", json={"recipes": slow}, headers=AUTH, timeout=60).json()["job_id"]
        deadline = time.monotonic() + 90
        while httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()["recipes"][0]["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(1.0)  # parts are on the workers, each sleeping 45 s
        t0 = time.monotonic()
        assert httpx.post(f"{url}/v1/jobs/{job_id}/cancel", headers=AUTH, timeout=10).json()["state"] == "cancelling"
        job = _wait_terminal(url, job_id, timeout=30)
        took = time.monotonic() - t0
        assert job["state"] == "cancelled"
        assert took < 15, f"cancel took {took:.1f} s"
        assert httpx.get(f"{url}/v1/sets", params={"source": "ck-same"}, timeout=10).json()["items"] == []
        time.sleep(1.0)
        assert _staging_files(root) == []


def test_catalog_rebuild_keeps_every_job_record(store: Store):
    """Item 9: job records live in the store (``jobs/<id>.json``), so `catalog rebuild` keeps them."""
    progress = store.jobs.submit(SAME.replace("ck-same", "ck-kept"))
    failed = store.jobs.create(SAME.replace("ck-same", "ck-queued"))
    store.jobs.cancel(failed)
    before = store.jobs.ls().set_index("job_id")
    recipes_before = store.jobs.status(progress.job_id)["recipes"]
    root = store.uri
    store.close()
    (Path(root) / "jobs" / "junk.json").write_text("{not json")  # a torn or foreign file is reported, not fatal
    with Store.open(root) as s:
        assert any("junk.json" in p for p in s.verify()["catalog"])
    done = subprocess.run(
        [sys.executable, "-m", "pertstore.cli", "catalog", "rebuild", "--store", str(root)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-800:]
    assert "junk.json" in done.stdout + done.stderr
    with Store.open(root) as s:
        after = s.jobs.ls().set_index("job_id")
        assert sorted(after.index) == sorted(before.index)
        assert after.loc[progress.job_id, "state"] == "done" and after.loc[failed, "state"] == "cancelled"
        assert after.loc[progress.job_id, "items_done"] == before.loc[progress.job_id, "items_done"] > 0
        recipes_after = s.jobs.status(progress.job_id)["recipes"]
        assert recipes_after[["source", "state", "items_done"]].equals(
            recipes_before[["source", "state", "items_done"]]
        )


def test_same_recipe_submitted_by_two_cli_processes_is_computed_once(store: Store, tmp_path: Path):
    """Item 7 across processes: the second driver sees the first one's claim in the store and waits."""
    recipe = tmp_path / "same.yaml"
    recipe.write_text(SAME.replace("dim: 4}", "dim: 4, delay: 1.0}"))
    root = _server_store(store)
    command = [
        sys.executable,
        "-m",
        "pertstore.cli",
        "jobs",
        "submit",
        str(recipe),
        "--store",
        str(root),
        "--workers",
        "1",
        "--no-progress",
    ]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=200) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-800:] for _, err in outputs]
    assert _staging_files(root) == [] and not list((Path(root) / "claims").rglob("*.json"))
    with Store.open(root) as s:
        jobs = s.jobs.ls()
        assert list(jobs.state) == ["done", "done"]
        states = sorted(s.jobs.status(j)["recipes"].state[0] for j in jobs.job_id)
        assert states == ["done", "exists"], states  # one process computed it, the other waited for it
        assert len(s.ls("ck-same")) == 1 and s.show("ck-same").n_rows == 1500


def test_a_claim_left_by_a_dead_driver_is_taken_over(store: Store):
    from pertstore.store._layout import claim_key

    planned = store.jobs.plan(SAME)[0]
    marker = Path(str(store.uri)) / claim_key(planned.recipe.source, planned.recipe.version)
    marker.parent.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    marker.write_text(f'{{"job_id": "gone", "host": "{__import__("socket").gethostname()}", "pid": {dead.stdout}}}')
    progress = store.jobs.submit(SAME, n_workers=1)
    assert progress.state == "done" and progress.recipes[0].state == "done"
    assert not marker.exists()
