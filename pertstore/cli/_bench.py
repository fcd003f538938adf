"""``pertstore bench run|results`` and ``pertstore report``: the paper's benchmark over the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import typer

from pertstore.cli._main import Format, FormatOpt, StoreOpt, _emit, _local, _print_table, _table, console

bench_app = typer.Typer(help="Evaluate embedding sets on stored tasks (the paper's protocol).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
    app.command("report")(report)


@bench_app.command("run")
def run(
    task: Annotated[Optional[str], typer.Option(help="Stored task name")] = None,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="Set (source) to evaluate; repeat")] = None,
    evaluators: Annotated[
        Optional[list[str]],
        typer.Option(
            "--evaluator",
            help="knn, lasso, ridge, mlp, fusion, flow, diffusion, schrodinger, gears, ft-isko, ft-indexing, ft-gnn; "
            "with --setting zeroshot|fewshot: mlp, onehot, context_mean, knn, state; repeat",
        ),
    ] = None,
    contexts: Annotated[Optional[list[str]], typer.Option("--context", help="Only these contexts; repeat")] = None,
    folds: Annotated[Optional[list[int]], typer.Option("--fold", help="Only these folds; repeat")] = None,
    plan: Annotated[Optional[Path], typer.Option(help="YAML plan: runs: [{task, sets, evaluators, ...}]")] = None,
    coverage: Annotated[str, typer.Option(help="train_mean (paper) or covered")] = "train_mean",
    min_coverage: Annotated[
        float,
        typer.Option(min=0, max=1, help="Refuse a set covering less than this fraction of a context's perturbations"),
    ] = 0.0,
    controls: Annotated[bool, typer.Option(help="Also run the controls")] = True,
    scheduler: Annotated[Optional[str], typer.Option(help="Dask scheduler address for the model fits")] = None,
    workers: Annotated[int, typer.Option(help="Fit on a local Dask cluster of this many workers (0: in-process)")] = 0,
    fusion: Annotated[
        Optional[list[str]],
        typer.Option(
            help="Fusion setting KEY=VALUE (variant=full, tuned=true, max_epochs=20, ...; docs/fusion.md); repeat"
        ),
    ] = None,
    model_option: Annotated[
        Optional[list[str]],
        typer.Option(
            help="ft-isko / ft-indexing / ft-gnn / state option KEY=VALUE "
            "(model_path=DIR, cells=FILE, network=FILE); repeat"
        ),
    ] = None,
    setting: Annotated[
        str,
        typer.Option(help="perturbation (paper), zeroshot or fewshot (unseen contexts; --context = held out)"),
    ] = "perturbation",
    cells: Annotated[
        Optional[Path],
        typer.Option(
            help="For --evaluator flow, diffusion, schrodinger or gears: the cells file the task was built from "
            "(checked by SHA-256)"
        ),
    ] = None,
    generative: Annotated[
        Optional[list[str]],
        typer.Option(help="Generative setting KEY=VALUE (epochs=50, pca_dim=50, ...; docs/generative.md); repeat"),
    ] = None,
    gears: Annotated[
        Optional[list[str]],
        typer.Option(help="GEARS setting KEY=VALUE (epochs=20, hidden_size=64, ...; docs/generative.md); repeat"),
    ] = None,
    store: StoreOpt = None,
) -> None:
    """Run evaluations; runs already stored are skipped (an interrupted plan resumes)."""
    from pertstore.consumers.evaluators import Plan, run_plan

    if plan is not None:
        plans = Plan.from_yaml(plan)
    elif task and (sets or "gears" in (evaluators or [])):  # GEARS alone needs no set (its own gene graph)
        from pertstore.cli._fusion import parse_options

        plans = [
            Plan(
                task=task,
                sets=list(sets or []),
                evaluators=list(evaluators or ["knn"]),
                contexts=contexts or None,
                folds=folds or None,
                controls=controls,
                coverage=coverage,
                min_coverage=min_coverage,
                fusion=parse_options(fusion),
                setting=setting,
                model_options=parse_options(model_option),
                cells=str(cells) if cells else None,
                generative=parse_options(generative),
                gears=parse_options(gears),
            )
        ]
    else:
        raise typer.BadParameter("give --task and --set (repeatable), or --plan FILE")
    import warnings
    from contextlib import ExitStack

    from pertstore.consumers.evaluators import CoverageWarning

    with (
        _local(store) as s,
        ExitStack() as stack,
        console.status("evaluating") as status,
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always", CoverageWarning)
        client = None
        if scheduler or workers:
            from distributed import Client, LocalCluster

            target = scheduler or stack.enter_context(
                LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None)
            )
            client = stack.enter_context(Client(target, set_as_default=False))
        total, coverage_tables = 0, []
        for p in plans:
            frame = run_plan(s, p, progress=lambda msg: status.update(msg), client=client)
            total += len(frame)
            coverage_tables.append(frame.attrs["coverage"].assign(task=p.task))
    table = pd.concat(coverage_tables, ignore_index=True)
    table["covered"] = [f"{c:,} / {n:,} ({f:.0%})" for c, n, f in zip(table.n_covered, table.n_perts, table.fraction)]
    _print_table(_table(table[["task", "set", "context", "covered"]], title="perturbations covered by each set"))
    for w in caught:
        if issubclass(w.category, CoverageWarning):
            console.print(f"[yellow]warning:[/] {w.message}")
    console.print(f"{total} result rows stored; see `pertstore bench results` and `pertstore report`")


@bench_app.command("results")
def results(
    task: Annotated[Optional[str], typer.Option(help="Only this task")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Write .csv or .parquet")] = None,
    store: StoreOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """The stored results: one row per (task, context, fold, set, evaluator, metric)."""
    from pertstore.consumers.evaluators import results as load

    with _local(store) as s:
        df = load(s, task)
    if out is None:
        main = (
            df[df.metric.isin(["l2", "f1"])]
            .groupby(["task", "context", "set", "evaluator", "metric"], sort=False)
            .agg(value=("value", "mean"), n_test=("n_test", "sum"), covered=("n_test_covered", "sum"))
        )
        main["value"] = main["value"].map(lambda v: f"{v:.4g}")
        main["test covered"] = [
            f"{c:,} / {n:,} ({c / n:.0%})" if n else ""
            for c, n in zip(main.pop("covered").fillna(0).astype(int), main.pop("n_test").fillna(0).astype(int))
        ]
        _emit(
            main.reset_index(),
            format,
            title=f"{len(df)} result rows (mean over folds; test perturbations covered, summed over folds)",
        )
    elif out.suffix == ".parquet":
        df.to_parquet(out, index=False)
    else:
        df.to_csv(out, index=False)


def report(
    out: Annotated[Path, typer.Option(help="Folder for the figures, tables and report.html")] = Path("report"),
    task: Annotated[Optional[str], typer.Option(help="Only this task")] = None,
    store: StoreOpt = None,
) -> None:
    """Draw the benchmark report as HTML: the paper's figures (box plots, ranks, CCA clustermap), gap closed and
    Wilcoxon tests paired over perturbations (docs/evaluation.md, "Report")."""
    from pertstore.consumers.evaluators import results as load
    from pertstore.consumers.reports import write_report

    with _local(store) as s:
        df = load(s, task)
        if df.empty:
            raise typer.BadParameter("no results stored yet; run `pertstore bench run` first")
        with console.status("drawing the report"):
            path = write_report(df, out, store=s, on_note=lambda note: console.print(f"[yellow]note:[/] {note}"))
    console.print(f"report: {path}")
