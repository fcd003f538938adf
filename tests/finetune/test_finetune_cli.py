"""`bench run --evaluator ft-isko` through the CLI, beside kNN on a set, on a tiny dense checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from pertstore.consumers.tasks import load_task
from pertstore.producers.expression.checkpoints import DenseCellConfig, DenseCellModel, ScGPTConfig, ScGPTModel
from typer.testing import CliRunner

from pertstore import Store
from pertstore.cli import app

GENES = ["TP53", "MYC", "KRAS", "EGFR", "GAPDH", "ACTB", "STAT1", "STAT2", "IRF1", "JAK1", "JAK2", "CD274",
         "SMAD4", "PTEN", "RB1", "CDK4", "CDK6", "MDM2", "BRCA1", "BRCA2"]  # fmt: skip
runner = CliRunner()


def _knock_down_screen(tmp_path: Path, silent: str | None = None) -> tuple[Path, Path]:
    """A synthetic knock-down screen (each knock-down lowers its own gene) as an h5ad, and a store
    with its LFC task ``kd`` and a ``random-8`` set; ``silent``: a gene no cell expresses."""
    rng = np.random.default_rng(0)
    rate = rng.uniform(5, 30, size=len(GENES))
    labels = ["control"] * 120 + [g for g in GENES for _ in range(30)]
    counts = rng.poisson(rate, size=(len(labels), len(GENES)))
    for i, label in enumerate(labels):  # a knock-down lowers its own gene
        if label != "control":
            counts[i, GENES.index(label)] = rng.poisson(0.5)
    if silent:
        counts[:, GENES.index(silent)] = 0
    cells = tmp_path / "cells.h5ad"
    ad.AnnData(
        counts.astype(np.float32),
        obs=pd.DataFrame({"perturbation": labels}, index=[f"c{i}" for i in range(len(labels))]),
        var=pd.DataFrame(index=GENES),
    ).write_h5ad(cells)
    root = tmp_path / "store"
    assert runner.invoke(app, ["init", str(root)]).exit_code == 0
    _cli(root, "tasks", "build", cells, "--kind", "lfc", "--name", "kd", "--pert-col", "perturbation",
         "--control-label", "control", "--context", "K562", "--trials", "2")  # fmt: skip
    with Store.open(root) as store:
        store.produce("random", source="random-8", params={"dim": 8})
    return cells, root


def _cli(root: Path, *args) -> str:
    result = runner.invoke(app, [*map(str, args), "--store", str(root)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def _l2_rows(root: Path, tmp_path: Path, task_name: str) -> tuple[pd.DataFrame, object]:
    """The stored L2 rows by evaluator, as ``bench results`` exports them, and the task."""
    out = tmp_path / "results.csv"
    _cli(root, "bench", "results", "--out", out)
    df = pd.read_csv(out)
    with Store.open(root) as store:
        task = load_task(store, task_name)
    return df[df.metric == "l2"].set_index("evaluator"), task


def test_a_model_option_of_the_wrong_type_is_a_clear_error(tmp_path: Path):
    cells, root = _knock_down_screen(tmp_path)
    bad = subprocess.run(
        [sys.executable, "-m", "pertstore.cli", "bench", "run", "--task", "kd", "--set", "random-8",
         "--evaluator", "ft-isko", "--model-option", f"model_path={tmp_path}", "--model-option", f"cells={cells}",
         "--model-option", "max_length=long", "--store", str(root)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "max_length='long': expected a number" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr


def test_bench_run_fine_tunes_beside_knn(tmp_path: Path):
    cells, root = _knock_down_screen(tmp_path)
    torch.manual_seed(0)
    model = tmp_path / "tiny-dense"
    DenseCellModel(DenseCellConfig(gene_names=GENES, d_model=16, nhead=2, d_hid=32, nlayers=2)).save_pretrained(model)

    def run(*args) -> str:
        return _cli(root, *args)

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


def test_bench_run_fine_tunes_a_token_checkpoint_and_shows_what_it_covers(tmp_path: Path):
    """A tiny scGPT checkpoint through the CLI: a gene no control cell expresses has no token, so its
    knock-down is uncovered (train mean, coverage below 1) and the others are fine-tuned."""
    cells, root = _knock_down_screen(tmp_path, silent="BRCA2")
    vocab = {t: i for i, t in enumerate(["<pad>", "<cls>", "<eoc>", *GENES])}
    torch.manual_seed(0)
    model = tmp_path / "tiny-scgpt"
    config = ScGPTConfig(vocab_size=len(vocab), d_model=16, nhead=2, d_hid=32, nlayers=2, dropout=0.0, n_bins=11)
    ScGPTModel(config).save_pretrained(model)
    (model / "vocab.json").write_text(json.dumps(vocab))
    _cli(root, "bench", "run", "--task", "kd", "--set", "random-8", "--evaluator", "knn", "--evaluator", "ft-isko",
         "--evaluator", "ft-indexing", "--fold", "0", "--model-option", f"model_path={model}",
         "--model-option", "adapter=scgpt", "--model-option", f"cells={cells}",
         "--model-option", "control_column=perturbation", "--model-option", "control_value=control",
         "--model-option", "epochs=25", "--model-option", "learning_rates=0.01", "--model-option", "head=[16,16]")  # fmt: skip
    l2, task = _l2_rows(root, tmp_path, "kd")
    test = task.folds == 0
    silent_in_test = "BRCA2" in set(np.asarray(task.pert_ids)[test])
    for ev in ("ft-isko", "ft-indexing"):
        row = l2.loc[ev]
        assert row.set == "finetune(tiny-scgpt)"
        assert row.coverage == pytest.approx(1 - silent_in_test / test.sum())
        chosen = json.loads(row.chosen)
        assert chosen["mode"] == ev[3:] and 0 < chosen["task_genes_from_model"] <= 1
    train_mean = l2[l2.set == "train_mean"].value.item()
    print({ev: l2.loc[ev].value for ev in ("ft-isko", "ft-indexing", "knn")}, "train mean", train_mean)
    assert l2.loc["ft-isko"].value < train_mean


def test_bench_run_fine_tunes_a_geneformer_checkpoint_on_the_papalexi_screen(data_dir, tmp_path: Path):
    """The shared Papalexi 2021 THP-1 CRISPR-KO screen (real counts) and a tiny random Geneformer-style
    checkpoint over its genes: ft-isko and ft-indexing rows sit beside kNN, their coverage the share of
    test knock-outs whose gene has a token (control profile for ISKO, some control cell for Indexing)."""
    import pickle

    from pertstore.consumers.finetune import FinetuneSettings, TokenInputs
    from pertstore.consumers.finetune._run import _control_cells
    from pertstore.producers.expression.checkpoints import load_adapter
    from transformers import BertConfig, BertForMaskedLM

    screen = data_dir / "perturb" / "papalexi2021_thp1_crispr_ko.h5ad"
    symbols = list(ad.read_h5ad(screen, backed="r").var_names)
    tokens = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3} | {g: i + 4 for i, g in enumerate(symbols)}
    medians = {g: 1.0 for g in symbols}
    model = tmp_path / "tiny-geneformer"
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokens), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=128)  # fmt: skip
    BertForMaskedLM(config).save_pretrained(model)
    (model / "token_dictionary.pkl").write_bytes(pickle.dumps(tokens))
    (model / "gene_median_dictionary.pkl").write_bytes(pickle.dumps(medians))
    root = tmp_path / "store"
    assert runner.invoke(app, ["init", str(root)]).exit_code == 0
    _cli(root, "tasks", "build", screen, "--kind", "lfc", "--name", "papalexi", "--context", "THP-1",
         "--trials", "2", "--no-progress")  # fmt: skip
    with Store.open(root) as store:
        store.produce("random", source="random-8", params={"dim": 8})
    options = ["adapter=geneformer", f"model_path={model}", f"cells={screen}", "epochs=2", "learning_rates=0.01",
               "head=[8,8]", "batch_cells=16"]  # fmt: skip
    _cli(root, "bench", "run", "--task", "papalexi", "--set", "random-8", "--evaluator", "knn",
         "--evaluator", "ft-isko", "--evaluator", "ft-indexing", "--fold", "0",
         *[a for o in options for a in ("--model-option", o)])  # fmt: skip
    l2, task = _l2_rows(root, tmp_path, "papalexi")
    with Store.open(root) as store:
        adapter = load_adapter("geneformer", str(model), "cpu", max_length=None)
        cells = _control_cells(store, {"cells": str(screen)}, "THP-1", adapter.genes)
        inputs = TokenInputs(adapter, cells, "cpu", seed=FinetuneSettings().seed)
        genes = {g: i for i, g in enumerate(adapter.genes)}
    test = task.folds == 0
    targets = np.asarray(task.pert_ids)[test]
    assert len(targets) >= 2
    for ev in ("ft-isko", "ft-indexing"):
        has = inputs.coverable(ev[3:])
        expected = np.mean([t in genes and has[genes[t]] for t in targets])
        row = l2.loc[ev]
        assert row.set == "finetune(tiny-geneformer)" and row.coverage == pytest.approx(expected)
        assert np.isfinite(row.value) and json.loads(row.chosen)["mode"] == ev[3:]
    assert np.isfinite(l2[l2.set == "random-8"].value).all()
