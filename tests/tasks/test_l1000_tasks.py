"""The L1000 files of the data directory as tasks, driven the user's way (CLI subprocesses on the real files).

Each target is rebuilt here with pandas from the same file: the overexpression DEG labels from the
table's directions, the dose-response LFC from the file's own ``log2fc_vs_plate_DMSO`` layer, the
knockdown targets from the replicate z-scores.
"""

from __future__ import annotations

import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
from pertstore.catalog import read_repurposing_hub
from pertstore.consumers.tasks import load_task

from pertstore import Store

OVEREXPRESSION = "perturb/lincs_l1000_overexpression_dysreg.tsv.gz"
DOSES = "perturb/lincs_ljp_a375_kinase_inhibitors_l1000.h5ad"
KNOCKDOWN = "perturb/cmap_shrna_knockdown_l1000.h5ad"


def cli(*args) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pertstore.cli", *map(str, args)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_l1000_tasks_from_the_cli_equal_pandas_constructions(store, data_dir):
    root = store.uri
    store.register_molecules(
        read_repurposing_hub(data_dir / "molecules" / "repurposing_hub.tsv.gz"), alias_cols=["broad_id", "compound_id"]
    )
    store.close()
    out = cli("tasks", "deg-table", data_dir / OVEREXPRESSION, "--name", "oe-deg", "--store", root)
    assert "817 of 1,989 perturbations" in out
    cli(
        "tasks",
        "build",
        data_dir / DOSES,
        "--name",
        "ljp-lfc",
        "--preset",
        "l1000-dose",
        "--trials",
        0,
        "--no-progress",
        "--store",
        root,
    )
    cli(
        "tasks",
        "build",
        data_dir / KNOCKDOWN,
        "--name",
        "kd-lfc",
        "--preset",
        "l1000-knockdown",
        "--trials",
        0,
        "--no-progress",
        "--store",
        root,
    )
    with Store.open(root) as s:
        oe, ljp, kd = (load_task(s, n) for n in ("oe-deg", "ljp-lfc", "kd-lfc"))

    table = pd.read_csv(data_dir / OVEREXPRESSION, sep="\t", dtype=str)
    table = table[table.status == "measured"]
    kept = table.groupby("perturbagen").size().loc[lambda n: n >= 5].index
    table = table[table.perturbagen.isin(kept)]
    labels = (
        table.assign(v=table.direction.map({"up": 1, "down": -1}))
        .pivot(index="perturbagen", columns="entrez_gene_id", values="v")
        .fillna(0)
    )
    assert sorted(oe.pert_ids) == sorted(labels.index) and sorted(oe.gene_ids) == sorted(labels.columns)
    np.testing.assert_array_equal(oe.targets, labels.loc[oe.pert_ids, oe.gene_ids].to_numpy())
    assert all(e is not None for e in oe.entity_ids)  # Entrez ids resolve through the gene registry

    a = ad.read_h5ad(data_dir / DOSES)
    obs = a.obs[~a.obs.is_control]
    layer = pd.DataFrame(a.layers["log2fc_vs_plate_DMSO"], index=a.obs_names, columns=a.var_names)
    # the layer's wells averaged per (drug, dose, plate), then over plates: the plate-matched LFC
    keys = [obs.perturbation.astype(str).values, obs.dose_uM.round(6).values, obs.batch.astype(str).values]
    ref = layer.loc[obs.index].groupby(keys).mean().groupby(level=[0, 1]).mean()
    doses = ljp.recipe["dose_contexts"]
    index = pd.MultiIndex.from_arrays([ljp.pert_ids, [round(doses[c], 6) for c in ljp.contexts]])
    assert len(index) == len(ref) and set(index) == set(ref.index)
    # the layer is stored as float32 (rounding ~2e-6 at log2 values of ~15); pertstore averages X in float64
    np.testing.assert_allclose(ljp.targets, ref.loc[index].to_numpy(), atol=1e-5)
    folds = pd.DataFrame({"drug": ljp.pert_ids, "fold": ljp.folds}).groupby("drug").fold.nunique()
    assert (folds == 1).all() and len(set(ljp.contexts)) == 6  # each drug in one fold at every dose
    unresolved = {p for p, e in zip(ljp.pert_ids, ljp.entity_ids) if e is None}
    assert unresolved == set(ljp.report["unresolved"]) and len(unresolved) >= 20  # listed, rows kept
    assert set(ljp.pert_ids) == set(obs.perturbation)  # nothing dropped

    k = ad.read_h5ad(data_dir / KNOCKDOWN)
    wells = k.obs[~k.obs.is_control]
    z = pd.DataFrame(k.X, index=k.obs_names).loc[wells.index].groupby(wells.perturbation.astype(str).values).mean()
    np.testing.assert_allclose(kd.targets, z.loc[kd.pert_ids].to_numpy(), atol=1e-6)
    assert kd.recipe["params"]["variant"] == "differential" and len(kd.pert_ids) == 85
