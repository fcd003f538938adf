from pathlib import Path

import pandas as pd
from rich.console import Console

from pertstore import Store
from pertstore._demo import run_demo


def test_demo_on_real_data(data_dir, tmp_path):
    recipes = Path(__file__).parent / "demo_recipes.yaml"
    tasks = ["papalexi-lfc", "papalexi-deg", "norman-lfc", "cmap-knockdown-lfc", "ljp-kinase-dose-lfc"]
    run_demo(tmp_path, data_dir, console=Console(file=open(tmp_path / "log.txt", "w")), recipes=recipes, tasks=tasks)
    store = Store.open(tmp_path / "store")
    assert store.catalog.n_entities("gene") == 77_614
    assert store.catalog.n_entities("molecule") > 6_500
    card = store.show("pbmc68k_pca_loadings")
    assert card.dim == 50 and card.n_rows > 250
    table = pd.read_parquet(tmp_path / "aligned.parquet")
    assert table.loc["SPI1", "covered:pbmc68k_pca_loadings"]
    assert store.show("pbmc68k-control-pca", context="PBMC").n_rows > 600  # PCA of pbmc68k_reduced's 765 genes
    # the job computed the recipes' sets, the tasks were built, the benchmark ran and the report exists
    assert {"random-gene-32", "control-pca", "maccs"} <= set(store.ls().source)
    assert set(tasks) == set(store.tasks.ls()["name"])
    from pertstore.consumers.evaluators import results

    res = results(store)
    assert {"random-gene-32", "control-pca", "train_mean", "experimental_error"} <= set(res.set)
    assert any(s.startswith("fusion(") for s in res.set)
    assert (tmp_path / "report" / "report.html").exists()
    assert (tmp_path / "report" / "fig_dose_ljp-kinase-dose-lfc.png").exists()          # molecule sets per dose
    assert {"maccs"} <= set(res[res.task == "ljp-kinase-dose-lfc"].set)
    # the sci-Plex 3 drugs resolve by name and by SMILES to the same InChIKey
    res = store.resolve(["Dexamethasone", "dexamethasone"], "molecule")
    assert res.ids[0] is not None and res.ids[0] == res.ids[1]
    store.close()
    # a second run reuses every set, task and evaluation and leaves the report as it was
    drawn = (tmp_path / "report" / "report.html").stat().st_mtime_ns
    with Store.open(tmp_path / "store") as again:
        n_results = len(results(again))
    log = tmp_path / "log2.txt"
    run_demo(tmp_path, data_dir, console=Console(file=open(log, "w"), width=200), recipes=recipes, tasks=tasks)
    assert "already in the store" in log.read_text() and "(0 already" not in log.read_text()
    assert (tmp_path / "report" / "report.html").stat().st_mtime_ns == drawn
    with Store.open(tmp_path / "store") as again:
        assert len(results(again)) == n_results
