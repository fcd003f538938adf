"""Task presets against independent scanpy implementations of the reference's preprocessing scripts.

Essential, Tahoe and sci-Plex cells are synthetic (Poisson counts), written with the column names,
control labels, doses, plates and QC fields of the real files, because the data directory does not
hold those datasets; Norman goes through its preset on the real file of the data directory.
Each reference is re-implemented here from its script (``pseudobulk_*.py``, ``deg_*.py``) with
scanpy, as the script does it, and must give the same LFC (1e-6) and the same DEG labels.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from pertstore.catalog import default_gene_table
from pertstore.consumers.tasks import get_preset, load_task
from task_helpers import NORMAN
from typer.testing import CliRunner

from pertstore.cli import app

runner = CliRunner()


def run(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def _genes(n_coding: int = 24, n_other: int = 6) -> list[str]:
    table = default_gene_table()
    coding = table[table.gene_type == "protein-coding"].symbol.head(n_coding).tolist()
    other = table[table.gene_type == "ncRNA"].symbol.head(n_other).tolist()
    return coding + other


def _counts(obs: pd.DataFrame, genes: list[str], seed: int, effect_of) -> ad.AnnData:
    """Poisson counts with a per-batch shift and a per-perturbation effect on two genes."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(2.0, 1.0, size=len(genes))
    rates = np.tile(base, (len(obs), 1))
    for b in obs["_batch"].unique():
        rates[(obs["_batch"] == b).to_numpy()] *= rng.uniform(0.7, 1.4, size=len(genes))
    for label, k in effect_of.items():
        rows = (obs["_pert"] == label).to_numpy()
        rates[rows, k % len(genes)] *= 4.0
        rates[rows, (k + 5) % len(genes)] *= 0.25
    x = sp.csr_matrix(rng.poisson(rates * rng.uniform(0.5, 2.0, size=(len(obs), 1))).astype(np.float32))
    return ad.AnnData(X=x, obs=obs.drop(columns=["_batch", "_pert"]), var=pd.DataFrame(index=genes))


def essential_cells(gene_ids: list[str]) -> ad.AnnData:
    """Replogle-style cells: ``gene_id`` (Ensembl ids, ``non-targeting``), ``gem_group``, ``cell_line``."""
    rows = []
    rng = np.random.default_rng(1)
    perts = gene_ids[:6]
    for line in ("K-562", "Hep-G2"):
        for gem in range(1, 6):
            rows += [(line, gem, "non-targeting")] * 12
            for p in perts:
                rows += [(line, gem, p)] * int(rng.integers(4, 10))
    obs = pd.DataFrame(rows, columns=["cell_line", "gem_group", "gene_id"])
    obs["gene"] = obs["gene_id"]
    obs["is_control"] = obs["gene_id"] == "non-targeting"
    obs["soma_joinid"] = np.arange(len(obs))
    obs["_batch"], obs["_pert"] = obs["gem_group"].astype(str) + obs["cell_line"], obs["gene_id"]
    obs.index = [f"cell{i}" for i in range(len(obs))]
    return _counts(obs, _genes(), 1, {p: i for i, p in enumerate(perts)})


