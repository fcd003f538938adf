"""`bench run --evaluator ft-gnn` through the CLI, beside kNN on the frozen string-gnn set it fine-tunes."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
from pertstore.producers.graph import string_gnn_encoder
from typer.testing import CliRunner

from pertstore import Store
from pertstore.cli import app
from pertstore.errors import InvalidInputError

GENES = ["TP53", "MYC", "KRAS", "EGFR", "GAPDH", "ACTB", "STAT1", "STAT2", "IRF1", "JAK1", "JAK2", "CD274",
         "SMAD4", "PTEN", "RB1", "CDK4", "CDK6", "MDM2", "BRCA1", "BRCA2"]  # fmt: skip
OFF_NETWORK = "GAPDH"
PRETRAIN = {"dims": 16, "depth": 2, "epochs": 100, "patience": 100, "batch_size": 256, "lr": 0.01,
            "score": "combined", "threshold": 0, "dropout": 0.0}  # fmt: skip
runner = CliRunner()


def community(gene: str) -> int:
    return GENES.index(gene) % 4


def write_network(path: Path, seed: int) -> None:
    """STRING-format links: dense within four communities, none across; GAPDH is in none."""
    rng = np.random.default_rng(seed)
    genes = [g for g in GENES if g != OFF_NETWORK]
    rows = [
        (f"9606.{a}", f"9606.{b}", 900)
        for i, a in enumerate(genes)
        for b in genes[i + 1 :]
        if community(a) == community(b) and rng.random() < 0.9
    ]
    pd.DataFrame(rows, columns=["protein1", "protein2", "combined_score"]).to_csv(path, sep="\t", index=False)


def test_bench_run_fine_tunes_the_string_gnn_beside_knn(tmp_path: Path):
    rng = np.random.default_rng(0)
    rate = rng.uniform(10, 30, size=len(GENES))
    labels = ["control"] * 120 + [g for g in GENES for _ in range(30)]
    scale = np.ones((len(labels), len(GENES)))
    for i, label in enumerate(labels):  # a knock-down lowers the genes of its community
        if label != "control":
            scale[i, [community(g) == community(label) for g in GENES]] = 0.25
    counts = rng.poisson(rate * scale)
    cells = tmp_path / "cells.h5ad"
    ad.AnnData(
        counts.astype(np.float32),
        obs=pd.DataFrame({"perturbation": labels}, index=[f"c{i}" for i in range(len(labels))]),
        var=pd.DataFrame(index=GENES),
    ).write_h5ad(cells)
    network, other = tmp_path / "links.tsv", tmp_path / "other.tsv"
    write_network(network, 0)
    write_network(other, 1)
    root = tmp_path / "store"

    def invoke(*args):
        return runner.invoke(app, [*map(str, args), "--store", str(root)])

    def run(*args) -> str:
        result = invoke(*args)
        assert result.exit_code == 0, result.output + repr(result.exception)
        return result.output

    assert runner.invoke(app, ["init", str(root)]).exit_code == 0
    run("tasks", "build", cells, "--kind", "lfc", "--name", "kd", "--pert-col", "perturbation",
        "--control-label", "control", "--context", "K562", "--trials", "2")  # fmt: skip
    with Store.open(root) as store:
        store.produce("string-gnn", source="gnn-t", params=PRETRAIN, inputs={"network": str(network)})
        genes, encoder = string_gnn_encoder(network, store.resolve, PRETRAIN)  # what ft-gnn starts from
        frozen = store.get("gnn-t", genes).values
    with torch.no_grad():  # the pretraining repeats the set's own training: its start is the frozen set
        np.testing.assert_allclose(encoder().numpy(), frozen, rtol=1e-5, atol=1e-6)
    assert len(genes) == len(GENES) - 1
    bench = ["bench", "run", "--task", "kd", "--set", "gnn-t", "--evaluator", "knn", "--evaluator", "ft-gnn",
             "--model-option", "epochs=60",
             "--model-option", "learning_rates=[0.01, 0.001]"]  # fmt: skip
    missing = invoke(*bench)  # the CLI's main() prints these errors and exits with code 2
    assert isinstance(missing.exception, InvalidInputError) and "network=FILE" in str(missing.exception)
    wrong = invoke(*bench, "--model-option", f"network={other}")
    assert "not the file set 'gnn-t' was built from" in str(wrong.exception)
    run(*bench, "--model-option", f"network={network}")
    out = tmp_path / "results.csv"
    run("bench", "results", "--out", out)
    df = pd.read_csv(out)
    tuned = df[(df.evaluator == "ft-gnn") & (df.metric == "l2")]
    assert set(tuned.fold) == set(df[df.evaluator == "knn"].fold) and len(tuned) > 1 and set(tuned.set) == {"gnn-t"}
    chosen = [json.loads(c) for c in tuned.chosen]
    assert all(c["lr"] in (0.01, 0.001) and c["pretrain"]["dims"] == 16 for c in chosen)
    uncovered = tuned.n_test - tuned.n_test_covered  # GAPDH: the train mean, reported as uncovered
    assert list(uncovered) == [c["uncovered_test"] for c in chosen] and uncovered.sum() == 1
    assert (tuned.coverage < 1).sum() == 1
    l2 = df[df.metric == "l2"].groupby(["set", "evaluator"]).value.mean()
    print(l2.to_dict())
    assert l2[("gnn-t", "ft-gnn")] < l2[("train_mean", "none")]
