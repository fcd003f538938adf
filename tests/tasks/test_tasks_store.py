"""Stored tasks (tasks/<name>/<version>, catalog index, rebuild) and out-of-core / Dask computation."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from pertstore.consumers.tasks import (
    build_task,
    deg,
    lfc,
    list_tasks,
    load_task,
    read_perturbation_data,
    save_task,
    task_version,
)
from task_helpers import synthetic

from pertstore.errors import InvalidInputError, NotFoundError


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    path = tmp_path_factory.mktemp("cells") / "cells.h5ad"
    synthetic(seed=3).write_h5ad(path)
    return path


def assert_same_task(a, b):
    np.testing.assert_array_equal(a.targets, b.targets)
    assert (a.pert_ids, a.contexts, a.gene_ids, a.kind) == (b.pert_ids, b.contexts, b.gene_ids, b.kind)
    np.testing.assert_array_equal(a.folds, b.folds)
    pd.testing.assert_frame_equal(a.cell_counts, b.cell_counts, check_dtype=False)
    assert a.recipe == b.recipe and a.report == b.report
    np.testing.assert_array_equal(a.error.trials, b.error.trials)


def test_save_load_list_and_versions(store, cells):
    data = read_perturbation_data(cells)
    task = build_task(data, kind="lfc", trials=4, seed=1)
    with pytest.raises(InvalidInputError, match="needs a name"):
        save_task(store, task)
    name, version = save_task(store, task, name="synthetic")
    assert version == task_version(task.recipe) and len(version) == 16
    assert store.storage.exists(f"tasks/synthetic/{version}/zarr.json")
    assert store.storage.list_dir("staging/_tasks/synthetic") == []
    back = load_task(store, "synthetic")
    assert back.name == "synthetic"
    assert_same_task(back, task)
    assert save_task(store, task, name="synthetic") == (name, version)  # same recipe: no new version
    other = build_task(data, kind="lfc", trials=4, seed=2)
    _, v2 = save_task(store, other, name="synthetic")
    assert v2 != version
    df = list_tasks(store)
    assert df["version"].tolist() == [v2, version] and df["latest"].tolist() == [True, False]
    assert df.loc[0, "contexts"] == "A,B" and df.loc[0, "n_perts"] == len(other.pert_ids)
    assert load_task(store, "synthetic").recipe["params"]["seed"] == 2
    assert load_task(store, "synthetic", version).recipe["params"]["seed"] == 1
    with pytest.raises(NotFoundError, match=r"stored tasks: \['synthetic'\]"):
        load_task(store, "nope")
    with pytest.raises(NotFoundError, match="has no version 'beef'"):
        load_task(store, "synthetic", "beef")


def test_version_ignores_file_name_and_library_versions(cells, tmp_path):
    copy = tmp_path / "renamed.h5ad"
    copy.write_bytes(cells.read_bytes())
    a = build_task(read_perturbation_data(cells), kind="lfc", trials=0)
    b = build_task(read_perturbation_data(copy), kind="lfc", trials=0)
    b.recipe["libraries"] = {"numpy": "0.0"}
    assert a.recipe["input"]["file"] != b.recipe["input"]["file"]
    assert task_version(a.recipe) == task_version(b.recipe)
    large = build_task(read_perturbation_data(cells), kind="lfc", trials=0, variant="large")
    small = build_task(read_perturbation_data(cells), kind="lfc", trials=0, variant="small")
    assert task_version(large.recipe) != task_version(small.recipe)


def test_catalog_rebuild_reindexes_tasks(store, cells):
    task = build_task(read_perturbation_data(cells), kind="deg", trials=0, name="degs")
    _, version = save_task(store, task)
    store.catalog.con.execute("DELETE FROM tasks").fetchall()
    assert list_tasks(store).empty
    assert store.catalog.tasks.reindex(store.storage) == 1
    row = list_tasks(store).iloc[0]
    assert (row["name"], row["version"], row["kind"], bool(row["latest"])) == ("degs", version, "deg", True)
    assert load_task(store, "degs").targets.dtype == np.int8


def test_backed_anndata_equals_in_memory(cells):
    """anndata backed='r' streams row blocks; every number equals the in-memory computation."""
    want = {
        k: build_task(read_perturbation_data(cells), kind=k, trials=5, seed=4, block_rows=64) for k in ("lfc", "deg")
    }
    backed = ad.read_h5ad(cells, backed="r")
    try:
        data = read_perturbation_data(backed)
        assert data.matrix.backed and data.sha256 == read_perturbation_data(cells).sha256
        for kind, task in want.items():
            got = build_task(data, kind=kind, trials=5, seed=4, block_rows=64)
            np.testing.assert_array_equal(got.targets, task.targets)
            np.testing.assert_array_equal(got.error.trials, task.error.trials)
            assert got.recipe["input"] == task.recipe["input"]
    finally:
        backed.file.close()


def test_in_memory_anndata_gets_a_content_hash(cells):
    a = ad.read_h5ad(cells)
    data = read_perturbation_data(a)
    assert len(data.sha256) == 64 and data.path == ""
    np.testing.assert_allclose(lfc(data).values, lfc(read_perturbation_data(cells)).values, rtol=0, atol=1e-12)


def test_dask_client_gives_the_same_targets(cells, monkeypatch):
    import pertstore.consumers.tasks._matrix as matrix
    from distributed import Client

    monkeypatch.setattr(matrix, "DASK_ROWS", 300)  # several row ranges
    data = read_perturbation_data(cells, backed=True)
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as client:
        seen = []
        got = lfc(data, client=client, progress=lambda *a: seen.append(a))
        got_deg = deg(data, client=client, variant="large")
    np.testing.assert_allclose(got.values, lfc(data).values, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got_deg.values, deg(data, variant="large").values)
    assert seen[-1] == ("cells", data.matrix.shape[0], data.matrix.shape[0]) and len(seen) > 2
