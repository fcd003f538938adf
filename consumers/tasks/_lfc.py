"""Batch-aware log fold changes (average treatment effect), design section 5."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._groups import (
    LARGE_BATCH_CELLS,
    Layout,
    Targets,
    Variant,
    choose_variant,
    dropped_frame,
    layout,
    pairs_frame,
    variant_params,
)
from ._ingest import PerturbationData
from ._matrix import BLOCK_ROWS, Progress, group_sums


def lfc_design(lay: Layout, variant: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-(perturbation, batch) weights of the perturbed and the control means.

    ``LFC[p] = sum_b a[p, b] * mean(p, b) - sum_b c[p, b] * mean(control, b)``.

    - ``large``: over the batches holding both perturbed and control cells,
      ``a = c = 1 / #such batches``.
    - ``small``: ``a = 1 / #batches of p``; ``c = 1 / #batches with controls``
      in p's context (the global control).
    """
    has_ctrl = lay.n_ctrl > 0
    if variant == "large":
        common = (lay.n > 0) & has_ctrl[None, :]
        m = common.sum(axis=1, keepdims=True)
        a = np.divide(common, m, out=np.zeros(common.shape), where=m > 0)
        return a, a.copy()
    present = lay.n > 0
    a = present / present.sum(axis=1, keepdims=True)
    same = lay.pert_context[:, None] == lay.batch_context[None, :]
    ctrl = same & has_ctrl[None, :]
    return a, ctrl / ctrl.sum(axis=1, keepdims=True)


def lfc(
    data: PerturbationData,
    *,
    variant: Variant = "auto",
    large_batch_cells: int = LARGE_BATCH_CELLS,
    block_rows: int = BLOCK_ROWS,
    progress: Progress | None = None,
    client: Any = None,
) -> Targets:
    """Batch-aware LFC of every perturbation against its context's controls.

    Cells are normalised (1e4 counts, log1p) unless the input is already
    log-normalised. One streaming pass over row blocks forms the weighted sums
    ``W @ X`` with a sparse weight matrix ``W`` (one entry per cell), so memory
    is ``O((perturbations + batches) * genes)`` plus one block.

    Parameters
    ----------
    data
        From :func:`read_perturbation_data`.
    variant
        ``large``, ``small`` or ``auto`` (``large`` when the median
        (perturbation, batch) pair holds at least ``large_batch_cells`` cells).
    block_rows, progress, client
        Cells per block; ``progress(stage, done, total)``; a ``distributed.Client``
        to sum row ranges on its workers (see :func:`group_sums`).

    Returns
    -------
    Targets with ``values[p]`` = LFC over ``data.genes``; perturbations sharing
    no batch with controls (``large``) are in ``dropped``. Differential input
    (``data.input == "differential"``) gives the mean over batches of each
    batch's mean of the perturbation's samples, no control subtracted.
    """
    lay = layout(data)
    if data.input == "differential":  # already differences: replicates averaged per batch, then over batches
        chosen = "differential"
        a, _ = lfc_design(lay, "small")
        c = np.zeros((a.shape[0], a.shape[1]))
    else:
        chosen = choose_variant(lay, variant, large_batch_cells)
        a, c = lfc_design(lay, chosen)
    keep = a.sum(axis=1) > 0
    n_p, n_b = a.shape
    is_pert = lay.pert >= 0
    pw = np.zeros(len(lay.pert))
    pw[is_pert] = a[lay.pert[is_pert], lay.batch[is_pert]] / lay.n[lay.pert[is_pert], lay.batch[is_pert]]
    pw[~is_pert] = 1.0 / lay.n_ctrl[lay.batch[~is_pert]] if chosen != "differential" else 0.0
    group = np.where(is_pert, lay.pert, n_p + lay.batch)
    use = pw > 0
    sums, _ = group_sums(
        data.matrix,
        rows=lay.rows[use],
        group=group[use],
        weight=pw[use],
        n_groups=n_p + n_b,
        block_rows=block_rows,
        progress=progress,
        client=client,
    )
    values = sums[:n_p] - c @ sums[n_p:]
    (kept,) = np.nonzero(keep)
    dropped = dropped_frame(data, np.flatnonzero(~keep), "no batch holds both its cells and control cells")
    params = (
        variant_params(lay, variant, chosen, large_batch_cells) if chosen != "differential" else {"variant": chosen}
    )
    return Targets(
        kind="lfc",
        variant=chosen,
        perts=kept,
        values=values[kept],
        params=params,
        dropped=dropped,
        discarded_pairs=pairs_frame(data, lay, (lay.n > 0) & (a == 0)),
    )
