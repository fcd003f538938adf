"""``bench run --evaluator ft-isko|ft-indexing --model-option model_path=DIR --model-option cells=FILE.h5ad``.

One fine-tuned model per (context, fold), trained on the fold's covered training perturbations and
scored like every evaluator (rows beside kNN on the frozen ``scfm`` set of the same checkpoint: the
paper's Figure 4). Options (``--model-option KEY=VALUE``): ``model_path`` and ``cells`` (required; the
control cells of each context), ``control_column`` (``is_control``) / ``control_value`` (``True``),
``context_column`` (none: the same controls for every context), ``gene_column`` (none: ``var_names``),
and any :class:`FinetuneSettings` field (``adapter``: ``dense``, ``geneformer`` or ``scgpt``, with
``max_length``, ``token_dictionary``, ``gene_medians`` as the ``scfm`` producer takes them; ``epochs``,
``learning_rates``, ``head``, ``batch_cells``, ``lora_r``, ``seed``, ``device``). A perturbation whose gene is
not a model gene with a state (token models: no token in the control profile or cells) gets the train mean and
counts as uncovered; a task gene the model does not predict keeps the train mean (``task_genes_from_model``
in each run's ``chosen``).

``ft-gnn`` fine-tunes the STRING GNN instead (:mod:`._gnn_run`): ``--model-option network=FILE``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from pertstore.consumers.finetune._model import CellModel, FinetuneSettings, cell_model, finetune_predict, load_adapter
from pertstore.consumers.finetune._rows import score_rows

from pertstore.errors import InvalidInputError

EVALUATORS = {"ft-isko": "isko", "ft-indexing": "indexing", "ft-gnn": "gnn"}
_CELL_KEYS = ("model_path", "cells", "control_column", "control_value", "context_column", "gene_column")


def _settings(options: dict, mode: str) -> FinetuneSettings:
    known = set(FinetuneSettings.__dataclass_fields__) - {"mode", "extra"}
    extra = sorted(set(options) - known - set(_CELL_KEYS))
    if extra:
        raise InvalidInputError(f"unknown --model-option option(s) {extra}; known: {sorted(known | set(_CELL_KEYS))}")
    values = {k: v for k, v in options.items() if k in known}
    for key in ("learning_rates", "head"):
        if isinstance(values.get(key), (int, float)):
            values[key] = (values[key],)
        if isinstance(values.get(key), str):
            values[key] = tuple(json.loads(values[key]) if values[key].startswith("[") else values[key].split(","))
        if key in values and values[key] is not None:
            values[key] = tuple((float if key == "learning_rates" else int)(v) for v in values[key])
    for key, value in values.items():  # a value of the wrong type is the user's error, not a traceback later
        kind = _NUMBERS.get(key)
        if kind is not None and value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InvalidInputError(f"--model-option {key}={value!r}: expected a number")
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise InvalidInputError(f"--model-option {key}={value!r}: expected a whole number")
        if kind is not None and value is not None:
            values[key] = kind(value)
    return FinetuneSettings(mode=mode, **values)


_NUMBERS = {
    "epochs": int, "batch_perts": int, "batch_cells": int, "lora_r": int, "lora_alpha": int, "seed": int,
    "max_length": int, "val_fraction": float, "lora_dropout": float, "mask_value": float,
}  # fmt: skip
"""The numeric :class:`FinetuneSettings` fields and their types."""


def _match(store, names: list[str], model_genes: list[str]) -> np.ndarray:
    """Position of each name among the model's genes (-1: none), by exact name, else by resolved entity."""
    exact = {g: i for i, g in enumerate(model_genes)}
    by_entity = {e: i for i, e in enumerate(store.resolve(model_genes).ids) if e is not None}
    resolved = store.resolve(names).ids
    return np.array([exact.get(n, by_entity.get(e, -1)) for n, e in zip(names, resolved)])


def _control_cells(store, options: dict, context: str, model_genes: list[str]) -> np.ndarray:
    """The context's control cells, log1p-normalised (counts: to 1e4 first), in the model's gene order."""
    import anndata as ad
    import scipy.sparse as sp

    path = Path(str(options["cells"]))
    if not path.is_file():
        raise InvalidInputError(f"--model-option cells={path}: no such h5ad file")
    adata = ad.read_h5ad(path)
    column = options.get("control_column", "is_control")
    if column not in adata.obs:
        raise InvalidInputError(f"{path}: no control column {column!r}; set --model-option control_column=COL")
    keep = adata.obs[column].astype(str).to_numpy() == str(options.get("control_value", "True"))
    if options.get("context_column"):
        keep &= adata.obs[options["context_column"]].astype(str).to_numpy() == context
    if not keep.any():
        raise InvalidInputError(f"{path}: no control cells for context {context!r}")
    x = adata.X[keep]
    x = (x.toarray() if sp.issparse(x) else np.asarray(x)).astype(np.float64)
    if np.all(x == np.round(x)) and x.max() > 50:  # counts: normalise to 1e4 per cell, then log1p
        x = np.log1p(x / np.maximum(x.sum(axis=1, keepdims=True), 1) * 1e4)
    names = list(adata.var[options["gene_column"]] if options.get("gene_column") else adata.var_names)
    where = _match(store, [str(n) for n in names], model_genes)
    out = np.zeros((x.shape[0], len(model_genes)), dtype=np.float32)
    out[:, where[where >= 0]] = x[:, where >= 0]
    return out