def drug_cells(kind: str) -> ad.AnnData:
    """Tahoe-style (``drugname_drugconc``, ``pass_filter``, DMSO_TF) or sci-Plex-style (``dose`` nM, Vehicle)."""
    rows = []
    drugs = ["Belinostat", "Dasatinib", "Dacinostat", "Undisclosed-77"] + (["Verteporfin"] if kind == "tahoe" else [])
    lines = ("CVCL_0023", "CVCL_0028", "CVCL_1571") if kind == "tahoe" else ("A549", "MCF7")
    doses = (0.5, 5.0) if kind == "tahoe" else (100.0, 10000.0)
    control = "DMSO_TF" if kind == "tahoe" else "Vehicle"
    for line in lines:
        for plate in ("plate1", "plate2", "plate3"):
            rows += [(line, plate, control, 0.0)] * 30
            for d in drugs:
                for dose in doses:
                    rows += [(line, plate, d, dose)] * (26 if plate != "plate3" or d != "Dasatinib" else 15)
    obs = pd.DataFrame(rows, columns=["cell_line", "plate", "drug", "dose"])
    rng = np.random.default_rng(2)
    if kind == "tahoe":
        obs["drugname_drugconc"] = [f"[('{d}', {c}, 'uM')]" for d, c in zip(obs.drug, obs.dose)]
        obs["pass_filter"] = np.where(rng.random(len(obs)) < 0.9, "full", "minimal")
        obs = obs.drop(columns=["dose"])
        obs["_pert"] = obs["drugname_drugconc"]
    else:
        obs["_pert"] = obs["drug"] + obs["dose"].astype(str)
    obs["_batch"] = obs["plate"] + obs["cell_line"]
    obs.index = [f"cell{i}" for i in range(len(obs))]
    effect = {p: i for i, p in enumerate(sorted(set(obs["_pert"])))}
    return _counts(obs, _genes(), 3, effect)


def _normalised(a: ad.AnnData) -> ad.AnnData:
    a = a.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    return a


def _mean(a: ad.AnnData, by: list[str]) -> ad.AnnData:
    out = sc.get.aggregate(a, by=by, func="mean")
    out.X = out.layers["mean"]
    return out


def reference_essential_lfc(a: ad.AnnData) -> pd.DataFrame:
    """pseudobulk_essential.py: mean per batch, mean over batches, minus the control, per cell line."""
    rows = {}
    for line in a.obs.cell_line.unique():
        b = _normalised(a[a.obs.cell_line == line])
        b.obs["is_control"] = b.obs["is_control"].astype(str)
        p = _mean(_mean(b, ["gene_id", "cell_line", "is_control", "gem_group"]), ["gene_id", "cell_line", "is_control"])
        ctrl = np.asarray(p[p.obs.is_control == "True"].X)[0]
        for name, x in zip(p.obs.gene_id[p.obs.is_control == "False"], np.asarray(p[p.obs.is_control == "False"].X)):
            rows[(line, str(name))] = x - ctrl
    return pd.DataFrame(rows, index=list(a.var_names)).T


def reference_plate_matched_lfc(a: ad.AnnData, pert_col: str, control: str) -> pd.DataFrame:
    """pseudobulk_tahoe.py / pseudobulk_sciplex3.py: mean per (plate, cell line, drug), the same plate's
    control subtracted, then the mean over plates; coding genes kept after."""
    b = _normalised(a)
    per = _mean(b, ["plate", "cell_line", pert_col])
    obs, x = per.obs.astype(str), np.asarray(per.X)
    rows = {}
    for (line, drug), idx in obs[obs[pert_col] != control].groupby(["cell_line", pert_col]).groups.items():
        deltas = []
        for i in idx:
            ctrl = (obs.cell_line == line) & (obs.plate == obs.loc[i, "plate"]) & (obs[pert_col] == control)
            deltas.append(x[obs.index.get_loc(i)] - x[np.flatnonzero(ctrl.to_numpy())[0]])
        rows[(line, drug)] = np.mean(deltas, axis=0)
    return pd.DataFrame(rows, index=list(a.var_names)).T


def reference_voted_deg(a: ad.AnnData, group_col: str, control: str, min_cells: int) -> pd.DataFrame:
    """deg_tahoe.py / deg_sciplex3.py per cell line: > min cells per (plate, drug), t-test per plate, vote."""
    out = {}
    for line in a.obs.cell_line.unique():
        b = _normalised(a[a.obs.cell_line == line])
        size = b.obs.groupby(["plate", group_col], observed=True)[group_col].transform("count")
        b = b[(size > min_cells).to_numpy()]
        votes = []
        for plate in b.obs.plate.unique():
            c = b[b.obs.plate == plate].copy()
            c.obs[group_col] = c.obs[group_col].astype(str)
            tested = sc.tl.rank_genes_groups(c, groupby=group_col, reference=control, method="t-test", copy=True)
            df = sc.get.rank_genes_groups_df(tested, group=None)
            if "group" not in df.columns:
                df["group"] = next(g for g in c.obs[group_col].unique() if g != control)
            df["vote"] = (df["pvals_adj"] < 0.05) * np.sign(df["scores"])
            votes.append(df[["group", "names", "vote"]])
        v = pd.concat(votes)
        counts = v.groupby(["group", "names", "vote"]).size().rename("n").reset_index()
        top = counts[counts.n == counts.groupby(["group", "names"]).n.transform("max")]
        label = top.groupby(["group", "names"]).vote.sum().apply(np.sign)
        for (g, gene), lab in label.items():
            out.setdefault((line, g), {})[gene] = lab
    return pd.DataFrame(out).T


