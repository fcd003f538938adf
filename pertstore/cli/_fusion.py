"""``pertstore fusion tune``: the reference's Optuna search for the fusion model, kept in the store."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from pertstore.cli._main import StoreOpt, _local, console

fusion_app = typer.Typer(help="The fusion model over several sets (the paper's integration).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(fusion_app, name="fusion")


def parse_options(options: list[str] | None) -> dict:
    """``KEY=VALUE`` pairs (values read as YAML: numbers, booleans, lists) as a dict."""
    import yaml

    out = {}
    for item in options or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


@fusion_app.command("tune")
def tune(
    task: Annotated[str, typer.Option(help="Stored task name")],
    sets: Annotated[list[str], typer.Option("--set", help="Set (source) to fuse; repeat")],
    variant: Annotated[str, typer.Option(help="simple or full (the reference's models)")] = "simple",
    trials: Annotated[int, typer.Option(min=1, help="Finished trials the study should reach")] = 100,
    fold: Annotated[Optional[int], typer.Option(help="Fold whose test perturbations are left out [first]")] = None,
    contexts: Annotated[Optional[list[str]], typer.Option("--context", help="Only these contexts; repeat")] = None,
    option: Annotated[
        Optional[list[str]],
        typer.Option("--option", "-o", help="Fusion setting KEY=VALUE for every trial (e.g. max_epochs=20); repeat"),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the TPE sampler")] = 0,
    store: StoreOpt = None,
) -> None:
    """Search depth, learning rate and context injection (Optuna TPE) on one fold's training perturbations.

    The study lives in the store (``fusion-studies.db`` beside the catalog): a second call continues
    it. `pertstore bench run --evaluator fusion --fusion tuned=true` then uses its best configuration.
    """
    import numpy as np

    from pertstore.consumers.fusion import plan_config, study_name, study_storage, task_inputs
    from pertstore.consumers.fusion import tune as run_tune
    from pertstore.consumers.tasks import load_task

    options = {**parse_options(option), "variant": variant}
    if options.pop("tuned", False):
        raise typer.BadParameter("tune starts from the reference preset; tuned=true is for `bench run`")
    with _local(store) as s:
        t = load_task(s, task)
        chosen = contexts or sorted(set(t.contexts))
        base, _ = plan_config(s, task, t.kind, list(sets), options)
        data = task_inputs(
            s,
            t,
            list(sets),
            chosen,
            control_source=options.get("control_source"),
            control_means=options.get("control_means"),
        )
        folds = sorted(set(data.folds.tolist()) - {-1})
        fold = folds[0] if fold is None else fold
        if fold not in folds:
            raise typer.BadParameter(f"task {task} has folds {folds}, not {fold}")
        train = (data.folds != fold) & data.covered
        name, storage = study_name(task, list(sets), variant), study_storage(s)
        with console.status(f"tuning {name}") as status:
            best = run_tune(
                data.x.subset(data.position[train]),
                data.y[train],
                groups=data.groups[train],
                base=base,
                n_trials=trials,
                storage=storage,
                study_name=name,
                seed=seed,
                progress=lambda i, loss: status.update(f"tuning {name}: trial {i}, val loss {loss:.4g}"),
            )
        from pertstore.consumers.fusion import stored_best

        _, origin = stored_best(storage, name)
    console.print(
        f"study {name!r} ({origin['n_trials']} trials, {int(np.sum(train))} training perturbations of fold "
        f"{fold}): best val loss {origin['val_loss']:.4g} at trial {origin['trial']}"
    )
    console.print("best: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.items()))
    console.print(f"stored in {storage}; use it with `pertstore bench run --evaluator fusion --fusion tuned=true`")
