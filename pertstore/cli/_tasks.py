"""``pertstore tasks ...``: build, import, list, show and export perturbation tasks."""

from __future__ import annotations

import json
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import pandas as pd
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pertstore._dask import dask_client
from pertstore.cli._main import Format, FormatOpt, StoreOpt, _emit, _local, _print_table, console

tasks_app = typer.Typer(
    help="Perturbation tasks: LFC or DEG targets, folds and experimental error.", no_args_is_help=True
)

KindOpt = Annotated[str, typer.Option("--kind", "-k", help="lfc or deg")]
NameOpt = Annotated[str, typer.Option("--name", "-n", help="Task name (a path segment: letters, digits, _ . -)")]
TaskVersionOpt = Annotated[Optional[str], typer.Option("--version", "-v", help="Task version [default: latest]")]
STAGES = {"cells": "reading cells", "bootstrap": "bootstrap trials"}


def register(app: typer.Typer) -> None:
    app.add_typer(tasks_app, name="tasks")


@contextmanager
def _progress(enabled: bool):
    """A rich progress bar fed by ``progress(stage, done, total)`` callbacks (None when disabled)."""
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        ids: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in ids:
                ids[stage] = bar.add_task(STAGES.get(stage, stage), total=total)
            bar.update(ids[stage], completed=done, total=total)

        yield update


