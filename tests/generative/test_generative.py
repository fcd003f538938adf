"""Generative baselines: they learn a known shift, sample reproducibly, reduce to pseudobulks exactly, and run
from the CLI.

Synthetic cells (said so): every perturbed cell is a control-like cell of its batch shifted by ``e @ W``,
``e`` the perturbation's embedding, so the true LFC of a perturbation is ``e @ W``.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from pertstore.consumers.generative import ContextCells, GenerativeConfig, GenerativePredictor, Latent, pseudobulk_lfc
from typer.testing import CliRunner

from pertstore.cli import app
from pertstore.errors import InvalidInputError

TINY = {
    "pca_dim": 6,
    "hidden": 32,
    "depth": 1,
    "batch_size": 128,
    "cells_per_batch": 48,
    "timesteps": 50,
    "sb_steps": 30,
    "cond_dropout": 0.0,
}


def synthetic(
    seed: int = 0, n_perts: int = 20, genes: int = 10, dim: int = 3, cells: int = 24, batches: int = 2, n_ctrl: int = 48
) -> tuple[ContextCells, np.ndarray, np.ndarray]:
    """Cells, embeddings ``[perts, dim]`` and true shifts ``[perts, genes]``."""
    rng = np.random.default_rng(seed)
    w, emb = rng.normal(size=(dim, genes)), rng.normal(size=(n_perts, dim))
    base, offset = rng.uniform(1, 2, size=genes), rng.normal(scale=0.3, size=(batches, genes))
    x, label, batch = [], [], []
    for b in range(batches):
        x.append(base + offset[b] + 0.2 * rng.normal(size=(n_ctrl, genes)))
        label += [""] * n_ctrl
        batch += [f"b{b}"] * n_ctrl
        for p in range(n_perts):
            x.append(base + offset[b] + emb[p] @ w + 0.2 * rng.normal(size=(cells, genes)))
            label += [f"p{p}"] * cells
            batch += [f"b{b}"] * cells
    label = np.array(label)
    return ContextCells(np.vstack(x).astype(np.float32), label, np.array(batch), label == ""), emb, emb @ w


def _l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b, axis=1).mean())


@pytest.mark.parametrize("method, settings", [("flow", {}), ("diffusion", {}), ("schrodinger", {"sigma": 0.3})])
def test_each_method_learns_the_shift(method, settings):
    cells, emb, shift = synthetic()
    train, test = np.arange(15), np.arange(15, 20)
    model = GenerativePredictor(method, GenerativeConfig(**TINY, epochs=40, lr=3e-3, **settings))
    model.fit(cells, [f"p{i}" for i in train], emb[train])
    pred = model.predict(emb[test])
    error, baseline = _l2(pred, shift[test]), _l2(shift[train].mean(0)[None], shift[test])
    assert error < 0.6 * baseline, (method, error, baseline)
    assert model.history[-1]["loss"] < model.history[0]["loss"]


@pytest.mark.parametrize(
    "method, settings", [("flow", {}), ("diffusion", {}), ("schrodinger", {}), ("schrodinger", {"sde": False})]
)
def test_training_and_sampling_are_seeded(method, settings):
    cells, emb, _ = synthetic(n_perts=6, cells=8)
    perts = [f"p{i}" for i in range(4)]

    def run(seed: int) -> np.ndarray:
        config = GenerativeConfig(**{**TINY, "epochs": 1, "timesteps": 10, "sb_steps": 5, "seed": seed, **settings})
        return GenerativePredictor(method, config).fit(cells, perts, emb[:4]).predict(emb[4:])

    first = run(0)
    np.testing.assert_array_equal(first, run(0))
    assert not np.allclose(first, run(1))
    torch_state, numpy_state = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    run(0)  # the caller's RNG states are left alone
    assert torch.equal(torch_state, torch.random.get_rng_state())
    np.testing.assert_array_equal(numpy_state, np.random.get_state()[1])


def test_pseudobulk_reduction_equals_a_direct_computation():
    rng = np.random.default_rng(3)
    batch = rng.choice(["a", "b", "c"], size=90)
    pred, ctrl = rng.normal(size=(90, 5)), rng.normal(size=(90, 5))
    direct = pd.DataFrame(pred).groupby(batch).mean().mean() - pd.DataFrame(ctrl).groupby(batch).mean().mean()
    np.testing.assert_allclose(pseudobulk_lfc(pred, ctrl, batch), direct.to_numpy(), rtol=1e-12)

    # the predictor decodes the latent difference once; decoding every cell (scikit-learn) and reducing in genes
    # gives the same LFC
    x = rng.gamma(2.0, size=(200, 12))
    latent = Latent(4).fit(x)
    z_pred, z_ctrl = rng.normal(size=(90, 4)), rng.normal(size=(90, 4))
    genes = [latent.scaler.inverse_transform(latent.pca.inverse_transform(z)) for z in (z_pred, z_ctrl)]
    direct = pd.DataFrame(genes[0]).groupby(batch).mean().mean() - pd.DataFrame(genes[1]).groupby(batch).mean().mean()
    np.testing.assert_allclose(
        latent.decode_difference(pseudobulk_lfc(z_pred, z_ctrl, batch)), direct.to_numpy(), rtol=1e-9, atol=1e-12
    )


def test_bad_training_input_is_refused():
    cells, emb, _ = synthetic(n_perts=3, cells=4)
    with pytest.raises(InvalidInputError, match="no cells for training perturbation"):
        GenerativePredictor("flow", GenerativeConfig(**TINY, epochs=1)).fit(cells, ["p0", "nope"], emb[:2])


# --- the user's path: tasks build, import, bench run --evaluator flow ------------------------------------------

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def run(*args) -> str:
    result = _invoke(*args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def _cells_file(gene_ids: list[str], folder, n_perts: int = 10, n_genes: int = 15):
    """Counts h5ad: controls and 10 perturbations (Ensembl ids) in two batches; an embedding file for them."""
    rng = np.random.default_rng(0)
    perts = gene_ids[:n_perts]
    emb = rng.normal(size=(n_perts, 4))
    rate = rng.uniform(2, 6, size=n_genes)
    labels, batch, rows = [], [], []
    for b in ("1", "2"):
        for label, scale in [("control", np.ones(n_genes))] + [
            (p, np.exp(0.3 * emb[i] @ rng.normal(size=(4, n_genes)))) for i, p in enumerate(perts)
        ]:
            n = 40 if label == "control" else 12
            rows.append(rng.poisson(rate * scale, size=(n, n_genes)))
            labels += [label] * n
            batch += [b] * n
    obs = pd.DataFrame({"perturbation": labels, "batch": batch}, index=[f"c{i}" for i in range(len(labels))])
    ad.AnnData(
        X=np.vstack(rows).astype(np.float32), obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)])
    ).write_h5ad(folder / "cells.h5ad")
    ad.AnnData(X=emb.astype(np.float32), obs=pd.DataFrame(index=perts)).write_h5ad(folder / "emb.h5ad")


def test_bench_run_flow_from_the_cli(store, gene_ids, tmp_path):
    _cells_file(gene_ids, tmp_path)
    root = store.uri
    store.close()
    run(
        "tasks",
        "build",
        tmp_path / "cells.h5ad",
        "--name",
        "toy",
        "--context",
        "K562",
        "--trials",
        "0",
        "--no-progress",
        "--store",
        root,
    )
    run("import", tmp_path / "emb.h5ad", "--source", "emb", "--store", root)
    bench = [
        "bench",
        "run",
        "--task",
        "toy",
        "--set",
        "emb",
        "--evaluator",
        "flow",
        "--evaluator",
        "knn",
        "--fold",
        "0",
        "--no-controls",
        "--generative",
        "epochs=2",
        "--generative",
        "pca_dim=4",
        "--generative",
        "hidden=16",
        "--generative",
        "depth=1",
        "--store",
        root,
    ]

    missing = _invoke(*bench)  # the generative evaluators need the cells: never a silent fallback
    assert isinstance(missing.exception, InvalidInputError) and "--cells" in str(missing.exception)
    (tmp_path / "other.h5ad").write_bytes((tmp_path / "cells.h5ad").read_bytes() + b"\0")
    wrong = _invoke(*bench, "--cells", tmp_path / "other.h5ad")
    assert isinstance(wrong.exception, InvalidInputError) and "sha256" in str(wrong.exception)

    run(*bench, "--cells", tmp_path / "cells.h5ad")
    run("bench", "results", "--out", tmp_path / "res.csv", "--store", root)
    res = pd.read_csv(tmp_path / "res.csv")
    l2 = res[res.metric == "l2"]
    assert set(l2.evaluator) == {"flow", "knn"} and (l2.set == "emb").all() and np.isfinite(l2.value).all()
    flow = l2[l2.evaluator == "flow"].iloc[0]
    assert flow.n_test == 2 and flow.n_test_covered == 2 and flow.fold == 0
    run(*bench, "--cells", tmp_path / "cells.h5ad")  # stored runs are skipped: no new rows
    run("bench", "results", "--out", tmp_path / "again.csv", "--store", root)
    assert len(pd.read_csv(tmp_path / "again.csv")) == len(res)


def test_cells_read_back_reproduce_the_norman_task(store, data_dir):
    """The cells re-read through the recipe give back the stored task's LFC targets (real data)."""
    from pertstore.consumers.generative import task_cells

    path = data_dir / "perturb" / "norman2019_mcfaline2023_devel.h5ad"
    task, _ = store.tasks.build(
        path,
        name="norman-lfc",
        preset="norman",
        batch_from_barcode=True,
        obs_filter={"dataset": ["norman19"]},
        build_options={"trials": 0},
    )
    cells = task_cells(task, path)["k562"]
    assert cells.x.shape[1] == len(task.gene_ids) and cells.is_control.sum() == 100
    for i, pert in enumerate(task.pert_ids):  # large variant: per gem group perturbed minus control, averaged
        batches = [b for b in np.unique(cells.batch) if ((cells.label == pert) & (cells.batch == b)).any()]
        lfc = np.mean(
            [
                cells.x[(cells.label == pert) & (cells.batch == b)].mean(0)
                - cells.x[cells.is_control & (cells.batch == b)].mean(0)
                for b in batches
            ],
            axis=0,
        )
        np.testing.assert_allclose(lfc, task.targets[i], atol=1e-5)
