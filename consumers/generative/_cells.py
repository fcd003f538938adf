"""The cells behind a stored task, read again from its input file (``--cells FILE``).

A stored task keeps its targets and cell counts, not its cells; its recipe records the input file's
name and SHA-256 and the columns it was read with. :func:`task_cells` takes the file from the user,
checks its digest against the recipe, reads it with the recorded columns and checks that the cells of
every (context, perturbation, batch) are those the task counted. Any mismatch is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pertstore.errors import InvalidInputError

from ._model import ContextCells

CELL_PRODUCER = "pertstore.consumers.tasks"
"""The producer of tasks built from cells (imported tasks and DEG tables have none)."""


def read_options(recipe: dict) -> dict:
    """``read_perturbation_data`` options that re-read the cells of a task built with ``recipe``."""
    cols, preset = dict(recipe.get("columns") or {}), dict(recipe.get("preset") or {})
    options: dict = {
        "pert_col": cols.get("pert_col"),
        "control_col": cols.get("control_col"),
        "control_label": cols.get("control_label"),
        "context_col": cols.get("context_col"),
        "context": cols.get("context", ""),
        "obs_filter": cols.get("obs_filter"),
        "combinatorial": True,
    }
    if cols.get("batch_col") == "_barcode_batch":
        options["batch_from_barcode"] = True
    else:
        options["batch_col"] = cols.get("batch_col")
    if isinstance(cols.get("genes"), str):
        options["genes"] = cols["genes"]
    if "normalise_kept" in cols:
        options["normalise_kept"] = cols["normalise_kept"]
    for key in ("dose_col", "dose"):
        if preset.get(key) is not None:
            options[key] = preset[key]
    return {k: v for k, v in options.items() if v is not None}


def task_cells(task, path: str | Path, contexts: list[str] | None = None) -> dict[str, ContextCells]:
    """The normalised cells of ``task``'s contexts (over ``task.gene_ids``), read from ``path``.

    Raises :class:`InvalidInputError` when the task was not built from cells, when ``path`` is missing
    or is not the task's input file (SHA-256), or when the cells read differ from the task's counts.
    """
    from pertstore.consumers.tasks import read_perturbation_data
    from pertstore.store import file_digest

    recipe = task.recipe
    if recipe.get("producer") != CELL_PRODUCER or "dose_contexts" in recipe:
        raise InvalidInputError(
            f"task {task.name!r} was not built from single cells by `pertstore tasks build` "
            f"(producer {recipe.get('producer')!r}"
            + (", doses as contexts" if "dose_contexts" in recipe else "")
            + "): the generative evaluators need its cells"
        )
    path = Path(path)
    expected = recipe["input"]
    if not path.exists():
        raise InvalidInputError(
            f"--cells {path}: no such file (task {task.name!r} was built from "
            f"{expected['file']!r}, sha256 {expected['sha256'][:12]}...)"
        )
    digest = file_digest(path)
    if digest != expected["sha256"]:
        raise InvalidInputError(
            f"--cells {path}: sha256 {digest[:12]}... is not that of the file task "
            f"{task.name!r} was built from ({expected['file']!r}, {expected['sha256'][:12]}...)"
        )
    data = read_perturbation_data(path, **read_options(recipe))
    genes = data.genes.index.astype(str)
    columns = genes.get_indexer(task.gene_ids)
    if (columns < 0).any():
        missing = [g for g, c in zip(task.gene_ids, columns) if c < 0]
        raise InvalidInputError(f"--cells {path}: gene(s) {missing[:5]} of task {task.name!r} are not in the file")
    cells = data.cells
    wanted = sorted(set(task.contexts)) if contexts is None else list(contexts)
    out = {}
    for context in wanted:
        labels = {p for p, c in zip(task.pert_ids, task.contexts) if c == context}
        in_ctx = (cells["context"].astype(str) == context).to_numpy()
        is_ctrl = cells["is_control"].to_numpy()
        keep = in_ctx & (is_ctrl | cells["label"].astype(str).isin(labels).to_numpy())
        kept = cells[keep]
        _check_counts(task, context, kept, path)
        x = data.matrix.take(kept["row"].to_numpy())[:, columns]
        out[context] = ContextCells(
            x=x.toarray().astype(np.float32),
            label=np.where(kept["is_control"], "", kept["label"].astype(str)),
            batch=kept["batch"].astype(str).to_numpy(),
            is_control=kept["is_control"].to_numpy(bool),
        )
    return out


def _check_counts(task, context: str, cells: pd.DataFrame, path: Path) -> None:
    """The cells per (perturbation, batch) must be those the task counted (controls as ``<control>``)."""
    counts = task.cell_counts[task.cell_counts["context"] == context]
    if counts.empty:
        return
    label = np.where(cells["is_control"], "<control>", cells["label"].astype(str))
    got = pd.DataFrame({"pert_id": label, "batch": cells["batch"].astype(str).to_numpy()}).value_counts()
    labels = set(task.pert_ids) | {"<control>"}
    want = counts[counts["pert_id"].isin(labels)].set_index(["pert_id", "batch"])["n_cells"]
    diff = want.sort_index().ne(got.reindex(want.index).fillna(0).astype(int).sort_index())
    if diff.any() or len(got) != len(want):
        raise InvalidInputError(
            f"--cells {path}: the cells read in context {context!r} differ from those task "
            f"{task.name!r} counted (e.g. {diff.index[diff.to_numpy()][:3].tolist()})"
        )
