"""The benchmark runner: every (set, evaluator, context, fold) of a task, plus the controls.

Each run trains on the covered training perturbations of one fold and predicts its test
perturbations; test perturbations without an embedding get the train mean (the paper's policy,
``coverage="train_mean"``) or are left out (``coverage="covered"``). Coverage is never silent:
before any fit, a set covering none of a context's perturbations is an error, one covering less
than ``Plan.min_coverage`` is refused, one covering less than :data:`WARN_COVERAGE` warns
(:class:`CoverageWarning`), and every result row carries its covered counts. Results are tidy rows
``task, task_version, context, fold, set, set_version, evaluator, metric, value, chosen, coverage,
seconds, n_test, n_test_covered, n_train, n_train_covered`` kept in the catalog
(``bench_results``) with per-perturbation L2 errors (``bench_errors``); a run whose key is already
there is skipped, so an interrupted plan resumes where it stopped.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
from pertstore.consumers.evaluators._metrics import (
    as_proba,
    coverage_counts,
    deg_f1_per_perturbation,
    deg_metrics,
    l2_per_perturbation,
    regression_metrics,
)
from pertstore.consumers.evaluators._models import evaluator
from pertstore.consumers.evaluators._plan import GENERATIVE, Plan

from pertstore.errors import InvalidInputError, NotFoundError

#: Controls, evaluated beside the sets: train mean, no change, the idealised PCA of responses
#: (positive control) and the experimental error of the task (the floor).
CONTROLS = ("train_mean", "no_change", "idealised", "experimental_error")
WARN_COVERAGE = 0.9
"""A set covering less than this fraction of a context's perturbations gets a :class:`CoverageWarning`."""


class CoverageWarning(UserWarning):
    """A set covers only part of a task's perturbations: the others get the train mean (or are left out)."""


def _context_rows(task, context: str) -> np.ndarray:
    return np.flatnonzero(np.asarray(task.contexts) == context)


def _embedding(store, source: str, ids: list[str | None], context: str, tag: str | None):
    """``(values, covered)`` for ``ids`` from ``source`` in ``context`` (or its context-free set)."""
    ds = store.align([source], [i or "" for i in ids], context=context, tag=tag)
    return ds[source].values.astype(np.float64), ds["covered"].values[:, 0].astype(bool), ds.attrs["versions"][source]


def _idealised(y: np.ndarray) -> np.ndarray:
    """The idealised positive control: PCA of the whole response matrix (train and test)."""
    from sklearn.decomposition import PCA

    return PCA(min(100, y.shape[0] - 1, y.shape[1]), svd_solver="full").fit_transform(y)