def run_finetune(store, task, plan, version: str, contexts: list[str], done: set, progress) -> tuple[list, list]:
    """Result and per-perturbation rows of the plan's fine-tuning evaluators (skipping runs already stored)."""
    if task.kind != "lfc":
        raise InvalidInputError(f"fine-tuning evaluators need an LFC task; {plan.task!r} is {task.kind}")
    unknown = sorted(e for e in plan.evaluators if e.startswith("ft-") and e not in EVALUATORS)
    if unknown:
        raise InvalidInputError(f"unknown fine-tuning evaluator(s) {unknown}; known: {sorted(EVALUATORS)}")
    results: list = []
    errors: list = []
    if "ft-gnn" in plan.evaluators:
        from pertstore.consumers.finetune._gnn_run import run_gnn_finetune

        cell_keys = (
            _CELL_KEYS + tuple(FinetuneSettings.__dataclass_fields__)
            if len(set(plan.evaluators) & set(EVALUATORS)) > 1
            else ()
        )
        results, errors = run_gnn_finetune(store, task, plan, version, contexts, done, progress, cell_keys)
    if any(EVALUATORS[e] in ("isko", "indexing") for e in plan.evaluators if e in EVALUATORS):
        cell_results, cell_errors = _run_cell_models(store, task, plan, version, contexts, done, progress)
        results, errors = results + cell_results, errors + cell_errors
    return results, errors


def _run_cell_models(store, task, plan, version: str, contexts: list[str], done: set, progress) -> tuple[list, list]:
    gnn = "ft-gnn" in plan.evaluators  # its own options (network, freeze, pretrain_*) are not the cell models'
    options = {
        k: v
        for k, v in plan.model_options.items()
        if not k.startswith("state_") and not (gnn and (k in ("network", "freeze") or k.startswith("pretrain_")))
    }
    for key in ("model_path", "cells"):
        if key not in options:
            raise InvalidInputError(f"fine-tuning needs --model-option {key}=...")
    model_path = str(options["model_path"])
    adapter = load_adapter(model_path, _settings(options, "isko"))
    model_genes = list(adapter.genes)
    label = f"finetune({Path(model_path).name})"
    pert_pos = _match(store, [e or "" for e in task.entity_ids], model_genes)
    gene_pos = _match(store, list(task.gene_ids), model_genes)
    results, errors = [], []
    models: dict[str, CellModel] = {}
    for ev in [e for e in plan.evaluators if EVALUATORS.get(e) in ("isko", "indexing")]:
        settings = _settings(options, EVALUATORS[ev])
        for context in contexts:
            rows = np.flatnonzero(np.asarray(task.contexts) == context)
            y, folds = np.asarray(task.targets[rows], dtype=np.float64), task.folds[rows]
            wanted = sorted(set(folds.tolist()) - {-1}) if plan.folds is None else plan.folds
            todo = [f for f in wanted if (context, f, label, ev) not in done]
            if not todo:
                continue
            if context not in models:  # loaded and encoded once per context, for both evaluators
                cells = _control_cells(store, options, context, model_genes)
                models[context] = cell_model(model_path, cells, settings, adapter=adapter)
            model = models[context]
            # a perturbation is covered when its gene is a model gene with a state (token models: a token)
            pos = pert_pos[rows]
            covered = (pos >= 0) & model.inputs.coverable(settings.mode)[np.maximum(pos, 0)]
            for fold in todo:
                if progress is not None:
                    progress(f"{plan.task} {context} fold {fold}: {ev}")
                t0 = time.perf_counter()
                test = folds == fold
                train = ~test & covered
                pred = np.repeat(y[~test].mean(axis=0)[None], int(test.sum()), axis=0)
                has = test & covered
                chosen: dict = {"note": "too few covered perturbations"}
                if train.sum() >= 2 and has.any():
                    target = y[train]
                    if settings.mode == "isko":  # the model's genes; NaN where the task has no value
                        target = np.full((int(train.sum()), len(model_genes)), np.nan)
                        target[:, gene_pos[gene_pos >= 0]] = y[train][:, gene_pos >= 0]
                    out, chosen = finetune_predict(model, pos[train], target, pos[has], settings)
                    if settings.mode == "isko":  # task genes the model predicts; the others keep the train mean
                        genes = np.full((len(out), len(gene_pos)), np.nan)
                        genes[:, gene_pos >= 0] = out[:, gene_pos[gene_pos >= 0]]
                        out = genes
                    from_model = np.isfinite(out)
                    chosen["task_genes_from_model"] = round(float(from_model.mean()), 4)
                    got = pred[has[test]]
                    got[from_model] = out[from_model]
                    pred[has[test]] = got
                run = {"truth": y[test], "pred": pred, "chosen": chosen, "test": test, "covered": covered,
                       "seconds": time.perf_counter() - t0,
                       "pert_ids": np.asarray(task.pert_ids)[rows][test]}  # fmt: skip
                got_results, got_errors = score_rows(plan, version, context, fold, label, ev, run)
                results.extend(got_results)
                errors.extend(got_errors)
    return results, errors