@tasks_app.command("build")
def build(
    file: Annotated[Path, typer.Argument(help="h5ad file or AnnData-zarr directory with cells", exists=True)],
    name: NameOpt,
    kind: KindOpt = "lfc",
    preset: Annotated[
        Optional[str],
        typer.Option(
            help="The reference's settings for one of the paper's datasets: essential, norman, tahoe, sciplex "
            "(options given below override them)"
        ),
    ] = None,
    pert_col: Annotated[Optional[str], typer.Option(help="obs column with perturbation labels")] = None,
    control_col: Annotated[Optional[str], typer.Option(help="Boolean obs column marking controls")] = None,
    control_label: Annotated[Optional[str], typer.Option(help="Label of control cells in --pert-col")] = None,
    batch_col: Annotated[Optional[str], typer.Option(help="obs column with batches")] = None,
    batch_from_barcode: Annotated[
        Optional[bool],
        typer.Option("--batch-from-barcode", help="Batch = the gem-group suffix of each cell barcode (ACGT...-3)"),
    ] = None,
    context_col: Annotated[Optional[str], typer.Option(help="obs column with the context (cell line)")] = None,
    context: Annotated[
        Optional[str],
        typer.Option("--context", "-c", help="Context name when the file has no context column, e.g. THP-1"),
    ] = None,
    dose_col: Annotated[Optional[str], typer.Option(help="obs column with doses")] = None,
    dose: Annotated[
        Optional[float],
        typer.Option(help="Keep perturbed cells at this dose (default with --dose-col: every dose, labels name@dose)"),
    ] = None,
    dose_as_context: Annotated[
        Optional[bool],
        typer.Option("--dose-as-context", help="Every dose a context of its own (folds by perturbation shared)"),
    ] = None,
    alias_col: Annotated[
        Optional[list[str]],
        typer.Option(
            help="obs column with other ids of a perturbation (Broad id, SMILES, Entrez), tried when its "
            "label does not resolve; repeat"
        ),
    ] = None,
    keep: Annotated[
        Optional[list[str]],
        typer.Option("--filter", help="Keep cells with COLUMN=VALUE (repeat; e.g. pass_filter=full)"),
    ] = None,
    exclude: Annotated[Optional[list[str]], typer.Option(help="Perturbation label to leave out; repeat")] = None,
    exclude_context: Annotated[Optional[list[str]], typer.Option(help="Context to leave out; repeat")] = None,
    genes: Annotated[
        Optional[str],
        typer.Option(help="Gene universe: all, coding (protein-coding), or a file with one gene name per line"),
    ] = None,
    normalise_kept: Annotated[
        Optional[bool], typer.Option("--normalise-kept", help="Normalise counts over the kept genes only")
    ] = None,
    layer: Annotated[Optional[str], typer.Option(help="Use layers[LAYER] instead of X")] = None,
    input: Annotated[
        Optional[str],
        typer.Option("--input", help="auto, counts, log1p / log (used as is) or differential (z-scores: averaged)"),
    ] = None,
    variant: Annotated[
        Optional[str], typer.Option(help="auto, large or small (batch-size variant) [default: the preset's, else auto]")
    ] = None,
    min_cells: Annotated[
        Optional[int],
        typer.Option(help="DEG: minimum cells per (perturbation, batch) [default: the preset's, else 30]"),
    ] = None,
    alpha: Annotated[float, typer.Option(help="DEG: adjusted p-value threshold")] = 0.05,
    trials: Annotated[
        int,
        typer.Option(
            help="Bootstrap trials of the experimental error (0: none; LFC: outer x 10 inner, the reference's "
            "10 x 10 = 100; DEG: replicates, the reference ran 20)"
        ),
    ] = 100,
    error_seed: Annotated[int, typer.Option(help="Seed of the bootstrap (the reference's 5050)")] = 5050,
    seed: Annotated[int, typer.Option(help="Seed of the folds")] = 0,
    n_folds: Annotated[int, typer.Option(help="Folds over perturbations")] = 5,
    folds_per_context: Annotated[
        bool, typer.Option(help="Draw folds per context instead of sharing them across contexts")
    ] = False,
    combinatorial: Annotated[bool, typer.Option(help="Keep combinatorial labels (A+B)")] = False,
    entity: Annotated[
        Optional[str], typer.Option(help="Resolve labels as gene or molecule ids [default: the preset's, else gene]")
    ] = None,
    backed: Annotated[bool, typer.Option(help="Leave X on disk and stream row blocks")] = False,
    scheduler: Annotated[
        Optional[str], typer.Option(help="Dask scheduler address: sum row ranges on its workers")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars")] = True,
    store: StoreOpt = None,
) -> None:
    """Compute a task (targets, folds, experimental error) from single-cell data and store it."""
    obs_filter = None
    if keep:
        obs_filter = {}
        for item in keep:
            col, sep, value = item.partition("=")
            if not sep or not col:
                raise typer.BadParameter(f"--filter takes COLUMN=VALUE, not {item!r}")
            obs_filter.setdefault(col, []).append(value)
    gene_universe: Any = genes
    if genes not in (None, "all", "coding"):
        path = Path(genes)
        if not path.is_file():
            raise typer.BadParameter(f"--genes takes all, coding or a file of gene names; no file {genes!r}")
        gene_universe = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    with (
        _local(store) as s,
        _progress(progress) as tick,
        dask_client(scheduler) if scheduler else nullcontext() as client,
    ):
        task, version = s.tasks.build(
            file,
            name=name,
            kind=kind,
            preset=preset,
            entity=entity,
            variant=variant,
            min_cells=min_cells,
            pert_col=pert_col,
            control_col=control_col,
            control_label=control_label,
            batch_col=batch_col,
            batch_from_barcode=batch_from_barcode,
            context_col=context_col,
            context=context,
            dose_col=dose_col,
            dose=dose,
            dose_as_context=dose_as_context,
            alias_cols=alias_col or None,
            obs_filter=obs_filter,
            exclude=exclude or None,
            exclude_contexts=exclude_context or None,
            genes=gene_universe,
            normalise_kept=normalise_kept,
            layer=layer,
            input=input,
            combinatorial=combinatorial,
            backed=backed or scheduler is not None,
            build_options={
                "alpha": alpha,
                "trials": trials,
                "error_seed": error_seed,
                "seed": seed,
                "n_folds": n_folds,
                "folds_per_context": folds_per_context,
                "progress": tick,
                "client": client,
            },
        )
    _summary(task, name, version)
    for note in task.report.get("notes", []):
        if note.startswith(("preset", "variant 'auto'")):
            console.print(f"[dim]{note}[/]")


@tasks_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="h5ad, parquet or csv response matrix", exists=True)],
    name: NameOpt,
    kind: Annotated[
        Optional[str], typer.Option("--kind", "-k", help="lfc or deg [default: deg when values are -1/0/1]")
    ] = None,
    context: Annotated[str, typer.Option("--context", "-c", help="Context of every row when the file has none")] = "",
    seed: Annotated[int, typer.Option(help="Seed of the folds made when the file has none")] = 0,
    entity: Annotated[str, typer.Option(help="Resolve perturbation labels as gene or molecule ids")] = "gene",
    combo_sep: Annotated[str, typer.Option(help="Separator of combinatorial labels (A+B)")] = "+",
    store: StoreOpt = None,
) -> None:
    """Store a precomputed task (the paper's published layout or a parquet/csv matrix), keeping its folds;
    its perturbations are resolved through the store's registry."""
    with _local(store) as s, console.status(f"importing {file}"):
        task, version = s.tasks.import_file(
            file, name=name, kind=kind, context=context, seed=seed, entity=entity, combo_sep=combo_sep
        )
    _summary(task, name, version)