def run_plan(store, plan: Plan, *, progress: Callable[[str], None] | None = None, client=None) -> pd.DataFrame:
    """Run ``plan`` (skipping runs already in the catalog); returns this plan's result rows.

    With a Dask ``client`` the model fits run as Dask tasks (the driver reads the embeddings and
    writes the results; workers only compute).
    """
    from pertstore.consumers.tasks import load_task, task_version

    if plan.setting != "perturbation":  # unseen contexts: the cross-context protocol
        from pertstore.consumers.crosscontext import run_cross_context

        return run_cross_context(store, plan, progress=progress)
    task = load_task(store, plan.task)
    version = task_version(task.recipe)
    kind = task.kind
    use_fusion = "fusion" in plan.evaluators
    finetuned = [e for e in plan.evaluators if e.startswith("ft-")]
    generative = [e for e in plan.evaluators if e in GENERATIVE]
    evaluators = [e for e in plan.evaluators if e != "fusion" and e not in finetuned and e not in GENERATIVE]
    if kind == "deg" and evaluators:
        evaluators = ["logistic"]  # the DEG protocol: a per-gene 3-class logistic regression
    contexts = plan.contexts or sorted(set(task.contexts))
    if plan.coverage not in ("train_mean", "covered"):
        raise InvalidInputError(f"coverage must be 'train_mean' or 'covered', not {plan.coverage!r}")
    cache = {
        (source, context): _fetch(store, task, source, context, plan.tag)
        for source in plan.sets
        for context in contexts
    }
    table = check_coverage(task, plan, cache)
    done = store.catalog.results.done(plan.task, version)
    units = []
    for context in contexts:
        rows = _context_rows(task, context)
        if not len(rows):
            raise InvalidInputError(f"task {plan.task} has no perturbations in context {context!r}")
        folds = sorted(set(task.folds[rows].tolist()) - {-1}) if plan.folds is None else plan.folds
        sources = list(plan.sets) + (["train_mean", "no_change", "idealised"] if plan.controls else [])
        for source in sources:
            for ev in evaluators if source not in ("train_mean", "no_change") else ["none"]:
                for fold in folds:
                    if (context, fold, source, ev) not in done:
                        units.append((context, fold, source, ev))
    results, errors = [], []
    prepared = []  # (unit, rows, set_version, covered, test, args of _predict)
    for context, fold, source, ev in units:
        rows = _context_rows(task, context)
        y = task.targets[rows]
        test = task.folds[rows] == fold
        if source in ("train_mean", "no_change"):
            x, covered, set_version = None, np.ones(len(rows), bool), ""
        elif source == "idealised":
            x, covered, set_version = _idealised(y.astype(np.float64)), np.ones(len(rows), bool), ""
        else:
            if cache[(source, context)] is None:  # a contextual source without a set for this context
                continue
            x, covered, set_version = cache[(source, context)]
        prepared.append(
            (
                (context, fold, source, ev),
                rows,
                set_version,
                covered,
                test,
                (kind, source, ev, x, y, covered, test, plan.coverage),
            )
        )
    outputs = _fit_all([p[5] for p in prepared], client, progress, plan.task)
    for ((context, fold, source, ev), rows, set_version, covered, test, args), (pred, chosen, used, seconds) in zip(
        prepared, outputs
    ):
        truth = args[4][test][used]
        metrics = deg_metrics(truth, pred) if kind == "deg" else regression_metrics(truth, pred)
        base = {
            "task": plan.task,
            "task_version": version,
            "context": context,
            "fold": int(fold),
            "set": source,
            "set_version": set_version,
            "evaluator": ev,
            "chosen": json.dumps(chosen),
            "coverage": float(covered[test].mean()) if test.any() else float("nan"),
            "seconds": seconds,
            **coverage_counts(covered, test),
        }
        results.extend({**base, "metric": m, "value": v} for m, v in metrics.items())
        test_ids = np.asarray(task.pert_ids)[rows][test][used]
        errors.extend(
            {
                "task": plan.task,
                "task_version": version,
                "context": context,
                "fold": int(fold),
                "set": source,
                "evaluator": ev,
                "pert_id": p,
                **score,
            }
            for p, score in zip(test_ids, _per_perturbation(kind, truth, pred))
        )
    if use_fusion:
        fused, fused_errors = _run_fusion(store, task, plan, version, contexts, done, progress)
        results.extend(fused)
        errors.extend(fused_errors)
    if finetuned:  # LoRA fine-tuning of a cell model (consumers/finetune)
        from pertstore.consumers.finetune import run_finetune

        tuned, tuned_errors = run_finetune(store, task, plan, version, contexts, done, progress)
        results.extend(tuned)
        errors.extend(tuned_errors)
    if plan.controls:
        results.extend(_experimental_error_rows(task, plan.task, version, contexts, done))
    frame = pd.DataFrame(results)
    save_results(store, frame, pd.DataFrame(errors))
    if generative:  # each run saved as it finishes: a long plan resumes run by run
        from pertstore.consumers.generative import run_generative

        made = run_generative(
            store,
            task,
            plan,
            version,
            contexts,
            done,
            cache,
            generative,
            progress=progress,
            save=lambda r, e: save_results(store, pd.DataFrame(r), pd.DataFrame(e)),
        )
        frame = pd.concat([frame, pd.DataFrame(made)], ignore_index=True)
    frame.attrs["coverage"] = table
    return frame


