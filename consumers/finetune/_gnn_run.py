"""``bench run --set STRING-GNN-SET --evaluator knn --evaluator ft-gnn --model-option network=FILE``.

The GNN is pretrained once per run by link prediction with the ``string-gnn`` producer's code and the
set's own recipe parameters (``pretrain_KEY=VALUE`` options override one, e.g. ``pretrain_epochs=5``)
on ``network``, which must be the file the set was built from (checked by its SHA-256). Then one
fine-tuned copy per (context, fold) is trained on the fold's training perturbations whose gene is a
node; its rows sit beside kNN on the frozen set, under the set's name. Options: any
:class:`GNNFinetuneSettings` field (``epochs``, ``learning_rates``, ``head``, ``freeze``, ...). A test
perturbation whose gene is not a node gets the train mean and counts as uncovered (``coverage``,
``n_test_covered`` and ``chosen.uncovered_test`` of its rows).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from pertstore.consumers.finetune._gnn import GNNFinetuneSettings, gnn_finetune_predict
from pertstore.consumers.finetune._rows import score_rows

from pertstore.errors import InvalidInputError

GNN_KEYS = ("network",)


def gnn_settings(options: dict, others: tuple[str, ...] = ()) -> GNNFinetuneSettings:
    """The :class:`GNNFinetuneSettings` of ``--model-option`` values; ``others``: options of other evaluators."""
    fields = GNNFinetuneSettings.__dataclass_fields__
    known = set(fields) | set(GNN_KEYS)
    unknown = sorted(k for k in set(options) - known - set(others) if not k.startswith(("pretrain_", "state_")))
    if unknown:
        raise InvalidInputError(
            f"unknown --model-option option(s) {unknown} for ft-gnn; known: {sorted(known)}, pretrain_*"
        )
    values = {k: v for k, v in options.items() if k in fields}
    for key in ("learning_rates", "head"):
        v = values.get(key)
        if isinstance(v, (int, float)):
            v = (v,)
        if isinstance(v, str):
            v = json.loads(v) if v.startswith("[") else v.split(",")
        if v is not None:
            values[key] = tuple((float if key == "learning_rates" else int)(x) for x in v)
    if isinstance(values.get("freeze"), str):
        values["freeze"] = values["freeze"].lower() in ("1", "true", "yes")
    for key, kind in (("epochs", int), ("batch_perts", int), ("seed", int), ("val_fraction", float)):
        if key in values:
            values[key] = kind(values[key])
    return GNNFinetuneSettings(**values)


def _string_gnn_set(store, plan) -> tuple[str, dict]:
    """The plan's ``string-gnn`` set and its newest recipe (``params``, ``inputs``)."""
    recipes = store.catalog.recipes(producer="string-gnn")
    recipes = recipes[recipes.source.isin(plan.sets)]
    if recipes.empty:
        raise InvalidInputError(f"ft-gnn needs a string-gnn set among --set (got {plan.sets})")
    if recipes.source.nunique() > 1:
        raise InvalidInputError(f"ft-gnn: several string-gnn sets {sorted(set(recipes.source))}; give one --set")
    row = recipes.iloc[-1]
    recipe = json.loads(row.recipe) if isinstance(row.recipe, str) else dict(row.recipe)
    return str(row.source), recipe


def _pretrained(store, plan) -> tuple[str, list[str], object, dict]:
    from pertstore.producers.graph import string_gnn_encoder
    from pertstore.store import file_sha256

    options = plan.model_options
    if "network" not in options:
        raise InvalidInputError("ft-gnn needs --model-option network=FILE (the STRING file of the string-gnn set)")
    network = Path(str(options["network"]))
    if not network.is_file():
        raise InvalidInputError(f"--model-option network={network}: no such file")
    label, recipe = _string_gnn_set(store, plan)
    pinned = recipe.get("inputs", {}).get("network")
    if pinned and pinned != file_sha256(network):
        raise InvalidInputError(f"--model-option network={network} is not the file set {label!r} was built from")
    params = dict(recipe.get("params", {}))
    params.update({k.removeprefix("pretrain_"): v for k, v in options.items() if k.startswith("pretrain_")})
    genes, encoder = string_gnn_encoder(network, store.resolve, params)
    return label, genes, encoder, params


def run_gnn_finetune(
    store, task, plan, version: str, contexts: list[str], done: set, progress, others: tuple[str, ...] = ()
) -> tuple[list, list]:
    """Result and per-perturbation rows of ``ft-gnn`` (skipping runs already stored); ``others``: see gnn_settings."""
    settings = gnn_settings(plan.model_options, others)
    ev = "ft-gnn"
    label, recipe = _string_gnn_set(store, plan)
    todo_by_context = {}
    for context in contexts:
        folds = task.folds[np.asarray(task.contexts) == context]
        wanted = sorted(set(folds.tolist()) - {-1}) if plan.folds is None else plan.folds
        todo_by_context[context] = [f for f in wanted if (context, f, label, ev) not in done]
    if not any(todo_by_context.values()):
        return [], []
    if progress is not None:
        progress(f"{plan.task}: pretraining the STRING GNN of {label} by link prediction")
    label, genes, encoder, params = _pretrained(store, plan)
    node = {g: i for i, g in enumerate(genes)}
    pert_node = np.array([node.get(e, -1) if e else -1 for e in task.entity_ids])
    results, errors = [], []
    for context, todo in todo_by_context.items():
        rows = np.flatnonzero(np.asarray(task.contexts) == context)
        y, folds, pos = np.asarray(task.targets[rows], dtype=np.float64), task.folds[rows], pert_node[rows]
        for fold in todo:
            if progress is not None:
                progress(f"{plan.task} {context} fold {fold}: {ev}")
            t0 = time.perf_counter()
            test, covered = folds == fold, pos >= 0
            train, has = ~test & covered, test & covered
            pred = np.repeat(y[~test].mean(axis=0)[None], int(test.sum()), axis=0)
            chosen: dict = {"note": "too few covered perturbations"}
            if train.sum() >= 2 and has.any():
                out, chosen, _ = gnn_finetune_predict(encoder, pos[train], y[train], pos[has], settings)
                pred[has[test]] = out
            chosen |= {"uncovered_test": int((test & ~covered).sum()), "pretrain": params}
            run = {"truth": y[test], "pred": pred, "chosen": chosen, "test": test, "covered": covered,
                   "seconds": time.perf_counter() - t0,
                   "pert_ids": np.asarray(task.pert_ids)[rows][test]}  # fmt: skip
            got_results, got_errors = score_rows(plan, version, context, fold, label, ev, run)
            results.extend(got_results)
            errors.extend(got_errors)
    return results, errors