def _task_frame(task) -> pd.DataFrame:
    return pd.DataFrame(
        task.targets, index=pd.MultiIndex.from_arrays([task.contexts, task.pert_ids]), columns=task.gene_ids
    )


def test_essential_preset_equals_the_reference_lfc_and_deg(store, gene_ids, tmp_path):
    a = essential_cells(gene_ids)
    a.write_h5ad(tmp_path / "essential.h5ad")
    task, _ = store.tasks.build(
        tmp_path / "essential.h5ad", name="ess-lfc", kind="lfc", preset="essential", build_options={"trials": 0}
    )
    ours = _task_frame(task)
    ref = reference_essential_lfc(a).loc[ours.index, ours.columns]
    np.testing.assert_allclose(ours.to_numpy(), ref.to_numpy(), atol=1e-6)
    assert task.recipe["params"]["variant"] == "small" and task.recipe["preset"]["name"] == "essential"
    # folds are shared: a perturbation has one fold in every cell line
    folds = pd.Series(task.folds, index=ours.index).groupby(level=1).nunique()
    assert (folds == 1).all() and set(task.contexts) == {"K-562", "Hep-G2"}

    deg_task, _ = store.tasks.build(
        tmp_path / "essential.h5ad", name="ess-deg", kind="deg", preset="essential", build_options={"trials": 0}
    )
    for line in ("K-562", "Hep-G2"):
        b = _normalised(a[a.obs.cell_line == line])
        b = b[(b.obs.groupby("gene_id", observed=True)["soma_joinid"].transform("count") > 30).to_numpy()].copy()
        b.obs["gene_id"] = b.obs["gene_id"].astype(str)
        tested = sc.tl.rank_genes_groups(b, groupby="gene_id", reference="non-targeting", method="t-test", copy=True)
        df = sc.get.rank_genes_groups_df(tested, group=None)
        df["deg"] = (df["pvals_adj"] < 0.05) * np.sign(df["scores"])
        ref = df.pivot(values="deg", columns="names", index="group")
        ours = _task_frame(deg_task).loc[line]
        assert sorted(ours.index) == sorted(ref.index)  # the same perturbations pass > 30 cells
        np.testing.assert_array_equal(ours.to_numpy(), ref.loc[ours.index, ours.columns].to_numpy())