def _fetch(store, task, source: str, context: str, tag: str | None):
    """``(values, covered, set_version)`` of ``source`` for the task's rows of ``context``; None when a
    contextual source has no set for that context."""
    rows = _context_rows(task, context)
    if not len(rows):
        raise InvalidInputError(f"task {task.name!r} has no perturbations in context {context!r}")
    try:
        return _embedding(store, source, [task.entity_ids[r] for r in rows], context, tag)
    except NotFoundError:
        return None


def plan_coverage(store, plan: Plan) -> pd.DataFrame:
    """How many of each context's perturbations each of ``plan``'s sets covers (nothing is refused here).

    Returns
    -------
    ``set, context, n_perts, n_covered, fraction``; contexts for which a contextual set has no
    version are left out.
    """
    from pertstore.consumers.tasks import load_task

    task = load_task(store, plan.task)
    contexts = plan.contexts or sorted(set(task.contexts))
    return _coverage_table(task, {(s, c): _fetch(store, task, s, c, plan.tag) for s in plan.sets for c in contexts})


def _coverage_table(task, fetched: dict[tuple[str, str], tuple | None]) -> pd.DataFrame:
    rows = []
    for (source, context), got in fetched.items():
        if got is not None:
            n_perts = len(_context_rows(task, context))
            rows.append(
                {
                    "set": source,
                    "context": context,
                    "n_perts": n_perts,
                    "n_covered": int(got[1].sum()),
                    "fraction": float(got[1].mean()) if n_perts else 0.0,
                }
            )
    return pd.DataFrame(rows, columns=["set", "context", "n_perts", "n_covered", "fraction"])


def check_coverage(task, plan: Plan, fetched: dict[tuple[str, str], tuple | None]) -> pd.DataFrame:
    """Refuse what cannot give honest numbers; returns the coverage table (see :func:`plan_coverage`).

    Raises :class:`InvalidInputError` naming every (set, context) that covers no perturbation, or less
    than ``plan.min_coverage``, and every set without a version for any of the contexts; warns
    (:class:`CoverageWarning`) below :data:`WARN_COVERAGE`.
    """
    table = _coverage_table(task, fetched)
    for source in plan.sets:
        if not (table.set == source).any():
            raise InvalidInputError(
                f"set {source!r} has no version for any context of task {plan.task!r} "
                f"({', '.join(sorted({c for _, c in fetched}))})"
            )
    resolved = sum(e is not None for e in task.entity_ids)
    hint = (
        f"none of the task's perturbations resolved to an entity (see `pertstore tasks show {plan.task}`)"
        if resolved == 0
        else f"{resolved:,} of {len(task.entity_ids):,} task perturbations resolved to entities; "
        "is the set of the right entity kind?"
    )
    bad = table[(table.n_covered == 0) | (table.fraction < plan.min_coverage)]
    if len(bad):
        what = "; ".join(
            f"set {r.set!r} covers {r.n_covered} of {r.n_perts} perturbations of task {plan.task!r} "
            f"in context {r.context!r}"
            for r in bad.itertuples()
        )
        limit = f" (minimum coverage {plan.min_coverage:.0%})" if plan.min_coverage else ""
        raise InvalidInputError(f"{what}{limit}: its results would be train-mean numbers; {hint}")
    for r in table[table.fraction < WARN_COVERAGE].itertuples():
        warnings.warn(
            f"set {r.set!r} covers {r.n_covered} of {r.n_perts} ({r.fraction:.0%}) perturbations of task "
            f"{plan.task!r} in context {r.context!r}; the others "
            + ("get the train mean" if plan.coverage == "train_mean" else "are left out of its scores"),
            CoverageWarning,
            stacklevel=3,
        )
    return table


