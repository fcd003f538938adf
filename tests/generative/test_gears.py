"""GEARS end to end on the Norman data of the data directory, offline, driven from the CLI as the README does.

Tiny settings (one epoch, 20 training cells per perturbation, hidden size 16): the test proves the path
(GO input built from the data directory, trained per context and fold, LFC rows stored), not GEARS's
accuracy; docs/generative.md gives measured numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pertstore.consumers.tasks import load_task
from typer.testing import CliRunner

from pertstore import Store
from pertstore.cli import app
from pertstore.errors import InvalidInputError

runner = CliRunner()


def test_gears_runs_end_to_end_on_norman(store, data_dir, tmp_path):
    cells = data_dir / "perturb" / "norman2019_mcfaline2023_devel.h5ad"
    root = store.uri
    store.close()

    def run(*args):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output + repr(result.exception)
        return result

    run(
        "tasks",
        "build",
        cells,
        "--name",
        "norman-lfc",
        "--preset",
        "norman",
        "--batch-from-barcode",
        "--filter",
        "dataset=norman19",
        "--trials",
        "0",
        "--no-progress",
        "--store",
        root,
    )
    bench = [
        "bench",
        "run",
        "--task",
        "norman-lfc",
        "--evaluator",
        "gears",
        "--fold",
        "0",
        "--no-controls",
        "--gears",
        "epochs=1",
        "--gears",
        "hidden_size=16",
        "--gears",
        "max_cells_per_perturbation=20",
        "--store",
        root,
    ]
    missing = runner.invoke(app, bench)  # GEARS trains on cells too: never a silent fallback
    assert isinstance(missing.exception, InvalidInputError) and "--cells" in str(missing.exception)
    bad = runner.invoke(app, [*bench, "--gears", "epoch=1", "--cells", str(cells)])
    assert isinstance(bad.exception, InvalidInputError) and "epoch" in str(bad.exception)

    run(*bench, "--cells", cells)  # offline: GEARS would fail to download gene2go_all.pkl
    run("bench", "results", "--out", tmp_path / "res.csv", "--store", root)
    res = pd.read_csv(tmp_path / "res.csv")
    l2 = res[res.metric == "l2"]
    assert len(l2) == 1 and l2.evaluator.iloc[0] == "gears" and l2.set.iloc[0] == "gears-go"
    row = l2.iloc[0]
    assert row.value > 0 and row.value < 10

    # coverage: the test perturbations whose gene has a GO annotation in the data directory (pandas, independently)
    go = pd.read_csv(data_dir / "genes" / "go_annotations_human.tsv.gz", sep="\t", dtype=str)
    s = Store.open(root)
    task = load_task(s, "norman-lfc")
    s.close()
    test = [p for p, f in zip(task.pert_ids, task.folds) if f == 0]
    annotated = set(go.symbol)
    assert row.n_test == len(test)
    assert row.n_test_covered == sum(all(g in annotated for g in p.split("+")) for p in test)
    assert 0 < row.n_test_covered < row.n_test  # IER5L has no GO annotation: it gets the train mean

    run(*bench, "--cells", cells)  # resumable: a second run trains nothing and adds no row
    run("bench", "results", "--out", tmp_path / "again.csv", "--store", root)
    assert len(pd.read_csv(tmp_path / "again.csv")) == len(res)


def test_gears_refuses_folds_it_cannot_split():
    """GEARS's own split holds out 10% of the training perturbations; below 10 it would fail inside GEARS."""
    from pertstore.consumers.generative import ContextCells
    from pertstore.consumers.generative._gears import GearsConfig, GearsPredictor

    perts = [f"G{i}" for i in range(12)]
    labels = np.array([""] * 10 + [p for p in perts for _ in range(3)])
    cells = ContextCells(np.ones((labels.size, 4), np.float32), labels, np.zeros(labels.size).astype(str), labels == "")
    go = {p: {"GO:1"} for p in perts[:9]}  # three perturbations outside the GO graph
    model = GearsPredictor(GearsConfig(), go)
    assert model.covers("G0") and not model.covers("G10") and not model.covers("G0+G10")
    with pytest.raises(InvalidInputError, match="at least 10"):
        model.fit(cells, ["a", "b", "c", "d"], perts)
