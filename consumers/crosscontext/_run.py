"""``bench run --setting zeroshot|fewshot``: the cross-context models over every held-out context.

Result rows have the runner's columns; ``context`` is the held-out context, ``evaluator`` is
``xc-<setting>``, ``set`` is the embedding set for ``mlp`` and the model name otherwise (``onehot``,
``context_mean``, ``cross_knn``), so the report draws one view per setting with the models side by
side (the paper's S12/S13 tables). Metrics: the runner's regression metrics plus ``mae``,
``overlap_at_n`` and ``discrimination_l1`` (``_metrics``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from pertstore.consumers.crosscontext._metrics import cross_metrics
from pertstore.consumers.crosscontext._models import (
    MODELS,
    MLPSettings,
    SplitData,
    context_mean,
    context_means,
    cross_knn,
    mlp,
)
from pertstore.consumers.crosscontext._splits import cross_context_splits
from pertstore.consumers.evaluators._metrics import l2_per_perturbation, regression_metrics

from pertstore.errors import InvalidInputError, NotFoundError

SET_NAMES = {"onehot": "onehot", "context_mean": "context_mean", "knn": "cross_knn"}


def _embeddings(store, task, source: str, tag: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """``(values, covered, version)`` of ``source`` for every task row, each row in its own context."""
    ctx = np.asarray(task.contexts, dtype=str)
    values, covered, versions = None, np.zeros(len(ctx), bool), set()
    for context in sorted(set(ctx.tolist())):
        rows = np.flatnonzero(ctx == context)
        try:
            ds = store.align([source], [task.entity_ids[r] or "" for r in rows], context=context, tag=tag)
        except NotFoundError:
            continue
        got = ds[source].values.astype(np.float64)
        if values is None:
            values = np.zeros((len(ctx), got.shape[1]))
        values[rows] = got
        covered[rows] = ds["covered"].values[:, 0].astype(bool)
        versions.add(ds.attrs["versions"][source])
    if values is None or not covered.any():
        raise InvalidInputError(f"set {source!r} covers none of task {task.name!r}'s perturbations in any context")
    return values, covered, ",".join(sorted(versions))


class _StateInputs:
    """STATE's inputs, written once per set in a work directory under the store's scratch space."""

    def __init__(self, store, task, plan, embedded: dict) -> None:
        import tempfile

        from pertstore.consumers.crosscontext._state import StateSettings

        options = plan.model_options
        if "cells" not in options:
            raise InvalidInputError("the cross-context state model needs the task's cells: --model-option cells=FILE")
        self.cells, self.task, self.embedded = str(options["cells"]), task, embedded
        fields = StateSettings.__dataclass_fields__
        given = {k[len("state_") :]: v for k, v in options.items() if k.startswith("state_") and k != "state_workdir"}
        unknown = sorted(set(given) - set(fields))
        if unknown:
            raise InvalidInputError(f"unknown state option(s) {unknown}; known: state_{', state_'.join(fields)}")
        self.settings = StateSettings(**given)
        self.root = Path(options.get("state_workdir") or tempfile.mkdtemp(prefix="pertstore-state-"))
        self.prepared: dict[str, tuple] = {}

    def predict(self, source: str, setting: str, split, data: SplitData) -> tuple[np.ndarray, dict]:
        from pertstore.consumers.crosscontext._state import run_state, write_inputs

        labels = np.asarray(self.task.pert_ids, dtype=str)
        x, covered, _ = self.embedded[source]
        if source not in self.prepared:
            vectors = {}
            for label, row in zip(labels[covered], x[covered]):
                vectors.setdefault(label, row)  # a label's vector in its first context (one per perturbation)
            counts = self.task.recipe.get("input", {}).get("type") == "counts"
            self.prepared[source] = write_inputs(
                self.cells, self.task.recipe["columns"], vectors, self.root / _safe(source), counts=counts
            )
        folder, features, means = self.prepared[source]
        test_labels = sorted(set(labels[split.test & covered].tolist()))
        work = self.root / _safe(source) / f"{setting}-{_safe(split.context)}-{split.fold}"
        got = run_state(
            setting, split.context, test_labels, folder, features, means[split.context], work, self.settings
        )
        pred = np.repeat(context_means(data)[split.context][None], int(split.test.sum()), axis=0)
        others = split.train & (data.ctx != split.context)
        for i, label in enumerate(labels[split.test]):
            if label in got:
                pred[i] = got[label]
            elif (others & (labels == label)).any():  # no embedding: the mean in the training contexts
                pred[i] = data.y[others & (labels == label)].mean(axis=0)
        return pred, {"state": self.settings.__dict__, "predicted": len(got), "workdir": str(work)}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def run_cross_context(
    store, plan, *, progress: Callable[[str], None] | None = None, settings: MLPSettings | None = None
) -> pd.DataFrame:
    """Run ``plan`` (``plan.setting`` ``zeroshot`` or ``fewshot``) and store its rows; returns them."""
    from pertstore.consumers.tasks import load_task, task_version

    settings = settings or MLPSettings()
    task = load_task(store, plan.task)
    if task.kind != "lfc":
        raise InvalidInputError(f"cross-context prediction needs an LFC task; {plan.task!r} is {task.kind}")
    unknown = sorted(set(plan.evaluators) - set(MODELS))
    if unknown:
        raise InvalidInputError(f"cross-context evaluators are {', '.join(MODELS)}; unknown: {', '.join(unknown)}")
    with_sets = [m for m in ("mlp", "state") if m in plan.evaluators]
    if with_sets and not plan.sets:
        raise InvalidInputError(f"the cross-context {', '.join(with_sets)} need(s) at least one --set (or use onehot)")
    version = task_version(task.recipe)
    ev_name = f"xc-{plan.setting}"
    y = np.asarray(task.targets, dtype=np.float64)
    ctx = np.asarray(task.contexts, dtype=str)
    labels = np.asarray(task.pert_ids, dtype=str)
    genes = np.asarray(task.gene_ids, dtype=str)
    embedded = {s: _embeddings(store, task, s, plan.tag) for s in (plan.sets if with_sets else [])}
    state_inputs = _StateInputs(store, task, plan, embedded) if "state" in plan.evaluators else None
    done = store.catalog.results.done(plan.task, version)
    results, errors, coverage = [], [], []
    for split in cross_context_splits(ctx, task.folds, plan.setting, held_out=plan.contexts, only_folds=plan.folds):
        runs = [(s, "mlp") for s in embedded if "mlp" in plan.evaluators]
        runs += [(f"state({s})", "state") for s in embedded if state_inputs is not None]
        runs += [(SET_NAMES[m], m) for m in plan.evaluators if m in SET_NAMES]
        for source, model in runs:
            if (split.context, split.fold, source, ev_name) in done:
                continue
            if progress is not None:
                progress(f"{plan.task} {plan.setting} {split.context} fold {split.fold}: {source}")
            t0 = time.perf_counter()
            data = SplitData(y, ctx, labels, split.train, split.test, split.context)
            covered = np.ones(len(y), bool)
            set_version = ""
            if model == "mlp":
                data.x, data.covered, set_version = embedded[source]
                covered = data.covered
                pred, chosen = mlp(data, settings)
            elif model == "state":
                assert state_inputs is not None
                name = source[len("state(") : -1]
                data.x, data.covered, set_version = embedded[name]
                covered = data.covered
                pred, chosen = state_inputs.predict(name, plan.setting, split, data)
            elif model == "onehot":
                pred, chosen = mlp(data, settings, onehot=True)
            elif model == "knn":
                pred, chosen = cross_knn(data, settings.k)
            else:
                pred, chosen = context_mean(data), {}
            truth, test_labels = y[split.test], labels[split.test]
            metrics = {**regression_metrics(truth, pred), **cross_metrics(truth, pred, test_labels, genes)}
            test = split.test[ctx == split.context]
            n_train = int(split.train.sum())
            base = {
                "task": plan.task,
                "task_version": version,
                "context": split.context,
                "fold": split.fold,
                "set": source,
                "set_version": set_version,
                "evaluator": ev_name,
                "chosen": json.dumps(chosen),
                "coverage": float(covered[split.test].mean()),
                "seconds": time.perf_counter() - t0,
                "n_test": int(test.sum()),
                "n_test_covered": int(covered[split.test].sum()),
                "n_train": n_train,
                "n_train_covered": int(covered[split.train].sum()),
            }
            results.extend({**base, "metric": m, "value": v} for m, v in metrics.items())
            errors.extend(
                {
                    **{k: base[k] for k in ("task", "task_version", "context", "fold", "set", "evaluator")},
                    "pert_id": p,
                    "l2": float(e),
                    "f1": None,
                }
                for p, e in zip(test_labels, l2_per_perturbation(truth, pred))
            )
            coverage.append(
                {
                    "set": source,
                    "context": split.context,
                    "n_perts": int(split.test.sum()),
                    "n_covered": int(covered[split.test].sum()),
                    "fraction": float(covered[split.test].mean()),
                }
            )
    frame = pd.DataFrame(results)
    store.catalog.results.save(store.storage, frame, pd.DataFrame(errors))
    table = pd.DataFrame(coverage, columns=["set", "context", "n_perts", "n_covered", "fraction"])
    frame.attrs["coverage"] = (
        table.groupby(["set", "context"], as_index=False)
        .sum()
        .assign(fraction=lambda t: t.n_covered / t.n_perts.clip(lower=1))
    )
    return frame