@tasks_app.command("deg-table")
def deg_table(
    file: Annotated[
        Path, typer.Argument(help="Long table of significant genes (.tsv[.gz], .csv, .parquet)", exists=True)
    ],
    name: NameOpt,
    pert_col: Annotated[str, typer.Option(help="Column of the perturbation")] = "perturbagen",
    gene_col: Annotated[str, typer.Option(help="Column of the changed gene")] = "entrez_gene_id",
    direction_col: Annotated[str, typer.Option(help="Column with up / down")] = "direction",
    status_col: Annotated[str, typer.Option(help="Column that --status selects on")] = "status",
    status: Annotated[
        Optional[str], typer.Option(help="Keep rows with this status (e.g. measured landmarks); 'any' keeps all")
    ] = "measured",
    min_genes: Annotated[int, typer.Option(help="Keep perturbations with at least this many genes")] = 5,
    min_perts: Annotated[
        int, typer.Option(help="Gene universe: genes listed for at least this many kept perturbations")
    ] = 1,
    context: Annotated[str, typer.Option("--context", "-c", help="Context of the task")] = "",
    entity: Annotated[str, typer.Option(help="Resolve perturbations as gene or molecule ids")] = "gene",
    seed: Annotated[int, typer.Option(help="Seed of the folds")] = 0,
    store: StoreOpt = None,
) -> None:
    """Store a DEG task from a long table of significant genes (perturbation, gene, up/down; others 0)."""
    with _local(store) as s, console.status(f"reading {file}"):
        task, version = s.tasks.import_deg_table(
            file,
            name=name,
            pert_col=pert_col,
            gene_col=gene_col,
            direction_col=direction_col,
            status_col=status_col,
            status=None if status == "any" else status,
            min_genes=min_genes,
            min_perts=min_perts,
            context=context,
            entity=entity,
            seed=seed,
        )
    _summary(task, name, version)
    for note in task.report.get("notes", []):
        console.print(f"[dim]{note}[/]")


