"""DEG labels are identical to scanpy's rank_genes_groups(method='t-test') calls."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
from pertstore.consumers.tasks import deg, read_perturbation_data
from pertstore.consumers.tasks._deg import vote
from task_helpers import synthetic

pytestmark = pytest.mark.filterwarnings("ignore::pandas.errors.PerformanceWarning")


def scanpy_labels(a: ad.AnnData, groupby: str, reference: str) -> dict[str, np.ndarray]:
    """sign(score) where BH-adjusted p < 0.05, per group, in var order."""
    a = a.copy()
    a.X = a.X.astype(np.float64)
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.tl.rank_genes_groups(
        a, groupby, reference=reference, method="t-test", n_genes=a.n_vars, corr_method="benjamini-hochberg"
    )
    res = a.uns["rank_genes_groups"]
    out = {}
    for group in res["names"].dtype.names:
        pos = a.var_names.get_indexer(np.asarray(res["names"][group]))
        labels = np.zeros(a.n_vars, dtype=np.int8)
        labels[pos] = np.sign(np.asarray(res["scores"][group])) * (np.asarray(res["pvals_adj"][group]) < 0.05)
        out[group] = labels
    return out


def rule_vote(labels: list[np.ndarray]) -> np.ndarray:
    """The design's vote rule written per gene."""
    out = []
    for column in np.stack(labels).T:
        counts = {v: int((column == v).sum()) for v in (-1, 0, 1)}
        top = max(counts.values())
        out.append(int(np.sign(sum(v for v, c in counts.items() if c == top))))
    return np.array(out)


@pytest.mark.parametrize(
    ("labels", "want"),
    [((0, 1), 1), ((0, -1), -1), ((1, -1), 0), ((1, 0, -1), 0), ((1, 1, -1), 1), ((-1, -1, 0, 1), -1), ((0, 0, 1), 0)],
)
def test_vote_rule(labels, want):
    counts = np.array([[[labels.count(k)]] for k in (-1, 0, 1)])
    assert vote(counts)[0, 0] == want


def test_pooled_deg_equals_scanpy_on_papalexi(papalexi):
    data = read_perturbation_data(papalexi)
    got = deg(data, variant="small")
    a = ad.read_h5ad(papalexi)
    a.obs["grp"] = np.where(a.obs["is_control"], "CTRL", a.obs["target"].astype(str))
    ref = scanpy_labels(a, "grp", "CTRL")
    labels = data.perturbations["label"].to_numpy()[got.perts]
    assert len(labels) == 25 and (got.values != 0).sum() > 100
    for i, lab in enumerate(labels):
        np.testing.assert_array_equal(got.values[i], ref[lab], err_msg=lab)


def test_per_batch_vote_equals_scanpy_per_batch_on_papalexi(papalexi):
    data = read_perturbation_data(papalexi)
    got = deg(data, variant="large", min_cells=30)
    a = ad.read_h5ad(papalexi)
    a.obs["grp"] = np.where(a.obs["is_control"], "CTRL", a.obs["target"].astype(str))
    per_batch = {}
    for b in sorted(a.obs["batch"].unique()):
        sub = a[a.obs["batch"] == b].copy()
        sizes = sub.obs["grp"].value_counts()
        sub = sub[sub.obs["grp"].isin(sizes.index[sizes >= 30])].copy()
        per_batch[b] = scanpy_labels(sub, "grp", "CTRL")
    labels = data.perturbations["label"].to_numpy()[got.perts]
    assert "SPI1" not in labels and got.dropped["pert_id"].tolist() == ["SPI1"]  # 14, 6, 13 cells
    sizes = a.obs[~a.obs["is_control"]].groupby(["target", "batch"], observed=True).size()
    small = {k for k, n in sizes.items() if n < 30}
    assert set(zip(got.discarded_pairs.pert_id, got.discarded_pairs.batch)) == small and len(small) == 4
    for i, lab in enumerate(labels):
        want = rule_vote([r[lab] for r in per_batch.values() if lab in r])
        np.testing.assert_array_equal(got.values[i], want, err_msg=lab)


def test_min_cells_discards_pairs_and_perturbations(write_h5ad):
    cells = {("A", b, lab): n for b in ("b1", "b2") for lab, n in (("control", 60), ("P1", 40), ("P2", 25))}
    cells[("A", "b1", "P3")] = 35
    a = synthetic(cells=cells, n_genes=25, seed=2, effect=2.0)
    data = read_perturbation_data(write_h5ad(a))
    got = deg(data, variant="large", min_cells=30)
    assert data.perturbations["label"].to_numpy()[got.perts].tolist() == ["P1", "P3"]
    assert got.dropped["pert_id"].tolist() == ["P2"]
    assert sorted(zip(got.discarded_pairs.pert_id, got.discarded_pairs.batch)) == [("P2", "b1"), ("P2", "b2")]
    pooled = deg(data, variant="small", min_cells=30)  # P2 pools 50 cells
    assert data.perturbations["label"].to_numpy()[pooled.perts].tolist() == ["P1", "P2", "P3"]
    ref = scanpy_labels(a, "perturbation", "control")
    for i, lab in enumerate(["P1", "P2", "P3"]):
        np.testing.assert_array_equal(pooled.values[i], ref[lab], err_msg=lab)
    assert (pooled.values != 0).any()
