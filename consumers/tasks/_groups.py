"""Cell -> (perturbation, batch) bookkeeping shared by the LFC, DEG and bootstrap computations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from pertstore.errors import InvalidInputError

from ._ingest import PerturbationData

Variant = Literal["auto", "large", "small"]
LARGE_BATCH_CELLS = 100
"""Default threshold of the ``auto`` variant: median cells per (perturbation, batch) pair."""


@dataclass
class Layout:
    """Integer codes of the kept cells.

    ``pert[i]`` indexes ``data.perturbations`` (-1 for control cells),
    ``batch[i]`` indexes ``batches`` (pairs of context and batch label),
    ``n[p, b]`` counts cells of perturbation ``p`` in batch ``b`` and
    ``n_ctrl[b]`` control cells in batch ``b``.
    """

    rows: np.ndarray
    pert: np.ndarray
    batch: np.ndarray
    batches: pd.DataFrame
    n: np.ndarray
    n_ctrl: np.ndarray
    pert_context: np.ndarray
    batch_context: np.ndarray


def layout(data: PerturbationData) -> Layout:
    """Codes and counts of ``data``'s cells."""
    cells, perts = data.cells, data.perturbations
    ctx_cat, label_cat = cells["context"].cat.categories, cells["label"].cat.categories
    ctx = cells["context"].cat.codes.to_numpy(np.int64)
    ctrl = cells["is_control"].to_numpy()
    cell_key = ctx * len(label_cat) + cells["label"].cat.codes.to_numpy(np.int64)
    pert_key = (ctx_cat.get_indexer(perts["context"]) * len(label_cat) + label_cat.get_indexer(perts["label"])).astype(
        np.int64
    )  # sorted: perts are by (context, label)
    pert = np.full(len(cells), -1, dtype=np.int64)
    pert[~ctrl] = np.searchsorted(pert_key, cell_key[~ctrl])
    batch_cat = cells["batch"].cat.categories
    pair_keys, batch_codes = np.unique(
        ctx * len(batch_cat) + cells["batch"].cat.codes.to_numpy(np.int64), return_inverse=True
    )
    batches = pd.DataFrame(
        {
            "context": ctx_cat[pair_keys // len(batch_cat)].astype(str),
            "batch": batch_cat[pair_keys % len(batch_cat)].astype(str),
        }
    )
    n_b = len(batches)
    n = np.zeros((len(perts), n_b), dtype=np.int64)
    np.add.at(n, (pert[~ctrl], batch_codes[~ctrl]), 1)
    n_ctrl = np.bincount(batch_codes[ctrl], minlength=n_b)
    contexts = np.asarray(ctx_cat.astype(str))
    return Layout(
        rows=cells["row"].to_numpy(),
        pert=pert,
        batch=batch_codes.astype(np.int64),
        batches=batches,
        n=n,
        n_ctrl=n_ctrl,
        pert_context=np.searchsorted(contexts, perts["context"].to_numpy()),
        batch_context=np.searchsorted(contexts, batches["context"].to_numpy()),
    )


def choose_variant(lay: Layout, variant: Variant, large_batch_cells: int = LARGE_BATCH_CELLS) -> str:
    """``large`` when the median (perturbation, batch) pair holds ``>= large_batch_cells`` cells."""
    if variant in ("large", "small"):
        return variant
    if variant != "auto":
        raise InvalidInputError(f"variant must be 'auto', 'large' or 'small', not {variant!r}")
    return "large" if median_pair_cells(lay) >= large_batch_cells else "small"


def median_pair_cells(lay: Layout) -> float:
    """Median cells per (perturbation, batch) pair holding any: what the ``auto`` variant looks at."""
    return float(np.median(lay.n[lay.n > 0]))


def variant_params(lay: Layout, variant: Variant, chosen: str, large_batch_cells: int) -> dict:
    """The variant used and, when guessed (``auto``), the figures the guess rested on."""
    params = {"variant": chosen, "large_batch_cells": large_batch_cells}
    if variant == "auto":
        params["auto"] = {"median_cells_per_pair": median_pair_cells(lay), "threshold": large_batch_cells}
    return params


def cell_counts(data: PerturbationData, lay: Layout) -> pd.DataFrame:
    """Long table ``context, pert_id, batch, n_cells`` (controls as ``pert_id`` = ``<control>``)."""
    p, b = np.nonzero(lay.n)
    df = pd.DataFrame(
        {
            "context": data.perturbations["context"].to_numpy()[p],
            "pert_id": data.perturbations["label"].to_numpy()[p],
            "batch": lay.batches["batch"].to_numpy()[b],
            "n_cells": lay.n[p, b],
        }
    )
    (cb,) = np.nonzero(lay.n_ctrl)
    ctrl = pd.DataFrame(
        {
            "context": lay.batches["context"].to_numpy()[cb],
            "pert_id": "<control>",
            "batch": lay.batches["batch"].to_numpy()[cb],
            "n_cells": lay.n_ctrl[cb],
        }
    )
    return pd.concat([df, ctrl], ignore_index=True)


@dataclass
class Targets:
    """Per-perturbation targets of one kind, before they become a :class:`Task`.

    ``perts`` indexes ``data.perturbations``; ``values`` is ``[perts, genes]``;
    ``dropped`` lists (context, pert_id, reason) of perturbations without a row;
    ``discarded_pairs`` lists (context, label, batch, n_cells) pairs left out.
    """

    kind: str
    variant: str
    perts: np.ndarray
    values: np.ndarray
    params: dict
    dropped: pd.DataFrame
    discarded_pairs: pd.DataFrame


def dropped_frame(data: PerturbationData, idx: np.ndarray, reason: str) -> pd.DataFrame:
    """(context, pert_id, reason) of perturbations ``idx``."""
    p = data.perturbations
    return pd.DataFrame(
        {"context": p["context"].to_numpy()[idx], "pert_id": p["label"].to_numpy()[idx], "reason": reason}
    )


def pairs_frame(data: PerturbationData, lay: Layout, mask: np.ndarray) -> pd.DataFrame:
    """(context, pert_id, batch, n_cells) of the (perturbation, batch) pairs where ``mask``."""
    p, b = np.nonzero(mask)
    return pd.DataFrame(
        {
            "context": data.perturbations["context"].to_numpy()[p],
            "pert_id": data.perturbations["label"].to_numpy()[p],
            "batch": lay.batches["batch"].to_numpy()[b],
            "n_cells": lay.n[p, b],
        }
    )
