"""The generative evaluators of ``bench run`` (``--evaluator flow|diffusion|schrodinger|gears``).

One model per (context, fold, set, method), trained on the fold's covered training perturbations, scored
on its test perturbations like every other evaluator (test perturbations without an embedding get the
train mean, or are left out with ``coverage="covered"``). Each run is saved as it finishes, so an
interrupted plan resumes run by run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np

from pertstore.errors import InvalidInputError

from ._config import METHODS, GenerativeConfig
from ._gears import GEARS_SET, GearsConfig, GearsPredictor, gene2go, genes_of
from ._model import GenerativePredictor


def run_generative(
    store,
    task,
    plan,
    version: str,
    contexts: list[str],
    done: set,
    cache: dict,
    methods: list[str],
    save: Callable[[list[dict], list[dict]], None],
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Run ``methods`` for ``plan``'s sets over ``contexts`` and folds, skipping runs in ``done``.

    ``cache[(set, context)]`` holds ``(values, covered, set_version)`` (or None) as the runner fetched
    them; ``save(results, errors)`` stores one run's rows. Returns every result row made.
    """
    from pertstore.consumers.evaluators._metrics import coverage_counts, l2_per_perturbation, regression_metrics

    from ._cells import task_cells

    if unknown := sorted(set(methods) - set(METHODS) - {"gears"}):
        raise InvalidInputError(f"unknown generative evaluator(s) {unknown}; known: {', '.join(METHODS)}, gears")
    if task.kind != "lfc":
        raise InvalidInputError(f"the generative evaluators predict LFCs; task {plan.task!r} is a {task.kind} task")
    try:
        config = GenerativeConfig(**(plan.generative or {}))
        gears_config = GearsConfig(**(plan.gears or {}))
    except ValueError as e:
        raise InvalidInputError(f"generative settings: {e}") from None
    all_contexts, all_folds = np.asarray(task.contexts), np.asarray(task.folds)
    units = []
    for context in contexts:
        rows = np.flatnonzero(all_contexts == context)
        folds = sorted(set(all_folds[rows].tolist()) - {-1}) if plan.folds is None else plan.folds
        units += [
            (context, fold, source, m)
            for source in plan.sets
            for fold in folds
            for m in methods
            if m != "gears" and (context, fold, source, m) not in done and cache.get((source, context)) is not None
        ]
        if "gears" in methods:  # on its own gene graph, whatever the sets
            units += [
                (context, fold, GEARS_SET, "gears") for fold in folds if (context, fold, GEARS_SET, "gears") not in done
            ]
    if not units:
        return []
    if not plan.cells:
        raise InvalidInputError(
            f"the generative evaluators train on cells: pass --cells FILE, the file task "
            f"{plan.task!r} was built from ({task.recipe.get('input', {}).get('file')!r})"
        )
    go = _gears_go(store, task, gears_config) if "gears" in methods else {}
    cells = task_cells(task, plan.cells, sorted({u[0] for u in units}))
    out = []
    for context, fold, source, method in units:
        rows = np.flatnonzero(all_contexts == context)
        y, labels = task.targets[rows], np.asarray(task.pert_ids)[rows]
        if method == "gears":
            x, covered, set_version = None, np.array([all(g in go for g in genes_of(p)) for p in labels]), ""
            if not covered.any():
                raise InvalidInputError(
                    f"GEARS predicts genetic perturbations: no perturbation of task {plan.task!r} "
                    f"in context {context!r} has all its genes in the GO graph"
                )
        else:
            x, covered, set_version = cache[(source, context)]
        test = all_folds[rows] == fold
        train = ~test & covered
        if progress is not None:
            progress(f"{plan.task} {context} fold {fold}: {method} on {source}")
        t0 = time.perf_counter()
        pred = np.repeat(y[~test].mean(axis=0)[None], int(test.sum()), axis=0)
        has = covered[test]
        chosen: dict = {"config": (gears_config if method == "gears" else config).model_dump()}
        if method == "gears" and train.sum() >= 2 and has.any():
            gears = GearsPredictor(gears_config, go).fit(cells[context], list(task.gene_ids), labels[train].tolist())
            t1 = time.perf_counter()
            pred[has] = gears.predict(labels[test][has].tolist())
            chosen.update(
                train_seconds=t1 - t0, predict_seconds_per_perturbation=(time.perf_counter() - t1) / int(has.sum())
            )
        elif method != "gears" and train.sum() >= 2 and has.any():
            model = GenerativePredictor(method, config).fit(
                cells[context], labels[train].tolist(), x[train], progress=progress
            )
            t1 = time.perf_counter()
            pred[has] = model.predict(x[test][has])
            chosen.update(
                final_loss=model.history[-1]["loss"],
                train_seconds=t1 - t0,
                seconds_per_epoch=float(np.mean([h["seconds"] for h in model.history])),
                predict_seconds_per_perturbation=(time.perf_counter() - t1) / int(has.sum()),
            )
        else:
            chosen["note"] = "too few covered perturbations"
        used = has if plan.coverage == "covered" else np.ones(int(test.sum()), bool)
        truth, pred = y[test][used], pred[used]
        base = {
            "task": plan.task,
            "task_version": version,
            "context": context,
            "fold": int(fold),
            "set": source,
            "set_version": set_version,
            "evaluator": method,
            "chosen": json.dumps(chosen),
            "coverage": float(has.mean()) if test.any() else float("nan"),
            "seconds": time.perf_counter() - t0,
            **coverage_counts(covered, test),
        }
        results = [{**base, "metric": m, "value": v} for m, v in regression_metrics(truth, pred).items()]
        errors = [
            {
                "task": plan.task,
                "task_version": version,
                "context": context,
                "fold": int(fold),
                "set": source,
                "evaluator": method,
                "pert_id": p,
                "l2": float(e),
                "f1": None,
            }
            for p, e in zip(labels[test][used], l2_per_perturbation(truth, pred))
        ]
        save(results, errors)
        out.extend(results)
    return out


def _gears_go(store, task, config: GearsConfig) -> dict[str, set[str]]:
    """GO sets of the task's measured and perturbed genes, from ``config.go_annotations`` or the data directory."""
    from pathlib import Path

    path = config.go_annotations
    if path is None:
        data_dir = store.settings.data_dir
        if not data_dir:
            raise InvalidInputError(
                "GEARS needs GO annotations: set PERTSTORE_DATA_DIR (genes/go_annotations_human"
                ".tsv.gz) or pass --gears go_annotations=FILE"
            )
        path = Path(data_dir) / "genes" / "go_annotations_human.tsv.gz"
    genes = set(map(str, task.gene_ids)) | {g for p in task.pert_ids for g in genes_of(str(p))}
    return gene2go(path, sorted(genes))
