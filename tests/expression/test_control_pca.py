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
    card = store.produce(PRODUCER, source="pca-THP-1", params={"dims": 20}, inputs={"cells": str(path)},
                         context="THP-1", max_failed_fraction=0.2)
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
        store.produce(PRODUCER, source="pca-x", params={"min_cells": 5000}, inputs={"cells": str(path)}, context="THP-1")
    assert "pca-x" not in set(store.ls().source)
