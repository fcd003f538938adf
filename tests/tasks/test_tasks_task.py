"""Task: build, folds, AnnData export contract, Zarr v3 round trip, import of precomputed tasks."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import zarr
from pertstore.consumers.tasks import Task, build_task, import_task, make_folds, read_perturbation_data
from task_helpers import synthetic

from pertstore.errors import InvalidInputError


@pytest.fixture(scope="module", params=["lfc", "deg"])
def task(request, papalexi):
    return build_task(read_perturbation_data(papalexi, context="THP-1"), kind=request.param, trials=10, seed=1)


def test_anndata_export_contract(task, tmp_path):
    a = task.to_anndata()
    assert a.shape == task.targets.shape and list(a.var_names) == task.gene_ids
    assert {"pert_id", "entity_id", "context", "fold", "n_cells"} <= set(a.obs.columns)
    assert set(a.obs["context"]) == {"THP-1"} and set(a.obs["fold"]) == {0, 1, 2, 3, 4}
    assert a.uns["recipe"]["input"]["sha256"] == task.recipe["input"]["sha256"]
    assert a.uns["error"]["kind"] == task.kind
    limits = a.uns["error"]["limits"]
    assert set(limits["fold"]) == {0, 1, 2, 3, 4} and ("l2" if task.kind == "lfc" else "f1") in set(limits["metric"])
    if task.kind == "lfc":
        assert a.obsm["error_trials_l2"].shape == (a.n_obs, 10) and "error_spearman" in a.obs.columns
    assert (a.obs["n_cells"] >= 30).all()
    a.write_h5ad(tmp_path / "task.h5ad")
    back = ad.read_h5ad(tmp_path / "task.h5ad")
    np.testing.assert_array_equal(back.X, task.targets)


def test_zarr_v3_round_trip(task, tmp_path):
    g = task.write_zarr(tmp_path / "task.zarr")
    assert g.metadata.zarr_format == 3
    assert g.attrs["encoding-type"] == "pertstore-task" and g.attrs["encoding-version"] == "0.2.0"
    back = Task.read_zarr(tmp_path / "task.zarr")
    np.testing.assert_array_equal(back.targets, task.targets)
    assert back.targets.dtype == task.targets.dtype
    assert (back.pert_ids, back.contexts, back.gene_ids, back.kind) == (
        task.pert_ids,
        task.contexts,
        task.gene_ids,
        task.kind,
    )
    np.testing.assert_array_equal(back.folds, task.folds)
    pd.testing.assert_frame_equal(back.cell_counts, task.cell_counts, check_dtype=False)
    assert back.recipe == task.recipe and back.report == task.report
    np.testing.assert_array_equal(back.error.trials, task.error.trials)
    pd.testing.assert_frame_equal(
        back.error.fold_limits(back.folds, back.contexts), task.error.fold_limits(task.folds, task.contexts)
    )


def test_read_zarr_refuses_old_tasks_with_a_hint(task, tmp_path):
    task.write_zarr(tmp_path / "old.zarr").attrs["encoding-version"] = "0.1.0"
    with pytest.raises(InvalidInputError, match="0.1.0.*rebuild it"):
        Task.read_zarr(tmp_path / "old.zarr")


def test_read_zarr_refuses_other_groups(tmp_path):
    g = zarr.open_group(tmp_path / "other.zarr", mode="w", zarr_format=3)
    g.attrs["encoding-type"] = "anndata"
    with pytest.raises(InvalidInputError, match="encoding-type 'anndata'"):
        Task.read_zarr(tmp_path / "other.zarr")


def test_folds_are_balanced_per_context_and_seeded():
    contexts = ["A"] * 23 + ["B"] * 7
    f = make_folds(contexts, seed=3)
    for ctx, n in (("A", 23), ("B", 7)):
        sizes = np.bincount(f[np.asarray(contexts) == ctx], minlength=5)
        assert sizes.sum() == n and sizes.max() - sizes.min() <= 1
    np.testing.assert_array_equal(f, make_folds(contexts, seed=3))
    assert not np.array_equal(f, make_folds(contexts, seed=4))


def test_build_reports_recipe_and_counts(write_h5ad):
    data = read_perturbation_data(write_h5ad(synthetic()))
    task = build_task(data, kind="lfc", trials=0)
    assert task.error is None and task.recipe["params"]["variant"] in ("large", "small")
    assert task.recipe["input"]["sha256"] == data.sha256
    cc = task.cell_counts
    assert cc.loc[(cc.context == "A") & (cc.pert_id == "P2"), "n_cells"].tolist() == [12, 12, 12]


def published(tmp_path, folds: str):
    rng = np.random.default_rng(0)
    obs = pd.DataFrame(
        {"gene_id": [f"ENSG{i}" for i in range(10)], "cell_line": ["K562"] * 5 + ["HepG2"] * 5},
        index=[f"r{i}" for i in range(10)],
    )
    if folds == "test_split":
        obs["test_split"] = np.arange(10) % 5
    else:
        for k in range(5):
            obs[f"fold_{k}"] = np.where(np.arange(10) % 5 == k, "test", "train")
    a = ad.AnnData(
        X=rng.integers(-1, 2, (10, 6)).astype(np.float32), obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(6)])
    )
    a.write_h5ad(tmp_path / f"{folds}.h5ad")
    return tmp_path / f"{folds}.h5ad", a


@pytest.mark.parametrize("folds", ["test_split", "fold_k"])
def test_import_published_layout_keeps_folds(tmp_path, folds):
    path, a = published(tmp_path, folds)
    task = import_task(path)
    assert task.kind == "deg" and task.targets.dtype == np.int8
    assert task.pert_ids == list(a.obs["gene_id"]) and task.contexts == list(a.obs["cell_line"])
    np.testing.assert_array_equal(task.folds, np.arange(10) % 5)
    assert import_task(path, kind="lfc").targets.dtype == np.float64


def test_import_parquet_and_csv(tmp_path):
    df = pd.DataFrame(
        np.random.default_rng(1).normal(size=(4, 3)),
        columns=["G1", "G2", "G3"],
        index=pd.Index(["P1", "P2", "P3", "P4"], name="pert"),
    )
    df.to_csv(tmp_path / "m.csv")
    task = import_task(tmp_path / "m.csv", context="K562")
    assert task.kind == "lfc" and task.pert_ids == ["P1", "P2", "P3", "P4"] and task.gene_ids == ["G1", "G2", "G3"]
    assert any("no folds" in n for n in task.report["notes"])
    df.reset_index(names="pert_id").assign(fold=[0, 1, 0, 1]).to_parquet(tmp_path / "m.parquet")
    task = import_task(tmp_path / "m.parquet")
    np.testing.assert_array_equal(task.folds, [0, 1, 0, 1])
    np.testing.assert_allclose(task.targets, df.to_numpy())
    df.iloc[1, 2] = np.nan
    df.to_csv(tmp_path / "nan.csv")
    with pytest.raises(InvalidInputError, match="'P2', gene 'G3'"):
        import_task(tmp_path / "nan.csv")
