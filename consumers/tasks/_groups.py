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
    cells = data.cells
    perts = data.perturbations
    key = pd.MultiIndex.from_frame(perts[["context", "label"]])
    ctrl = cells["is_control"].to_numpy()
    pert = np.full(len(cells), -1, dtype=np.int64)
    where = pd.MultiIndex.from_arrays([cells["context"].astype(str), cells["label"].astype(str)])
    pert[~ctrl] = key.get_indexer(where[~ctrl])
    pairs = pd.MultiIndex.from_arrays([cells["context"].astype(str), cells["batch"].astype(str)])
    batch_codes, uniques = pd.factorize(pairs, sort=True)
    batches = pd.DataFrame({"context": uniques.get_level_values(0), "batch": uniques.get_level_values(1)})
    n_b = len(batches)
    n = np.zeros((len(perts), n_b), dtype=np.int64)
    np.add.at(n, (pert[~ctrl], batch_codes[~ctrl]), 1)
    n_ctrl = np.bincount(batch_codes[ctrl], minlength=n_b)
    contexts = sorted(perts["context"].unique())
    return Layout(rows=cells["row"].to_numpy(), pert=pert, batch=batch_codes.astype(np.int64), batches=batches,
                  n=n, n_ctrl=n_ctrl, pert_context=np.searchsorted(contexts, perts["context"].to_numpy()),
                  batch_context=np.searchsorted(contexts, batches["context"].to_numpy()))


def choose_variant(lay: Layout, variant: Variant, large_batch_cells: int = LARGE_BATCH_CELLS) -> str:
    """``large`` when the median (perturbation, batch) pair holds ``>= large_batch_cells`` cells."""
    if variant in ("large", "small"):
        return variant
    if variant != "auto":
        raise InvalidInputError(f"variant must be 'auto', 'large' or 'small', not {variant!r}")
    pairs = lay.n[lay.n > 0]
    return "large" if np.median(pairs) >= large_batch_cells else "small"


def cell_counts(data: PerturbationData, lay: Layout) -> pd.DataFrame:
    """Long table ``context, pert_id, batch, n_cells`` (controls as ``pert_id`` = ``<control>``)."""
    p, b = np.nonzero(lay.n)
    df = pd.DataFrame({"context": data.perturbations["context"].to_numpy()[p],
                       "pert_id": data.perturbations["label"].to_numpy()[p],
                       "batch": lay.batches["batch"].to_numpy()[b], "n_cells": lay.n[p, b]})
    (cb,) = np.nonzero(lay.n_ctrl)
    ctrl = pd.DataFrame({"context": lay.batches["context"].to_numpy()[cb], "pert_id": "<control>",
                         "batch": lay.batches["batch"].to_numpy()[cb], "n_cells": lay.n_ctrl[cb]})
    return pd.concat([df, ctrl], ignore_index=True)


@dataclass
class Targets:
    """Per-perturbation targets of one kind, before they become a :class:`Task`.

    ``perts`` indexes ``data.perturbations``; ``values`` is ``[perts, genes]``;
    ``dropped`` maps ``"context/label"`` to why it has no row;
    ``discarded_pairs`` lists (context, label, batch, n_cells) pairs left out.
    """

    kind: str
    variant: str
    perts: np.ndarray
    values: np.ndarray
    params: dict
    dropped: dict[str, str]
    discarded_pairs: pd.DataFrame


def pert_names(data: PerturbationData, idx: np.ndarray) -> list[str]:
    """``context/label`` of perturbations ``idx``."""
    p = data.perturbations
    return [f"{c}/{lab}" for c, lab in zip(p["context"].to_numpy()[idx], p["label"].to_numpy()[idx], strict=True)]
