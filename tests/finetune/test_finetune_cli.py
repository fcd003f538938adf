"""`bench run --evaluator ft-isko` through the CLI, beside kNN on a set, on a tiny dense checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
from pertstore.producers.expression.checkpoints import DenseCellConfig, DenseCellModel
from typer.testing import CliRunner

from pertstore import Store
from pertstore.cli import app

GENES = ["TP53", "MYC", "KRAS", "EGFR", "GAPDH", "ACTB", "STAT1", "STAT2", "IRF1", "JAK1", "JAK2", "CD274",
         "SMAD4", "PTEN", "RB1", "CDK4", "CDK6", "MDM2", "BRCA1", "BRCA2"]  # fmt: skip
runner = CliRunner()


def test_bench_run_fine_tunes_beside_knn(tmp_path: Path):
    rng = np.random.default_rng(0)
    rate = rng.uniform(5, 30, size=len(GENES))
    labels = ["control"] * 120 + [g for g in GENES for _ in range(30)]
    counts = rng.poisson(rate, size=(len(labels), len(GENES)))
    for i, label in enumerate(labels):  # a knock-down lowers its own gene
        if label != "control":
            counts[i, GENES.index(label)] = rng.poisson(0.5)
    cells = tmp_path / "cells.h5ad"
    ad.AnnData(
        counts.astype(np.float32),
        obs=pd.DataFrame({"perturbation": labels}, index=[f"c{i}" for i in range(len(labels))]),
        var=pd.DataFrame(index=GENES),
    ).write_h5ad(cells)
    torch.manual_seed(0)
    model = tmp_path / "tiny-dense"
    DenseCellModel(DenseCellConfig(gene_names=GENES, d_model=16, nhead=2, d_hid=32, nlayers=2)).save_pretrained(model)
    root = tmp_path / "store"

    def run(*args) -> str:
        result = runner.invoke(app, [*map(str, args), "--store", str(root)])
        assert result.exit_code == 0, result.output + repr(result.exception)
        return result.output

    assert runner.invoke(app, ["init", str(root)]).exit_code == 0
    run("tasks", "build", cells, "--kind", "lfc", "--name", "kd", "--pert-col", "perturbation",
        "--control-label", "control", "--context", "K562", "--trials", "2")  # fmt: skip
    with Store.open(root) as store:
        store.produce("random", source="random-8", params={"dim": 8})
    run("bench", "run", "--task", "kd", "--set", "random-8", "--evaluator", "knn", "--evaluator", "ft-isko",
        "--fold", "0", "--fold", "1", "--model-option", f"model_path={model}", "--model-option", f"cells={cells}",
        "--model-option", "control_column=perturbation", "--model-option", "control_value=control",
        "--model-option", "epochs=25", "--model-option", "learning_rates=[0.01, 0.001]")  # fmt: skip
    out = tmp_path / "results.csv"
    run("bench", "results", "--out", out)
    df = pd.read_csv(out)
    tuned = df[(df.evaluator == "ft-isko") & (df.metric == "l2")]
    assert set(tuned.fold) == {0, 1} and set(tuned.set) == {"finetune(tiny-dense)"}
    assert (tuned.coverage == 1.0).all()
    chosen = json.loads(tuned.chosen.iloc[0])
    assert chosen["lr"] in (0.01, 0.001) and set(chosen["val_mse"]) == {"0.01", "0.001"}
    l2 = df[df.metric == "l2"].groupby(["set", "evaluator"]).value.mean()
    print(l2.to_dict())
    assert l2[("finetune(tiny-dense)", "ft-isko")] < l2[("random-8", "knn")]
    assert l2[("finetune(tiny-dense)", "ft-isko")] < l2[("train_mean", "none")]
