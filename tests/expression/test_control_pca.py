"""control-pca on the real Papalexi 2021 control cells, against scanpy + scikit-learn in memory."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
from sklearn.decomposition import PCA

from pertstore.errors import InvalidInputError

PRODUCER = "pertstore.producers.expression.pca:ControlPCAProducer"


def test_control_pca_equals_sklearn_pca_of_normalised_controls(store, data_dir):
    path = data_dir / "perturb" / "papalexi2021_thp1_crispr_ko.h5ad"
    card = store.produce(
        PRODUCER,
        source="pca-THP-1",
        params={"dims": 20},
        inputs={"cells": str(path)},
        context="THP-1",
        max_failed_fraction=0.2,
    )
    adata = sc.read_h5ad(path)
    ctrl = adata[adata.obs["is_control"].astype(bool)].copy()
    sc.pp.normalize_total(ctrl, target_sum=1e4)
    sc.pp.log1p(ctrl)
    ref = PCA(20, svd_solver="full").fit_transform(np.asarray(ctrl.X.todense()).T)  # genes as samples
    got = store.get("pca-THP-1", list(ctrl.var_names), context="THP-1").values  # NaN where unresolved
    ids = np.array([i or "" for i in store.resolve(list(ctrl.var_names)).ids])
    once = np.array([i != "" and (ids == i).sum() == 1 for i in ids])  # a gene no other column maps onto
    covered = ~np.isnan(got[:, 0]) & once
    assert card.n_rows > 250 and covered.sum() > 250 and card.dim == 20
    for j in range(20):  # equal up to the sign of each component
        a, b = got[covered, j], ref[covered, j]
        assert min(np.abs(a - b).max(), np.abs(a + b).max()) < 1e-3 * np.abs(b).max()


def test_too_few_control_cells_is_a_clear_error(store, data_dir):
    path = data_dir / "perturb" / "papalexi2021_thp1_crispr_ko.h5ad"
    with pytest.raises(InvalidInputError, match="control cells; at least 5000"):
        store.produce(
            PRODUCER, source="pca-x", params={"min_cells": 5000}, inputs={"cells": str(path)}, context="THP-1"
        )
    assert "pca-x" not in set(store.ls().source)


@pytest.mark.parametrize("method", ["exact", "randomized"])
def test_sparse_blocks_give_sklearn_pca_of_genes(method):
    """Sparse blocks take the centring-free path; both paths equal sklearn's PCA of X^T (synthetic data)."""
    import scipy.sparse as sp
    from pertstore.producers.expression._pca import gene_pca

    rng = np.random.default_rng(1)
    low_rank = (rng.standard_normal((700, 12)) * np.geomspace(20, 2, 12)) @ rng.standard_normal((12, 300))
    x = sp.csr_matrix(np.where(low_rank > 1, low_rank, 0) + rng.standard_normal((700, 300)) * 0.01 * (low_rank > 1))
    ref = PCA(12, svd_solver="full").fit_transform(x.toarray().T)
    for dense in (False, True):
        got = gene_pca(
            lambda: (x[i : i + 100].toarray() if dense else x[i : i + 100] for i in range(0, 700, 100)),
            300,
            12,
            method=method,
            n_iter=30,
        ).scores
        for j in range(12):
            a, b = got[:, j], ref[:, j]
            assert min(np.abs(a - b).max(), np.abs(a + b).max()) < 1e-6 * np.abs(b).max() + 1e-8, (dense, j)