def _run_fusion(store, task, plan: Plan, version: str, contexts: list[str], done: set, progress):
    """The fusion model over all of the plan's sets, trained jointly over contexts, one model per fold.

    ``plan.fusion`` picks the reference variant, a tuned study, control features and overrides
    (:func:`pertstore.consumers.fusion.plan_config`); the evaluator column names it (``fusion``,
    ``fusion-full``, ``fusion-tuned``, ``fusion-full-tuned``) and each row's ``chosen`` carries the
    configuration and the sets used.
    """
    from pertstore.consumers.fusion import FusionPredictor, plan_config, task_inputs

    config, origin = plan_config(store, plan.task, task.kind, list(plan.sets), plan.fusion)
    data = task_inputs(
        store,
        task,
        list(plan.sets),
        contexts,
        tag=plan.tag,
        control_source=plan.fusion.get("control_source"),
        control_means=plan.fusion.get("control_means"),
    )
    y, ctx, folds, covered, position = data.y, data.ctx, data.folds, data.covered, data.position
    label = "fusion(" + ",".join(plan.sets) + ")"
    ev = (
        "fusion"
        + ("" if origin["variant"] == "simple" else f"-{origin['variant']}")
        + ("-tuned" if "tuned" in origin else "")
    )
    results, errors = [], []
    for fold in sorted(set(folds.tolist()) - {-1}) if plan.folds is None else plan.folds:
        if all((c, fold, label, ev) in done for c in contexts):
            continue
        if progress is not None:
            progress(f"{plan.task} fold {fold}: fusion of {len(plan.sets)} sets")
        t0 = time.perf_counter()
        train = (folds != fold) & covered
        model = (
            FusionPredictor(config).fit(data.x.subset(position[train]), y[train], groups=data.groups[train])
            if train.sum() >= 2
            else None
        )
        chosen = json.dumps(
            {
                **origin,
                "sets": data.x.sources,
                "epochs": len(model.history) if model else 0,
                "best_val_loss": model.best_val_loss if model else None,
                "config": config.model_dump(),
            }
        )
        for context in contexts:
            test = (folds == fold) & (ctx == context)
            if not test.any():
                continue
            if task.kind == "lfc":
                pred = np.tile(y[(folds != fold) & (ctx == context)].mean(axis=0), (int(test.sum()), 1))
            else:
                prior = _most_frequent(y[(folds != fold) & (ctx == context)]).argmax(-1) - 1  # labels -1/0/1
                pred = np.tile(prior, (int(test.sum()), 1)).astype(np.int8)
            has = covered[test] & (model is not None)
            if has.any():
                pred[has] = model.predict(data.x.subset(position[test][has]))
            truth = y[test]
            metrics = deg_metrics(truth, pred) if task.kind == "deg" else regression_metrics(truth, pred)
            base = {
                "task": plan.task,
                "task_version": version,
                "context": context,
                "fold": int(fold),
                "set": label,
                "set_version": "",
                "evaluator": ev,
                "chosen": chosen,
                "coverage": float(has.mean()),
                "seconds": time.perf_counter() - t0,
                **coverage_counts(covered[ctx == context], test[ctx == context]),
            }
            results.extend({**base, "metric": m, "value": v} for m, v in metrics.items())
            if task.kind == "lfc":
                errors.extend(
                    {
                        "task": plan.task,
                        "task_version": version,
                        "context": context,
                        "fold": int(fold),
                        "set": label,
                        "evaluator": ev,
                        "pert_id": p,
                        "l2": float(e),
                    }
                    for p, e in zip(np.asarray(task.pert_ids)[data.rows][test], l2_per_perturbation(truth, pred))
                )
    return results, errors


def _per_perturbation(kind: str, truth: np.ndarray, pred: np.ndarray) -> list[dict]:
    """The paired scores of ``bench_errors``: ``l2`` (LFC) or the macro ``f1`` over genes (DEG); the other NULL."""
    if kind == "lfc":
        return [{"l2": float(e), "f1": None} for e in l2_per_perturbation(truth, pred)]
    return [{"l2": None, "f1": float(f)} for f in deg_f1_per_perturbation(truth, pred)]


def _timed_predict(*args):
    t0 = time.perf_counter()
    pred, chosen, used = _predict(*args)
    return pred, chosen, used, time.perf_counter() - t0


def _fit_all(arg_lists: list[tuple], client, progress, task_name: str) -> list[tuple]:
    """Every run's ``(prediction, chosen, used rows, seconds)``, in order: in-process or on Dask."""
    if client is None:
        out = []
        for args in arg_lists:
            if progress is not None:
                progress(f"{task_name}: {args[1]} / {args[2]}")
            out.append(_timed_predict(*args))
        return out
    if progress is not None:
        progress(f"{task_name}: {len(arg_lists)} runs on the Dask cluster")
    return client.gather([client.submit(_timed_predict, *args, pure=False) for args in arg_lists])