@pytest.mark.parametrize("kind", ["tahoe", "sciplex"])
def test_drug_presets_equal_the_reference_plate_matched_lfc_and_voted_deg(store, tmp_path, kind):
    a = drug_cells(kind)
    a.write_h5ad(tmp_path / f"{kind}.h5ad")
    preset = get_preset(kind)
    task, _ = store.tasks.build(
        tmp_path / f"{kind}.h5ad", name=f"{kind}-lfc", kind="lfc", preset=kind, build_options={"trials": 0}
    )
    ours = _task_frame(task)
    if kind == "tahoe":
        ref_cells = a[
            (a.obs.pass_filter == "full").to_numpy()
            & ~a.obs.drug.isin(preset.exclude).to_numpy()
            & ~a.obs.cell_line.isin(preset.exclude_contexts).to_numpy()
            & a.obs.drugname_drugconc.str.contains(r", (?:5\.0|0\.0), ").to_numpy()
        ]
        control = "DMSO_TF"
    else:
        ref_cells = a[a.obs["dose"].isin([0.0, 10000.0]).to_numpy()]
        control = "Vehicle"
    coding = set(default_gene_table().query("gene_type == 'protein-coding'").symbol)
    ref = reference_plate_matched_lfc(ref_cells, "drug", control)
    ref = ref.loc[:, [g for g in ref.columns if g in coding]]
    assert list(ours.columns) == list(ref.columns)  # normalised over all genes, coding genes kept after
    np.testing.assert_allclose(ours.to_numpy(), ref.loc[ours.index].to_numpy(), atol=1e-6)
    assert sorted(ours.index) == sorted(ref.index)
    if kind == "tahoe":
        assert "CVCL_1571" not in set(task.contexts) and "Verteporfin" not in set(task.pert_ids)
    assert all(e is None for e in task.entity_ids)  # the test store registers no molecules: listed
    assert len(task.report["unresolved"]) == len(set(task.pert_ids))

    deg_task, _ = store.tasks.build(
        tmp_path / f"{kind}.h5ad", name=f"{kind}-deg", kind="deg", preset=kind, build_options={"trials": 0}
    )
    deg_cells = ref_cells[:, [g for g in a.var_names if g in coding]]  # DEG: coding genes, then normalised
    ref = reference_voted_deg(deg_cells, "drug", control, min_cells=20)
    ours = _task_frame(deg_task)
    assert sorted(ours.index) == sorted(ref.index)
    np.testing.assert_array_equal(ours.to_numpy(), ref.loc[ours.index, ours.columns].to_numpy())


def test_norman_preset_on_the_real_file_from_the_cli(store, data_dir):
    root = store.uri
    store.close()
    out = run(
        "tasks",
        "build",
        data_dir / NORMAN,
        "--name",
        "norman-lfc",
        "--preset",
        "norman",
        "--batch-from-barcode",
        "--filter",
        "dataset=norman19",
        "--trials",
        0,
        "--no-progress",
        "--store",
        root,
    )
    assert "preset 'norman'" in out
    from pertstore import Store

    with Store.open(root) as s:
        task = load_task(s, "norman-lfc")
    a = ad.read_h5ad(data_dir / NORMAN)
    a = a[(a.obs.dataset == "norman19").to_numpy() & ~a.obs.perturbation.str.contains("+", regex=False).to_numpy()]
    obs = a.obs.assign(gemgroup=a.obs_names.str.rsplit("-", n=1).str[1]).astype({"perturbation": str})
    x = a.X.toarray()  # log-normalised already: used as is
    ctrl = {
        g: x[((obs.gemgroup == g) & (obs.perturbation == "control")).to_numpy()].mean(0) for g in obs.gemgroup.unique()
    }
    ref = {}
    for p in sorted(set(obs.perturbation) - {"control"}):  # pseudobulk_norman.py: per gem group, then mean
        deltas = [
            x[((obs.gemgroup == g) & (obs.perturbation == p)).to_numpy()].mean(0) - ctrl[g]
            for g in sorted(obs.gemgroup[obs.perturbation == p].unique())
        ]
        ref[p] = np.mean(deltas, axis=0)
    ours = pd.DataFrame(task.targets, index=task.pert_ids, columns=task.gene_ids)
    assert sorted(ours.index) == sorted(ref)
    np.testing.assert_allclose(ours.to_numpy(), np.stack([ref[p] for p in ours.index]), atol=1e-6)
    assert task.recipe["params"]["variant"] == "large"


def test_a_preset_field_can_be_overridden_and_auto_is_explained(store, gene_ids, tmp_path):
    essential_cells(gene_ids).write_h5ad(tmp_path / "essential.h5ad")
    task, _ = store.tasks.build(
        tmp_path / "essential.h5ad",
        name="ess-large",
        kind="lfc",
        preset="essential",
        variant="large",
        build_options={"trials": 0},
    )
    assert task.recipe["params"]["variant"] == "large" and task.recipe["preset"]["variant"] == "large"
    auto, _ = store.tasks.build(
        tmp_path / "essential.h5ad",
        name="ess-auto",
        kind="lfc",
        pert_col="gene_id",
        control_label="non-targeting",
        batch_col="gem_group",
        build_options={"trials": 0, "folds_per_context": True},
    )
    assert any(n.startswith("variant 'auto' chose 'small': median") for n in auto.report["notes"])
    assert auto.recipe["params"]["folds"] == "per_context"
    with pytest.raises(Exception, match="no preset 'replogle'"):
        store.tasks.build(tmp_path / "essential.h5ad", name="x", preset="replogle")


