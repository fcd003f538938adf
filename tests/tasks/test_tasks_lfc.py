"""LFC equals a direct pandas computation of the design formulas and scanpy's two-stage aggregate means."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from pertstore.consumers.tasks import lfc, read_perturbation_data
from task_helpers import synthetic


def normalised(a: ad.AnnData) -> ad.AnnData:
    a = a.copy()
    a.X = a.X.astype(np.float64)
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    return a


def pandas_lfc(a: ad.AnnData, variant: str, *, pert: str, control: str, batch: str, context: str | None) -> dict:
    """Design section 5 written out with pandas group means."""
    df = pd.DataFrame(a.X.toarray(), columns=a.var_names)
    df["ctx"] = a.obs[context].astype(str).to_numpy() if context else ""
    df["label"] = a.obs[pert].astype(str).to_numpy()
    df["batch"] = a.obs[batch].astype(str).to_numpy()
    means = df.groupby(["ctx", "label", "batch"]).mean()
    out = {}
    for ctx in means.index.get_level_values(0).unique():
        ctrl = means.loc[(ctx, control)]
        for lab in means.loc[ctx].index.get_level_values(0).unique():
            if lab == control:
                continue
            pm = means.loc[(ctx, lab)]
            if variant == "large":
                common = pm.index.intersection(ctrl.index)
                if len(common):
                    out[(ctx, lab)] = (pm.loc[common] - ctrl.loc[common]).mean().to_numpy()
            else:
                out[(ctx, lab)] = (pm.mean() - ctrl.mean()).to_numpy()
    return out


def scanpy_lfc(a: ad.AnnData, variant: str, *, pert: str, control: str, batch: str) -> dict:
    """Two-stage ``sc.get.aggregate`` means (per batch, then over batches) in one context."""
    a = a.copy()
    a.obs["label"] = a.obs[pert].astype(str).astype("category")
    a.obs["bt"] = a.obs[batch].astype(str).astype("category")
    first = sc.get.aggregate(a, by=["label", "bt"], func="mean")
    first.X = first.layers["mean"]
    first.obs_names = [f"{lab}|{b}" for lab, b in zip(first.obs["label"], first.obs["bt"], strict=True)]
    ctrl = first[first.obs["label"] == control]
    ctrl_by_batch = pd.DataFrame(np.asarray(ctrl.X), index=ctrl.obs["bt"].astype(str))
    pert_rows = first[first.obs["label"] != control].copy()
    if variant == "large":
        keep = pert_rows.obs["bt"].astype(str).isin(ctrl_by_batch.index).to_numpy()
        pert_rows = pert_rows[keep].copy()
        pert_rows.X = np.asarray(pert_rows.X) - ctrl_by_batch.loc[pert_rows.obs["bt"].astype(str)].to_numpy()
        second = sc.get.aggregate(pert_rows, by="label", func="mean")
        return {lab: np.asarray(second.layers["mean"][i]) for i, lab in enumerate(second.obs["label"])}
    second = sc.get.aggregate(pert_rows, by="label", func="mean")
    global_ctrl = np.asarray(ctrl.X).mean(axis=0)
    return {lab: np.asarray(second.layers["mean"][i]) - global_ctrl for i, lab in enumerate(second.obs["label"])}


def as_dict(data, targets) -> dict:
    p = data.perturbations.iloc[targets.perts]
    return {(c, lab): targets.values[i] for i, (c, lab) in enumerate(zip(p["context"], p["label"], strict=True))}


UNBALANCED = {
    **{("A", b, lab): n for b in ("b1", "b2", "b3") for lab, n in (("control", 30), ("P1", 20), ("P3", 45))},
    ("A", "b1", "P2"): 15,
    ("A", "b2", "P2"): 4,  # P2 absent from b3
    ("A", "b4", "P1"): 9,
    ("A", "b4", "P4"): 6,  # b4 has no controls; P4 only there
    ("B", "b1", "control"): 25,
    ("B", "b1", "P1"): 30,
    ("B", "b2", "control"): 20,
    ("B", "b2", "P5"): 3,
}


@pytest.mark.parametrize("variant", ["large", "small"])
def test_lfc_matches_pandas_and_scanpy_on_unbalanced_synthetic(write_h5ad, variant):
    a = synthetic(cells=UNBALANCED, n_genes=30, seed=3)
    data = read_perturbation_data(write_h5ad(a))
    got = lfc(data, variant=variant, block_rows=37)  # many blocks
    ref = pandas_lfc(normalised(a), variant, pert="perturbation", control="control", batch="batch", context="cell_line")
    result = as_dict(data, got)
    assert set(result) == set(ref)
    for key, want in ref.items():
        np.testing.assert_allclose(result[key], want, rtol=0, atol=1e-9, err_msg=str(key))
    norm = normalised(a)
    for ctx in ("A", "B"):
        sub = norm[norm.obs["cell_line"] == ctx]
        agg = scanpy_lfc(sub, variant, pert="perturbation", control="control", batch="batch")
        for lab, want in agg.items():
            np.testing.assert_allclose(result[(ctx, lab)], want, rtol=0, atol=1e-6, err_msg=f"{ctx}/{lab}")
    if variant == "large":
        assert ("A", "P4") not in result
        assert got.dropped["pert_id"].tolist() == ["P4"]
        assert ("A", "P1", "b4") in set(
            zip(got.discarded_pairs.context, got.discarded_pairs.pert_id, got.discarded_pairs.batch)
        )
    else:
        assert got.dropped.empty


def test_large_and_small_differ_when_unbalanced(write_h5ad):
    data = read_perturbation_data(write_h5ad(synthetic(cells=UNBALANCED, n_genes=30, seed=3)))
    large, small = as_dict(data, lfc(data, variant="large")), as_dict(data, lfc(data, variant="small"))
    assert not np.allclose(large[("A", "P2")], small[("A", "P2")])


@pytest.mark.parametrize("variant", ["large", "small"])
def test_lfc_on_papalexi_matches_pandas_and_scanpy(papalexi, variant):
    data = read_perturbation_data(papalexi)
    got = as_dict(data, lfc(data, variant=variant))
    a = normalised(ad.read_h5ad(papalexi))
    a.obs["label"] = np.where(a.obs["is_control"], "NT", a.obs["target"].astype(str))
    ref = pandas_lfc(a, variant, pert="label", control="NT", batch="batch", context=None)
    agg = scanpy_lfc(a, variant, pert="label", control="NT", batch="batch")
    assert len(got) == len(ref) == len(agg) == 25
    for (ctx, lab), want in ref.items():
        np.testing.assert_allclose(got[(ctx, lab)], want, rtol=0, atol=1e-9, err_msg=lab)
        np.testing.assert_allclose(got[(ctx, lab)], agg[lab], rtol=0, atol=1e-6, err_msg=lab)


def test_auto_variant_follows_cells_per_pair(write_h5ad, papalexi):
    assert lfc(read_perturbation_data(papalexi)).variant == "large"  # ~200 cells per pair
    small = synthetic(cells={("A", b, lab): 8 for b in ("b1", "b2") for lab in ("control", "P1", "P2")})
    assert lfc(read_perturbation_data(write_h5ad(small))).variant == "small"


def test_log_normalised_input_is_used_as_is(norman):
    data = read_perturbation_data(norman)
    assert data.input == "log1p"
    assert any("not renormalised" in n for n in data.notes)
    got = as_dict(data, lfc(data))
    a = ad.read_h5ad(norman)
    a = a[~a.obs["perturbation"].str.contains("+", regex=False)].copy()
    a.obs["batch"] = "all"
    ref = pandas_lfc(a, "large", pert="perturbation", control="control", batch="batch", context="cell_type")
    assert set(got) == set(ref)
    for key, want in ref.items():
        np.testing.assert_allclose(got[key], want, rtol=0, atol=1e-9)


@pytest.mark.filterwarnings("ignore:Writing zarr v2:UserWarning")
def test_backed_h5ad_and_zarr_give_the_same_lfc(write_h5ad, tmp_path):
    a = synthetic(cells=UNBALANCED, n_genes=30, seed=5)
    path = write_h5ad(a)
    a.write_zarr(tmp_path / "cells.zarr")
    want = lfc(read_perturbation_data(path)).values
    for source, backed in ((path, True), (tmp_path / "cells.zarr", True), (tmp_path / "cells.zarr", False)):
        got = lfc(read_perturbation_data(source, backed=backed), block_rows=50).values
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=f"{source} backed={backed}")