def _most_frequent(y: np.ndarray) -> np.ndarray:
    """One-hot probabilities ``[genes, 3]`` of each gene's most frequent label in ``y`` (first of -1/0/1 on
    ties): scikit-learn's ``DummyClassifier(strategy="most_frequent")``, the reference's DEG fallback."""
    counts = np.stack([(y == c).sum(0) for c in (-1, 0, 1)], axis=-1)
    return (counts.argmax(-1)[:, None] == np.arange(3)).astype(np.float64)


def _predict(kind, source, ev, x, y, covered, test, coverage_policy):
    """``(prediction, chosen, used test rows)``: LFC values, or DEG class probabilities ``[test, genes, 3]``."""
    train = ~test & covered
    n_test = int(test.sum())
    # the fallback for a test perturbation without a prediction (and the train_mean control): the train mean
    # (LFC) or the most frequent training label of each gene (DEG), over all training perturbations
    fill = y[~test].mean(axis=0) if kind == "lfc" else _most_frequent(y[~test])
    if source == "train_mean":
        return np.repeat(fill[None], n_test, axis=0), {}, np.ones(n_test, bool)
    if source == "no_change":
        none = np.zeros((n_test, y.shape[1])) if kind == "lfc" else np.zeros((n_test, y.shape[1]), dtype=np.int8)
        return none, {}, np.ones(n_test, bool)
    test_covered = covered[test]
    if train.sum() < 2 or not test_covered.any():  # nothing to learn from or to predict: the coverage policy decides
        test_covered = np.zeros(n_test, dtype=bool)
        pred_cov, chosen = np.zeros((0, *fill.shape)), {"note": "too few covered perturbations"}
    else:
        model = evaluator(ev, transform=source != "idealised")
        pred_cov, chosen = model.fit_predict(x[train], y[train], x[test][test_covered])
    if coverage_policy == "covered":
        return pred_cov, chosen, test_covered
    pred = np.repeat(fill[None], n_test, axis=0).astype(np.float64)
    pred[test_covered] = pred_cov if kind == "lfc" else as_proba(pred_cov)
    return pred, chosen, np.ones(n_test, bool)


def _experimental_error_rows(task, name, version, contexts, done) -> list[dict]:
    """The task's experimental error as result rows: one per (context, fold, metric), as the reference.

    LFC: ``l2, mse, mae, pearson, spearman`` = the mean over the fold's test perturbations of
    each one's 0.9 quantile over bootstrap trials; DEG: the evaluator's DEG metrics, the 0.1
    quantile over trials of the fold's score (see ``ExperimentalError.fold_limits``).
    """
    if task.error is None:
        return []
    limits = task.error.fold_limits(task.folds, task.contexts)
    limits = limits[limits["context"].isin(contexts)]
    contexts_arr, folds = np.asarray(task.contexts), np.asarray(task.folds)
    out = []
    for (context, fold), rows in limits.groupby(["context", "fold"], sort=True):
        if (context, int(fold), "experimental_error", "none") in done:
            continue
        n_test = int(((contexts_arr == context) & (folds == fold)).sum())
        base = {
            "task": name,
            "task_version": version,
            "context": context,
            "fold": int(fold),
            "set": "experimental_error",
            "set_version": "",
            "evaluator": "none",
            "chosen": "{}",
            "coverage": 1.0,
            "seconds": 0.0,
            "n_test": n_test,
            "n_test_covered": n_test,
        }
        out.extend({**base, "metric": m, "value": float(v)} for m, v in zip(rows["metric"], rows["value"], strict=True))
    return out


def save_results(store, results: pd.DataFrame, errors: pd.DataFrame) -> None:
    """Keep result and per-perturbation error rows (in the store and its catalog)."""
    store.catalog.results.save(store.storage, results, errors)


def results(store, task: str | None = None) -> pd.DataFrame:
    """Every stored result row (of ``task``)."""
    return store.catalog.results.rows(task)