def test_drug_presets_resolve_drug_names_through_the_molecule_registry(store, data_dir, tmp_path):
    drugs = pd.read_csv(data_dir / "molecules" / "sciplex3_drugs.tsv", sep="\t")
    store.register_molecules(drugs)
    drug_cells("sciplex").write_h5ad(tmp_path / "sciplex.h5ad")
    task, _ = store.tasks.build(
        tmp_path / "sciplex.h5ad", name="sciplex-lfc", kind="lfc", preset="sciplex", build_options={"trials": 0}
    )
    keys = dict(zip(drugs.name, drugs.inchikey))
    got = dict(zip(task.pert_ids, task.entity_ids))
    assert got["Dasatinib"] == keys["Dasatinib"] and got["Belinostat"] == keys["Belinostat"]
    assert got["Undisclosed-77"] is None and task.report["unresolved"] == ["Undisclosed-77"]  # listed, kept


def test_a_block_whose_last_cells_are_empty_is_normalised_as_scanpy_does():
    from pertstore.consumers.tasks._matrix import CellMatrix

    rng = np.random.default_rng(5)
    x = sp.vstack([sp.random(40, 30, density=0.3, random_state=1, format="csr"), sp.csr_matrix((3, 30))]).tocsr()
    x.data = np.round(x.data * 10) + 1
    names = np.arange(43).astype(str)
    kept = np.sort(rng.choice(30, 8, replace=False))
    expected = _normalised(ad.AnnData(X=x.copy())).X.toarray()
    got = CellMatrix(x.copy(), is_counts=True, obs_names=names, var_names=names[:30]).block(0, 43).to_csr()
    np.testing.assert_allclose(got.toarray(), expected, atol=1e-12)
    subset = CellMatrix(x.copy(), is_counts=True, obs_names=names, var_names=names[:30], genes=kept)
    np.testing.assert_allclose(subset.block(0, 43).to_csr().toarray(), expected[:, kept], atol=1e-12)
    renormalised = CellMatrix(
        x.copy(), is_counts=True, obs_names=names, var_names=names[:30], genes=kept, normalise_kept=True
    )
    np.testing.assert_allclose(
        renormalised.block(0, 43).to_csr().toarray(),
        _normalised(ad.AnnData(X=x[:, kept].copy())).X.toarray(),
        atol=1e-12,
    )


def test_plate_matched_error_leaves_out_plates_without_controls(store, tmp_path):
    """A drug's cells on a plate that has no control cells are left out of the plate-matched bootstrap
    (as of its LFC); before, building such a task failed with a reshape error."""
    a = drug_cells("sciplex")
    no_ctrl = ((a.obs.plate == "plate3") & (a.obs.drug == "Vehicle")).to_numpy()
    a = a[~no_ctrl].copy()
    a.write_h5ad(tmp_path / "sciplex.h5ad")
    task, _ = store.tasks.build(
        tmp_path / "sciplex.h5ad", name="sciplex-noctrl", kind="lfc", preset="sciplex", build_options={"trials": 4}
    )
    ref = reference_plate_matched_lfc(
        a[a.obs["dose"].isin([0.0, 10000.0]).to_numpy() & (a.obs.plate != "plate3").to_numpy()], "drug", "Vehicle"
    )
    ours = _task_frame(task)
    np.testing.assert_allclose(ours.to_numpy(), ref.loc[ours.index, ours.columns].to_numpy(), atol=1e-6)
    trials = task.error.trials  # [perturbations, trials, metrics]: every drug estimated
    assert trials.shape[:2] == (len(ours), 4) and np.isfinite(trials).all()
