"""``pertstore demo``: build a store from real data and fetch aligned embeddings."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
from rich.console import Console
from rich.table import Table

from pertstore._store import Store
from pertstore.catalog import read_repurposing_hub, read_sciplex3
from pertstore.store import write_aligned


def pbmc68k_reduced_path() -> Path:
    """scanpy's bundled ``pbmc68k_reduced`` (its ``varm['PCs']`` are real gene loadings)."""
    import importlib.util

    spec = importlib.util.find_spec("scanpy")  # located, not imported (importing scanpy takes seconds)
    if spec is None or spec.origin is None:
        raise RuntimeError("the demo needs scanpy for its bundled pbmc68k_reduced: pip install scanpy")
    return Path(spec.origin).parent / "datasets" / "10x_pbmc68k_reduced.h5ad"


RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml"

#: The gene sets the demo's aligned fetch shows (those present in the store).
ALIGNED = ["string-spectral", "string-node2vec", "string-gin", "go-vae", "pbmc68k_pca_loadings"]


def compute_sets(store: Store, recipes: Path, *, console: Console, molecules: bool = True):
    """Run the demo's recipes file as one job on an in-process Dask cluster, with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pertstore.cli.progress import JobBar
    from pertstore.producers import load_recipes

    specs = load_recipes(recipes)
    if not molecules:
        specs = [s for s in specs if "molecule" not in s.producer and "molecule" not in s.source]
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        return store.jobs.submit(specs, progress=JobBar(bar))


#: The demo's tasks: (name, file under the data directory, kind, build options).
DEMO_TASKS = [
    ("papalexi-lfc", "perturb/papalexi2021_thp1_crispr_ko.h5ad", "lfc", {"context": "THP-1"}),
    ("papalexi-deg", "perturb/papalexi2021_thp1_crispr_ko.h5ad", "deg", {"context": "THP-1"}),
    # the norman preset; this file has no gemgroup column (its barcodes carry it) and holds McFaline cells too
    (
        "norman-lfc",
        "perturb/norman2019_mcfaline2023_devel.h5ad",
        "lfc",
        {"preset": "norman", "batch_from_barcode": True, "obs_filter": {"dataset": ["norman19"]}},
    ),
    # bulk L1000 tasks large enough to rank on (docs/tasks.md "Bulk and table tasks")
    (
        "lincs-overexpression-deg",
        "perturb/lincs_l1000_overexpression_dysreg.tsv.gz",
        "deg-table",
        {"min_perts": 40},
    ),  # the landmark genes listed for >= 40 of the 817 overexpressed genes (157; >= 20 gives 444 and 3x the fits)
    ("cmap-knockdown-lfc", "perturb/cmap_shrna_knockdown_l1000.h5ad", "lfc", {"preset": "l1000-knockdown"}),
    ("ljp-kinase-dose-lfc", "perturb/lincs_ljp_a375_kinase_inhibitors_l1000.h5ad", "lfc", {"preset": "l1000-dose"}),
]

#: Per task: the entity kind of the sets evaluated on it, the evaluators (DEG tasks use the logistic model)
#: and, where the fits are slow, the only sets evaluated (the L1000 overexpression task: 817 x 157 labels).
#: Fusion runs on the two small Perturb-seq tasks and on the L1000 knockdown task (85 perturbations x 976
#: genes), the largest gene LFC task of the data directory, where the report's Figure 5 view compares it
#: with the best single set.
DEMO_BENCH = {
    "papalexi-lfc": ("gene", ["knn", "lasso", "fusion"], None),
    "papalexi-deg": ("gene", ["logistic"], None),
    "norman-lfc": ("gene", ["knn", "lasso", "fusion"], None),
    "lincs-overexpression-deg": ("gene", ["logistic"], ["string-spectral", "go-vae", "random-gene-128"]),
    "cmap-knockdown-lfc": ("gene", ["knn", "fusion"], None),
    "ljp-kinase-dose-lfc": ("molecule", ["knn"], None),
}
#: The fusion model's settings in the demo: the simple reference model with at most 60 epochs (patience 25)
#: per fold, so the three fusion tasks add about a minute on a 2-core machine.
DEMO_FUSION = {"max_epochs": 60, "lr": 1e-3}


def build_tasks(
    store: Store, data_dir: Path, *, console: Console, names: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """Build and store the demo's tasks (all, or those in ``names``) from the data directory's perturbation
    files, skipping stored ones."""
    from pertstore.consumers.tasks import list_tasks

    stored = set(list_tasks(store)["name"])
    out = []
    for name, rel, kind, options in DEMO_TASKS:
        if names is not None and name not in names:
            continue
        if name in stored:
            out.append((name, "stored"))
            continue
        with console.status(f"building task {name} ({kind}) from {rel}"):
            if kind == "deg-table":
                task, version = store.tasks.import_deg_table(data_dir / rel, name=name, **options)
            else:
                task, version = store.tasks.build(data_dir / rel, name=name, kind=kind, **options)
            out.append((name, version))
        resolved = sum(e is not None for e in task.entity_ids)
        console.print(
            f"task {name}: {len(task.pert_ids)} perturbations x {len(task.gene_ids)} genes "
            f"in {', '.join(sorted(set(task.contexts))) or 'one context'}; {resolved} resolved"
        )
    return out


def run_benchmark(store: Store, out: Path, *, console: Console) -> Path | None:
    """Evaluate the sets of each task's entity kind on every stored task (DEMO_BENCH's evaluators, the
    controls; the model fits on an in-process Dask cluster) and draw the report."""
    from pertstore._dask import dask_client
    from pertstore.consumers.evaluators import WARN_COVERAGE, CoverageWarning, Plan, plan_coverage, results, run_plan
    from pertstore.consumers.tasks import list_tasks

    sources = store.sources()
    tasks = sorted(set(list_tasks(store)["name"]))
    if sources.empty or not tasks:
        return None
    from sklearn.exceptions import ConvergenceWarning

    with (
        console.status("benchmark") as status,
        warnings.catch_warnings(record=True) as caught,
        dask_client() as client,
    ):
        warnings.simplefilter("ignore", ConvergenceWarning)  # Lasso's smallest alphas of the grid; CV picks alpha
        warnings.simplefilter("always", CoverageWarning)
        client.run(_quiet_convergence)  # the workers' Lasso warnings, as here
        for task in tasks:
            kind, evaluators, only = DEMO_BENCH.get(task, ("gene", ["knn"], None))
            sets = sorted(s for s in sources[sources.kind == kind].source if only is None or s in only)
            coverage = plan_coverage(store, Plan(task=task, sets=sets))
            empty = sorted(set(coverage[coverage.n_covered == 0].set) | (set(sets) - set(coverage.set)))
            if empty:  # e.g. a cell line's control PCA on another cell line's task
                console.print(
                    f"[yellow]task {task}: left out sets covering none of its perturbations in a "
                    f"context: {', '.join(empty)}[/]"
                )
            run_plan(
                store,
                Plan(task=task, sets=[s for s in sets if s not in empty], evaluators=evaluators, fusion=DEMO_FUSION),
                progress=lambda msg: status.update(f"benchmark: {msg}"),
                client=client,
            )
        table = results(store)
        page = _report_if_changed(table, out / "report", store, status)
    for w in caught:
        if issubclass(w.category, CoverageWarning):
            console.print(f"[yellow]warning:[/] {w.message}")
    main = table[table.metric.isin(["l2", "f1"])]
    main = main.groupby(["task", "context", "set", "evaluator", "metric"])[["value", "coverage"]].mean().reset_index()
    models = main[~main.set.isin(["train_mean", "no_change", "idealised", "experimental_error"])]
    # a set mostly filled with the train mean is not a model; where no set covers enough (molecules without a
    # structure), every set stays a candidate and the coverage column says so
    covered = models.coverage >= WARN_COVERAGE
    models = models[covered | ~covered.groupby([models.task, models.context], dropna=False).transform("any")]
    best = models.loc[
        [
            (g.value.idxmin() if g.metric.iloc[0] == "l2" else g.value.idxmax())
            for _, g in models.groupby(["task", "context"])
        ]
    ]
    view = Table(
        title="best set per task and context (mean over folds; L2 lower is better, F1 higher; among sets "
        f"covering >= {WARN_COVERAGE:.0%} of the test perturbations where any does)"
    )
    for c in ("task", "context", "set", "evaluator", "metric", "value", "coverage", "train mean", "experimental error"):
        view.add_column(c)
    for r in best.itertuples():
        ctl = main[(main.task == r.task) & (main.context == r.context)].set_index("set").value
        view.add_row(
            r.task,
            r.context or "-",
            r.set,
            r.evaluator,
            r.metric,
            f"{r.value:.3f}",
            f"{r.coverage:.0%}",
            f"{ctl.get('train_mean', float('nan')):.3f}",
            f"{ctl.get('experimental_error', float('nan')):.3f}",
        )
    console.print(view)
    _print_fusion(table, store, console)
    return page


def _quiet_convergence() -> None:
    """Ignore scikit-learn's ConvergenceWarning in this process (Lasso's smallest alphas; CV picks alpha)."""
    from sklearn.exceptions import ConvergenceWarning

    warnings.simplefilter("ignore", ConvergenceWarning)


def _print_fusion(table, store: Store, console: Console) -> None:
    """The report's Figure 5 view on the console: each fusion run against the best single set."""
    from pertstore.consumers.reports import fusion_vs_best, gap_closed

    producers = dict(store.catalog.list_sets()[["source", "producer"]].drop_duplicates().itertuples(index=False))
    fused = fusion_vs_best(gap_closed(table, producers))
    if fused.empty:
        return
    view = Table(
        title="fusion vs the best single set (medians over folds; gap closed: train mean 0, "
        "experimental error 1; the report's fig5_fusion_vs_best)"
    )
    for c in ("task", "context", "family", "fusion run", "best single set", "fusion", "best set", "gain"):
        view.add_column(c)
    for r in fused.itertuples():
        view.add_row(
            r.task,
            r.context or "-",
            r.evaluator_family,
            r.fusion_evaluator,
            r.best_set,
            f"{r.metric} {r.fusion_median:.3f} (gap {r.gap_closed_fusion:+.2f})",
            f"{r.best_median:.3f} (gap {r.gap_closed_best:+.2f})",
            f"{r.gain:+.2f}",
        )
    console.print(view)


