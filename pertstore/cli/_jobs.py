"""``pertstore jobs ...`` and ``pertstore producers ls``: batch producer jobs from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pertstore.cli._main import Format, FormatOpt, StoreOpt, _emit, _local, _open, _print_table, _table, console, err
from pertstore.cli.progress import JobBar
from pertstore.producers import describe_producers

jobs_app = typer.Typer(help="Batch jobs: compute the sets of a recipes file on Dask.", no_args_is_help=True)
producers_app = typer.Typer(help="The installed producers.", no_args_is_help=True)

SchedulerOpt = Annotated[
    Optional[str],
    typer.Option("--scheduler", help="Dask scheduler address (tcp://HOST:PORT) [default: an in-process LocalCluster]"),
]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", "-w", help="Workers of the local cluster [default: 2]")]


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(producers_app, name="producers")


def _run(call, progress: bool):
    if not progress:
        return call(None)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        return call(JobBar(bar))


def _report(state, store) -> None:
    status = store.jobs.status(state.job_id)
    _print_table(
        _table(
            status["recipes"][
                [
                    "source",
                    "context",
                    "version",
                    "state",
                    "items_total",
                    "items_done",
                    "items_failed",
                    "items_reused",
                    "seconds",
                    "error",
                ]
            ],
            title=f"job {state.job_id}: {state.state}",
        )
    )
    if state.state != "done":
        raise typer.Exit(1)


@jobs_app.command("submit")
def submit(
    recipes: Annotated[Path, typer.Argument(help="Recipes YAML file", exists=True, dir_okay=False)],
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    max_failed: Annotated[float, typer.Option(help="Fraction of failed entities a set may have")] = 0.05,
    dry_run: Annotated[bool, typer.Option(help="Only list the recipes and their versions")] = False,
    progress: Annotated[bool, typer.Option(help="Show a live progress bar")] = True,
    store: StoreOpt = None,
) -> None:
    """Submit a recipes file: compute every set that is not in the store yet (or on a server: --store http://...)."""
    with _local(store) if dry_run else _open(store) as s:
        s.release_catalog = True
        if dry_run:
            rows = [
                {
                    "source": p.recipe.source,
                    "context": p.recipe.context,
                    "producer": p.recipe.producer,
                    "version": p.recipe.version,
                    "exists": s.has(p.recipe),
                }
                for p in s.jobs.plan(recipes)
            ]
            import pandas as pd

            _print_table(_table(pd.DataFrame(rows), title=str(recipes)))
            return
        job_id = s.jobs.create(recipes, max_failed_fraction=max_failed, scheduler=scheduler)
        err.print(f"job [bold]{job_id}[/] submitted (resume it with `pertstore jobs resume {job_id}`)")
        state = _run(lambda cb: s.jobs.run(job_id, scheduler=scheduler, n_workers=workers, progress=cb), progress)
        _report(state, s)


@jobs_app.command("resume")
def resume(
    job_id: str,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    force: Annotated[bool, typer.Option(help="Resume even if the job's driver seems alive")] = False,
    progress: Annotated[bool, typer.Option(help="Show a live progress bar")] = True,
    store: StoreOpt = None,
) -> None:
    """Finish an interrupted job without recomputing finished work."""
    with _open(store) as s:
        s.release_catalog = True
        state = _run(
            lambda cb: s.jobs.resume(job_id, scheduler=scheduler, n_workers=workers, progress=cb, force=force), progress
        )
        _report(state, s)


@jobs_app.command("ls")
def ls(store: StoreOpt = None, format: FormatOpt = Format.table) -> None:
    """List jobs, newest first."""
    with _open(store) as s:
        _emit(s.jobs.ls(), format)


@jobs_app.command("status")
def status(job_id: str, store: StoreOpt = None) -> None:
    """A job's state, progress and per-recipe figures."""
    with _open(store) as s:
        st = s.jobs.status(job_id)
    done, total = int(st["items_done"]), int(st["items_total"])
    console.print(f"job [bold]{job_id}[/]: {st['state']}  {done}/{total} items, {int(st['items_failed'])} failed")
    if st.get("error"):
        console.print(f"[red]{st['error']}[/]")
    _print_table(_table(st["recipes"].drop(columns=["position"])))


@jobs_app.command("cancel")
def cancel(job_id: str, store: StoreOpt = None) -> None:
    """Cancel a job: nothing of it is published."""
    with _open(store) as s:
        console.print(f"job {job_id}: {s.jobs.cancel(job_id)}")


@jobs_app.command("failures")
def failures(
    job_id: str,
    out: Annotated[Optional[Path], typer.Option(help="Write the ledger to .csv/.parquet")] = None,
    store: StoreOpt = None,
) -> None:
    """The per-entity failure ledger of a job."""
    with _open(store) as s:
        df = s.jobs.failures(job_id)
    if out is None:
        _print_table(_table(df.head(200), title=f"{len(df)} failed entities"))
    elif out.suffix == ".parquet":
        df.to_parquet(out, index=False)
    else:
        df.to_csv(out, index=False)


@producers_app.command("ls")
def producers_ls(format: FormatOpt = Format.table) -> None:
    """Installed producers with their parameters and defaults."""
    _emit(describe_producers(), format)
