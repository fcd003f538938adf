"""Jobs on a real Dask LocalCluster: idempotence, failure ledger, worker and driver crashes, cancel."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from store_helpers import stored_bytes_digest

from pertstore import Store
from pertstore.errors import ConflictError, InvalidInputError, NotFoundError

pytestmark = pytest.mark.timeout(240)


def _recipes(limit: int = 3000, delay: float = 0.0, fail_prefix: str = "", dims=(4, 8)) -> str:
    return f"""
recipes:
  - producer: checksum
    source: "ck-{{dim}}"
    params: {{limit: {limit}, delay: {delay}, fail_prefix: "{fail_prefix}"}}
    sweep: {{dim: {list(dims)}}}
"""


@pytest.fixture
def reference(_template_store: Path, tmp_path: Path):
    """Versions and digests of the same recipes computed inline (no Dask) in a separate store."""
    root = tmp_path / "reference"
    shutil.copytree(_template_store, root)

    def make(**params) -> dict:
        with Store.open(root) as s:
            cards = {dim: s.produce("checksum", source=f"ck-{dim}", params={**params, "dim": dim}) for dim in (4, 8)}
            return {dim: (card.version, _digests(s, card.source)) for dim, card in cards.items()}

    return make


def _digests(store: Store, source: str) -> tuple[str, str]:
    """The set's content checksum and the digest of its stored bytes."""
    return store.show(source).checksum, stored_bytes_digest(store, source)