@tasks_app.command("ls")
def ls(
    name: Annotated[Optional[str], typer.Argument(help="Only this task's versions")] = None,
    store: StoreOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """List stored tasks."""
    from pertstore.consumers.tasks import list_tasks

    with _local(store) as s:
        df = list_tasks(s, name)
    if format is Format.table:
        df["created_at"] = df["created_at"].astype(str).str[:16]
        df["latest"] = np.where(df["latest"], "*", "")
        df = df.drop(columns=["path"]).rename(columns={"n_perts": "perts", "n_genes": "genes", "created_at": "created"})
    _emit(df, format, title=f"{len(df)} task version(s)")


@tasks_app.command("show")
def show(name: str, version: TaskVersionOpt = None, store: StoreOpt = None) -> None:
    """Show one task: shape, contexts, folds, error limits, recipe and what was left out."""
    from pertstore.consumers.tasks import load_task, task_version

    with _local(store) as s:
        task = load_task(s, name, version)
    _summary(task, name, task_version(task.recipe))
    console.print_json(json.dumps({"recipe": task.recipe, "notes": task.report.get("notes", [])}, default=str))


@tasks_app.command("export")
def export(
    name: str,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .h5ad file")],
    version: TaskVersionOpt = None,
    store: StoreOpt = None,
) -> None:
    """Write a stored task as AnnData (obs = perturbations, var = genes, X = targets)."""
    from pertstore.consumers.tasks import load_task

    if out.suffix != ".h5ad":
        raise typer.BadParameter(f"--out must end in .h5ad, not {out.name!r}")
    with _local(store) as s:
        task = load_task(s, name, version)
    out.parent.mkdir(parents=True, exist_ok=True)
    task.to_anndata().write_h5ad(out)
    console.print(f"wrote [bold]{out}[/]: {len(task.pert_ids):,} perturbations x {len(task.gene_ids):,} genes")


def _summary(task, name: str, version: str) -> None:
    t = Table(title=f"task [bold]{name}[/] version {version} ({task.kind})")
    limits = task.error.fold_limits(task.folds, task.contexts) if task.error is not None else None
    primary = {"lfc": "l2", "deg": "f1"}.get(task.kind, "")
    for c in ("context", "perturbations", "genes", "folds", f"error limit ({primary}) per fold"):
        t.add_column(c)
    contexts = pd.Series(task.contexts)
    for ctx in sorted(contexts.unique()):
        rows = (contexts == ctx).to_numpy()
        sizes = np.bincount(task.folds[rows][task.folds[rows] >= 0])
        limit = ""
        if limits is not None:
            mine = limits[(limits["context"] == ctx) & (limits["metric"] == primary)]
            limit = "/".join(f"{v:.4g}" for v in mine.sort_values("fold")["value"])
        t.add_row(ctx or "(none)", f"{int(rows.sum()):,}", f"{len(task.gene_ids):,}", "/".join(map(str, sizes)), limit)
    _print_table(t)
    if task.error is not None:
        p = task.error.params
        how = (
            f"{p.get('outer')} x {p.get('inner')} trials, q{task.error.quantile:g} per perturbation, mean per fold"
            if task.error.kind == "lfc"
            else f"{p.get('trials')} trials, q{task.error.quantile:g} per fold"
        )
        console.print(
            f"experimental error as {p.get('reference')} (seed {p.get('seed')}, {how}); "
            f"metrics: {', '.join(task.error.metrics)}"
        )
    dropped = len(task.report.get("dropped", {}).get("pert_id", []))
    pairs = len(task.report.get("discarded_pairs", {}).get("pert_id", []))
    if dropped or pairs:
        console.print(f"left out: {dropped} perturbation(s), {pairs} (perturbation, batch) pair(s)")
    _resolution(task)


def _resolution(task) -> None:
    """How many perturbations resolved to an entity; the unresolved and ambiguous labels."""
    n = len(task.pert_ids)
    resolved = sum(e is not None for e in task.entity_ids)
    style = "green" if resolved == n else ("red" if resolved == 0 else "yellow")
    console.print(
        f"[{style}]{resolved:,} of {n:,} perturbation(s) resolved to an entity[/]"
        + ("" if resolved else ": no embedding set can cover this task")
    )
    unresolved = task.report.get("unresolved", [])
    if unresolved:
        console.print(
            f"unresolved ({len(unresolved)}): {', '.join(map(str, unresolved[:20]))}"
            + (" ..." if len(unresolved) > 20 else "")
        )
    ambiguous = task.report.get("ambiguous", {})
    for label, candidates in list(zip(ambiguous.get("label", []), ambiguous.get("candidates", [])))[:20]:
        console.print(f"ambiguous: {label} -> {candidates.replace(';', ', ')}")
