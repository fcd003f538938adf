"""Fusion on the user's path: `tasks import`, `import`, `bench run --evaluator fusion`, `fusion tune`.

Synthetic files (said so) in the paper's published layout: a task h5ad whose responses are a
low-rank function of a latent per perturbation, and two embedding files that each see part of it.
"""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import optuna
import pandas as pd
from typer.testing import CliRunner

from pertstore.cli import app
from pertstore.errors import NotFoundError

runner = CliRunner()
N_PERTS, N_GENES = 120, 20
TINY = ["--fusion", "max_epochs=3", "--fusion", "d_model=20", "--fusion", "depth=1"]


def run(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def _files(gene_ids, folder):
    rng = np.random.default_rng(0)
    perts = gene_ids[:N_PERTS]
    latent = rng.normal(size=(N_PERTS, 6))
    y = latent @ rng.normal(size=(6, N_GENES)) + 0.1 * rng.normal(size=(N_PERTS, N_GENES))
    obs = pd.DataFrame(
        {"pert_id": perts, "gene_id": perts, "cell_line": "K562", "test_split": np.arange(N_PERTS) % 3},
        index=[f"p{i}" for i in range(N_PERTS)],
    )
    ad.AnnData(X=y.astype(np.float32), obs=obs, var=pd.DataFrame(index=gene_ids[1000 : 1000 + N_GENES])).write_h5ad(
        folder / "task.h5ad"
    )
    ctrl = np.abs(rng.normal(size=(N_GENES - 2, 8)))  # a per-context set over the read-out genes (as control-pca)
    ad.AnnData(X=ctrl.astype(np.float32), obs=pd.DataFrame(index=gene_ids[1002 : 1000 + N_GENES])).write_h5ad(
        folder / "ctrl.h5ad"
    )
    for name, cols, keep in (("left", slice(0, 3), 110), ("right", slice(3, 6), 90)):  # partly covered
        rows = rng.permutation(N_PERTS)[:keep]
        x = latent[rows, cols] @ rng.normal(size=(3, 16)) + 0.1 * rng.normal(size=(keep, 16))
        ad.AnnData(X=x.astype(np.float32), obs=pd.DataFrame(index=[perts[i] for i in rows])).write_h5ad(
            folder / f"{name}.h5ad"
        )


def test_bench_run_and_tune_from_the_cli(store, gene_ids, tmp_path):
    _files(gene_ids, tmp_path)
    root = store.uri
    store.close()
    run("tasks", "import", tmp_path / "task.h5ad", "--name", "toy", "--store", root)
    for name in ("left", "right"):
        run("import", tmp_path / f"{name}.h5ad", "--source", name, "--store", root)
    sets = ["--set", "left", "--set", "right"]
    run("bench", "run", "--task", "toy", *sets, "--evaluator", "fusion", "--no-controls", *TINY, "--store", root)
    run("bench", "results", "--out", tmp_path / "res.csv", "--store", root)
    res = pd.read_csv(tmp_path / "res.csv")
    l2 = res[(res.metric == "l2") & (res.evaluator == "fusion")]
    assert (
        set(res.evaluator) == {"fusion"}
        and set(l2.set) == {"fusion(left,right)"}
        and len(l2) == 3
        and np.isfinite(l2.value).all()
    )
    chosen = json.loads(l2.chosen.iloc[0])
    assert chosen["variant"] == "simple" and chosen["sets"] == ["left", "right"]
    assert chosen["config"]["depth"] == 1 and chosen["config"]["lr"] == 0.0009931092550184934  # reference lr kept
    assert (l2.n_test == 40).all() and (l2.n_test_covered <= 40).all()

    # the full model with the cell-line autoencoder over a per-context control set
    run("import", tmp_path / "ctrl.h5ad", "--source", "ctrl", "--context", "K562", "--store", root)
    run(
        "bench",
        "run",
        "--task",
        "toy",
        *sets,
        "--evaluator",
        "fusion",
        "--no-controls",
        "--fold",
        "0",
        *TINY,
        "--fusion",
        "variant=full",
        "--fusion",
        "cell_line=autoencoder",
        "--fusion",
        "control_source=ctrl",
        "--fusion",
        "autoencoder_hidden=[8]",
        "--store",
        root,
    )
    run("bench", "results", "--out", tmp_path / "res.csv", "--store", root)
    res = pd.read_csv(tmp_path / "res.csv")
    full = res[(res.metric == "l2") & (res.evaluator == "fusion-full")]
    assert len(full) == 1 and np.isfinite(full.value).all()  # a run of its own beside the simple one
    chosen = json.loads(full.chosen.iloc[0])
    assert chosen["config"]["cell_line"] == "autoencoder" and chosen["config"]["gated"]
    from pertstore.consumers.fusion import control_features_from_set

    from pertstore import Store

    with Store.open(root) as s:  # the autoencoder's input: each read-out gene's embedding norm, covered genes
        feats = control_features_from_set(s, "ctrl", gene_ids[1000 : 1000 + N_GENES], ["K562"])
    ctrl = ad.read_h5ad(tmp_path / "ctrl.h5ad")
    np.testing.assert_allclose(feats[0], np.linalg.norm(ctrl.X, axis=1), rtol=1e-5)

    # no study yet: tuned=true says so
    result = runner.invoke(
        app,
        [
            "bench",
            "run",
            "--task",
            "toy",
            *sets,
            "--evaluator",
            "fusion",
            "--no-controls",
            "--fusion",
            "tuned=true",
            "--store",
            root,
        ],
    )
    assert isinstance(result.exception, NotFoundError) and "pertstore fusion tune" in str(result.exception)

    out = run(
        "fusion",
        "tune",
        "--task",
        "toy",
        *sets,
        "--trials",
        "2",
        "-o",
        "max_epochs=2",
        "-o",
        "d_model=20",
        "--store",
        root,
    )
    assert "2 trials" in out and "best:" in out
    storage = f"sqlite:///{tmp_path / 'store' / 'fusion-studies.db'}"
    study = optuna.load_study(study_name="toy|simple|left,right", storage=storage)
    assert len(study.trials) == 2 and study.user_attrs["base"]["max_epochs"] == 2
    run(
        "fusion",
        "tune",
        "--task",
        "toy",
        *sets,
        "--trials",
        "3",
        "-o",
        "max_epochs=2",
        "-o",
        "d_model=20",
        "--store",
        root,
    )  # resumes: one more trial
    assert len(optuna.load_study(study_name="toy|simple|left,right", storage=storage).trials) == 3

    run(
        "bench",
        "run",
        "--task",
        "toy",
        *sets,
        "--evaluator",
        "fusion",
        "--no-controls",
        "--fusion",
        "tuned=true",
        "--fold",
        "0",
        "--store",
        root,
    )
    run("bench", "results", "--out", tmp_path / "tuned.csv", "--store", root)
    tuned = pd.read_csv(tmp_path / "tuned.csv")
    chosen = json.loads(tuned[tuned.evaluator == "fusion-tuned"].chosen.iloc[0])
    best = optuna.load_study(study_name="toy|simple|left,right", storage=storage).best_trial
    assert chosen["tuned"]["trial"] == best.number and chosen["config"]["depth"] == best.params["depth"]
    assert chosen["config"]["lr"] == best.params["lr"]