def _wait_for(predicate, timeout: float = 120.0, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(every)


def test_two_workers_compute_what_inline_computes_and_resubmission_is_free(store: Store, reference):
    res = store.jobs.submit(_recipes(), n_workers=2)
    assert res.state == "done"
    assert res.items_total == res.items_done == 6000
    ref = reference(limit=3000, delay=0.0, fail_prefix="")
    for dim in (4, 8):
        card = store.show(f"ck-{dim}")
        assert card.version == ref[dim][0]
        assert _digests(store, f"ck-{dim}") == ref[dim][1]
    again = store.jobs.submit(_recipes())
    status = store.jobs.status(again.job_id)
    assert status["state"] == "done"
    assert set(status["recipes"].state) == {"exists"}
    assert (status["recipes"].items_reused == status["recipes"].items_total).all()
    assert sorted(store.ls().version) == sorted(version for version, _ in ref.values())


def test_failure_ledger_and_threshold(store: Store):
    ok = store.jobs.submit(_recipes(limit=2000, fail_prefix="ENSG0000012", dims=(4,)), max_failed_fraction=0.5)
    ledger = store.jobs.failures(ok.job_id)
    assert ok.state == "done" and len(ledger) > 0
    assert ledger.entity_id.str.startswith("ENSG0000012").all()
    card = store.show("ck-4")
    assert set(card.failed) == set(ledger.entity_id)
    assert card.n_rows + len(ledger) == 2000

    bad = store.jobs.submit(_recipes(limit=2000, fail_prefix="ENSG0000012", dims=(8,)), max_failed_fraction=0.001)
    status = store.jobs.status(bad.job_id)
    assert status["state"] == "failed" and "allowed" in status["error"]
    assert "ck-8" not in set(store.ls().source)
    assert not store.storage.list_dir("staging/ck-8")


def test_a_raising_work_item_fails_its_recipe_only_and_a_scheduler_address_works(store: Store):
    from distributed import LocalCluster

    recipes = """
recipes:
  - {producer: checksum, source: ok, params: {limit: 600}}
  - {producer: checksum, source: broken, params: {limit: 600, raise_prefix: ENSG0000012}}
"""
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster:
        state = store.jobs.submit(recipes, scheduler=cluster.scheduler_address)
    status = store.jobs.status(state.job_id)
    assert status["state"] == "failed" and status["scheduler"] == cluster.scheduler_address
    by_source = status["recipes"].set_index("source")
    assert by_source.loc["ok", "state"] == "done" and by_source.loc["broken", "state"] == "failed"
    assert "told to fail" in by_source.loc["broken", "error"]
    assert set(store.ls().source) == {"ok"}
    assert not store.storage.list_dir("staging/broken") and not store.storage.list_dir("staging/_parts/broken")


def test_a_killed_worker_is_replaced_and_the_job_completes(store: Store, reference):
    job_id = store.jobs.create(_recipes(delay=0.4), max_failed_fraction=0.0)
    result = {}
    runner = threading.Thread(target=lambda: result.update(state=store.jobs.run(job_id, n_workers=2)))
    runner.start()
    _wait_for(lambda: store.jobs.status(job_id)["items_done"] > 0)
    workers = [p for p in psutil.Process().children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]
    assert workers, "no Dask worker processes found"
    workers[0].send_signal(signal.SIGKILL)
    runner.join(200)
    assert result["state"].state == "done"
    ref = reference(limit=3000, delay=0.4, fail_prefix="")
    assert _digests(store, "ck-4") == ref[4][1]


def test_killed_driver_then_resume_gives_identical_bytes(store: Store, reference, tmp_path: Path):
    recipes = tmp_path / "recipes.yaml"
    recipes.write_text(_recipes(delay=0.5))
    root = store.storage.path("")
    store.close()
    cmd = [sys.executable, "-m", "pertstore.cli", "jobs", "submit", str(recipes), "--store", str(root), "--no-progress"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def progressed() -> bool:
        with Store.open(root) as s:
            jobs = s.jobs.ls()
            return not jobs.empty and jobs.items_done.iloc[0] >= 1024

    _wait_for(progressed)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with Store.open(root) as s:
        (job_id,) = s.jobs.ls().job_id
        assert s.jobs.status(job_id)["state"] == "running"
        assert s.ls().empty
        final = s.jobs.resume(job_id, n_workers=2)
        assert final.state == "done"
        assert sum(r.items_reused for r in final.recipes) >= 1024
        ref = reference(limit=3000, delay=0.5, fail_prefix="")
        for dim in (4, 8):
            assert _digests(s, f"ck-{dim}") == ref[dim][1]
        assert not s.storage.list_dir("staging/_parts/ck-4")
        with pytest.raises(ConflictError, match="done"):
            s.jobs.resume(job_id)


def test_cancel_leaves_nothing_published(store: Store):
    job_id = store.jobs.create(_recipes(delay=0.5))
    runner = threading.Thread(target=store.jobs.run, args=(job_id,), kwargs={"n_workers": 2})
    runner.start()
    _wait_for(lambda: store.jobs.status(job_id)["items_done"] > 0)
    assert store.jobs.cancel(job_id) == "cancelling"
    runner.join(200)
    assert store.jobs.status(job_id)["state"] == "cancelled"
    assert store.ls().empty
    assert not store.storage.list_dir("staging/ck-4") and not store.storage.list_dir("staging/_parts/ck-4")
    with pytest.raises(ConflictError, match="cancelled"):
        store.jobs.cancel(job_id)


def test_cancel_of_an_orphaned_job_cleans_up(store: Store):
    job_id = store.jobs.create(_recipes(limit=100, dims=(4,)))
    with store.catalog.transaction() as con:  # a driver that died: state running, pid of no process
        con.execute("UPDATE jobs SET state = 'running', pid = 2147483646 WHERE job_id = ?", [job_id]).fetchall()
    assert store.jobs.cancel(job_id) == "cancelled"
    with pytest.raises(NotFoundError, match="no job"):
        store.jobs.status("nope")


def test_recipe_files_expand_sweeps_and_check_inputs(store: Store, tmp_path: Path):
    specs = store.jobs.plan("""
recipes:
  - producer: random
    source: "rnd-{dim}-s{seed}"
    sweep: {dim: [4, 8], seed: [0, 1, 2]}
""")
    assert len(specs) == 6 and len({p.recipe.version for p in specs}) == 6
    assert {p.recipe.params["dim"] for p in specs} == {4, 8}
    assert specs[0].recipe.params == {"dim": 4, "seed": 0, "kind_of_ids": "all"}  # defaults are pinned
    with pytest.raises(InvalidInputError, match="source name"):
        store.jobs.plan("recipes:\n  - {producer: random, source: rnd, sweep: {seed: [0, 1]}}\n")
    with pytest.raises(NotFoundError, match="no producer named"):
        store.jobs.plan("recipes:\n  - {producer: nope, source: x}\n")
    with pytest.raises(InvalidInputError, match="invalid parameters"):
        store.jobs.plan("recipes:\n  - {producer: random, source: x, params: {dim: -1}}\n")
    with pytest.raises(InvalidInputError, match="takes inputs"):
        store.jobs.plan("recipes:\n  - {producer: random, source: x, inputs: {table: /nope}}\n")
    contexts = store.jobs.plan("recipes:\n  - {producer: random, source: 'r-{context}', contexts: [K562, THP1]}\n")
    assert [p.recipe.context for p in contexts] == ["K562", "THP1"]


def test_module_class_producers_and_inline_produce(store: Store):
    card = store.produce("pertstore.producers.builtin:RandomProducer", source="rnd", params={"dim": 3, "seed": 7})
    again = store.produce("random", source="rnd", params={"dim": 3, "seed": 7})
    assert card.version == again.version
    x = store.get("rnd", ["TP53", "BRCA1"])
    assert x.values.shape == (2, 3) and ((x.values >= 0) & (x.values < 1)).all()


def test_cli_producers_ls_and_jobs_commands(store: Store, tmp_path: Path):
    from typer.testing import CliRunner

    from pertstore.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["producers", "ls"])
    assert out.exit_code == 0 and "random" in out.output and "checksum" in out.output
    recipes = tmp_path / "r.yaml"
    recipes.write_text(_recipes(limit=500, dims=(4,)))
    root = str(store.storage.path(""))
    store.close()
    dry = runner.invoke(app, ["jobs", "submit", str(recipes), "--store", root, "--dry-run"])
    assert dry.exit_code == 0 and "ck-4" in dry.output
    run = runner.invoke(app, ["jobs", "submit", str(recipes), "--store", root, "--no-progress", "--workers", "1"])
    assert run.exit_code == 0, run.output
    with Store.open(root) as s:
        job_id = s.jobs.ls().job_id.iloc[0]
    status = runner.invoke(app, ["jobs", "status", job_id, "--store", root])
    assert status.exit_code == 0 and "done" in status.output and "500/500" in status.output
