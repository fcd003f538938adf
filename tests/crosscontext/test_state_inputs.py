"""STATE's inputs: the cell-load TOML holds out what our splits hold out; cells, features, predicted LFC."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
from pertstore.consumers.crosscontext import cross_context_splits
from pertstore.consumers.crosscontext._state import StateSettings, predicted_lfc, split_toml, train_args, write_inputs

CONTEXTS = ["A172", "T98G", "k562"]


def test_cell_load_reads_our_splits(tmp_path: Path):
    from cell_load.config import ExperimentConfig

    ctx = np.repeat(CONTEXTS, 6)
    labels = np.tile([f"P{i}" for i in range(6)], 3)
    folds = np.tile([0, 1, 2, 3, 4, 0], 3)
    for setting in ("zeroshot", "fewshot"):
        for split in cross_context_splits(ctx, folds, setting, held_out=["T98G"]):
            path = tmp_path / f"{setting}-{split.fold}.toml"
            test = sorted(set(labels[split.test]))
            path.write_text(split_toml(setting, "T98G", test, CONTEXTS).replace("DATA", str(tmp_path)))
            config = ExperimentConfig.from_toml(str(path))
            if setting == "zeroshot":
                assert config.get_zeroshot_celltypes("pertstore") == {"T98G": "test"}
                assert not config.get_fewshot_celltypes("pertstore")
            else:
                few = config.get_fewshot_celltypes("pertstore")
                assert set(few) == {"T98G"} and sorted(few["T98G"]["test"]) == test
                trained = set(labels[split.train & (ctx == "T98G")])
                assert not trained & set(few["T98G"]["test"])  # what cell-load tests, our split never trains on


def test_write_inputs_and_predicted_lfc(tmp_path: Path):
    rng = np.random.default_rng(0)
    perts = ["control"] * 6 + ["P1"] * 4 + ["P2"] * 4 + ["P3"] * 2
    obs = pd.DataFrame(
        {"perturbation": perts * 2, "cell_type": ["A172"] * 16 + ["k562"] * 16},
        index=[f"c{i}" for i in range(32)],
    )
    counts = rng.poisson(5, size=(32, 10)).astype(np.float32)
    path = tmp_path / "cells.h5ad"
    ad.AnnData(counts, obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(10)])).write_h5ad(path)
    columns = {"pert_col": "perturbation", "control_label": "control", "context_col": "cell_type", "batch_col": None}
    vectors = {np.str_("P1"): np.ones(4), np.str_("P2"): np.zeros(4)}  # P3 has no embedding: its cells stay out
    data, features, means = write_inputs(path, columns, vectors, tmp_path / "w", counts=True)
    a172 = ad.read_h5ad(data / "A172.h5ad")
    assert sorted(set(a172.obs.gene)) == ["P1", "P2", "control"] and a172.n_obs == 14
    assert {"gene", "cell_type", "gem_group"} <= set(a172.obs)
    norm = np.log1p(counts[:6] / counts[:6].sum(1, keepdims=True) * 1e4)
    assert np.allclose(means["A172"], norm.mean(0), atol=1e-5)
    saved = torch.load(features, weights_only=True)  # as cell-load reads it
    assert set(saved) == {"P1", "P2"} and torch.equal(saved["P1"], torch.ones(4))
    pred = ad.AnnData(rng.normal(size=(6, 10)).astype(np.float32), obs=pd.DataFrame({"gene": ["P1"] * 3 + ["P2"] * 3}))
    pred.write_h5ad(tmp_path / "adata_pred.h5ad")
    lfc = predicted_lfc(tmp_path / "adata_pred.h5ad", means["A172"], ["P1", "P2", "P9"])
    assert set(lfc) == {"P1", "P2"}
    assert np.allclose(lfc["P2"], pred.X[3:].mean(0) - means["A172"])
    args = train_args(tmp_path, tmp_path / "s.toml", features, StateSettings(hidden_dim=32, heads=2))
    assert "model=state" in args and f"data.kwargs.perturbation_features_file={features}" in args
    assert "model.kwargs.transformer_backbone_kwargs.head_dim=16" in args