def _report_if_changed(table, folder: Path, store: Store, status) -> Path:
    """Draw the report, unless ``folder`` holds one drawn from these same results (a rerun)."""
    import hashlib

    import pandas as pd

    from pertstore.consumers.reports import write_report

    digest = hashlib.sha256(pd.util.hash_pandas_object(table, index=False).values.tobytes()).hexdigest()
    stamp, page = folder / ".results-sha256", folder / "report.html"
    if page.exists() and stamp.exists() and stamp.read_text() == digest:
        return page
    status.update("drawing the report")
    page = write_report(table, folder, store=store)
    stamp.write_text(digest)
    return page


def run_demo(
    out: Path, data_dir: Path | None, *, console: Console, recipes: Path = RECIPES, tasks: Sequence[str] | None = None
) -> Store:
    """Create ``out/store``, register genes and molecules, compute the recipes' sets, build the tasks
    (``tasks``: a subset of :data:`DEMO_TASKS` by name), run the benchmark, draw the report, align."""
    t0 = time.perf_counter()
    store = Store.init(out / "store")
    with console.status("registering genes (org.Hs.eg.db 3.16.0, vendored)"):
        if store.catalog.n_entities("gene") == 0:
            store.register_genes()
    console.print(f"genes registered: {store.catalog.n_entities('gene'):,}")

    if data_dir is None:
        console.print(
            "[yellow]PERTSTORE_DATA_DIR is not set: skipping the molecules and Perturb-seq steps "
            "(see the README for where the public data comes from)[/]"
        )
    else:
        with console.status("registering molecules (sci-Plex 3, Drug Repurposing Hub)"):
            if store.catalog.n_entities("molecule") == 0:
                _, fail_sp = store.register_molecules(read_sciplex3(data_dir / "molecules" / "sciplex3_drugs.tsv"))
                _, fail_hub = store.register_molecules(
                    read_repurposing_hub(data_dir / "molecules" / "repurposing_hub.tsv.gz"),
                    alias_cols=["broad_id", "compound_id"],
                )
                for f in (fail_sp + fail_hub)[:5]:
                    console.print(f"  [yellow]not registered[/]: {f}")
        console.print(f"molecules registered: {store.catalog.n_entities('molecule'):,}")

    with console.status("importing pbmc68k_reduced varm['PCs'] (scanpy's bundled data)"):
        card = store.import_file(
            pbmc68k_reduced_path(),
            source="pbmc68k_pca_loadings",
            field="varm/PCs",
            drop_unresolved=True,
            drop_nonfinite=True,
        )
    console.print(
        f"set {card.source}@{card.version}: {card.n_rows} genes x {card.dim} dims "
        f"({len(card.failed)} genes skipped: not in the registry, or NaN loadings outside the PCA's genes)"
    )

    with (
        console.status("PCA of pbmc68k_reduced's cells (raw.X, log-normalised; genes as samples)"),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", FutureWarning)  # anndata moving the file's old .uns['neighbors'] layout
        card = store.produce(
            "control-pca",
            source="pbmc68k-control-pca",
            context="PBMC",
            max_failed_fraction=0.2,
            params={"dims": 50, "control_column": None, "layer": "raw"},
            inputs={"cells": str(pbmc68k_reduced_path())},
        )
    console.print(f"set {card.source}@{card.version} (context PBMC): {card.n_rows} genes x {card.dim} dims")

    state = compute_sets(store, recipes, console=console, molecules=data_dir is not None)
    console.print(
        f"job {state.job_id}: {state.state}, {len(state.recipes)} sets "
        f"({sum(r.state == 'exists' for r in state.recipes)} already in the store)"
    )

    report = None
    if data_dir is not None:
        build_tasks(store, data_dir, console=console, names=tasks)
        report = run_benchmark(store, out, console=console)

    genes = ["CD274", "STAT1", "IRF1", "JAK2", "IFNGR1", "CD3E", "MS4A1", "NKG7", "LYZ", "NOT_A_GENE"]
    if data_dir is not None:
        obs = ad.read_h5ad(data_dir / "perturb" / "papalexi2021_thp1_crispr_ko.h5ad", backed="r").obs
        genes = sorted(set(obs["target"].astype(str)) - {"non-targeting"}) + ["CD3E", "MS4A1", "LYZ"]
        console.print(f"aligning the {len(genes) - 3} genes knocked out in Papalexi 2021 (THP-1) plus 3 markers")
    stored = set(store.sources().source)
    sources = [s for s in ALIGNED if s in stored]
    ds = store.align(sources, genes)
    table = Table(title=f"aligned fetch: {len(genes)} ids x {len(sources)} sets (rows in the query's order)")
    for c in ("query", "entity_id", *sources):
        table.add_column(c)
    for q, e, covered in zip(ds["entity"].values, ds["entity_id"].values, ds["covered"].values):
        table.add_row(str(q), str(e), *("yes" if c else "-" for c in covered))
    console.print(table)
    path = write_aligned(ds, out / "aligned.parquet")
    console.print(f"[green]done in {time.perf_counter() - t0:.1f} s[/]: store at {store.uri}, aligned table at {path}")
    if report is not None:
        console.print(f"report: {report}")
    console.print(
        f"try: pertstore ls --store {store.uri}    pertstore bench results --store {store.uri}\n"
        f"     pertstore serve --store {store.uri}    (then: curl localhost:8000/v1/sets)\n"
        f"     python: Store.open({str(store.uri)!r}).align(['random-gene-128'], ['TP53', 'STAT1'])"
    )
    store.close()
    return store
