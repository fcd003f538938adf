"""Differentially expressed gene labels in {-1, 0, +1}, as scanpy's ``rank_genes_groups(method='t-test')``."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy import special, stats

from pertstore.errors import InvalidInputError

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

MIN_CELLS = 30
ALPHA = 0.05


def mean_var(s1: np.ndarray, s2: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance (ddof=1, as scanpy's ``_get_mean_var``) from sums, sums of squares and counts.

    ``n`` broadcasts against ``s1``; a negative variance from rounding is clipped to 0.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / n
        var = np.maximum(s2 / n - mean**2, 0.0)
        var *= np.where(n > 1, n / np.maximum(n - 1, 1), 1.0)
    return mean, var


def welch_labels(
    mean: np.ndarray,
    var: np.ndarray,
    n: np.ndarray,
    ref_mean: np.ndarray,
    ref_var: np.ndarray,
    ref_n: np.ndarray,
    *,
    alpha: float = ALPHA,
) -> np.ndarray:
    """Labels of each row (a group against its reference), as scanpy computes them.

    Welch's t (``scipy.stats.ttest_ind_from_stats``, ``equal_var=False``); a NaN
    score becomes 0 and a NaN p-value 1; Benjamini-Hochberg across genes (last
    axis); ``sign(t)`` where the adjusted p-value is below ``alpha``, else 0.

    Only genes that can be called get an exact p-value: the t distribution's
    tails are heavier than the normal's, so ``|t| <= z(1 - alpha/2)`` implies
    ``p >= alpha``, and such genes can neither be called nor change the
    Benjamini-Hochberg decision of the others (their adjusted p-values stay
    ``>= alpha`` and the ranks of the p-values below ``alpha`` do not depend on
    them). The labels are identical to testing every gene.

    Returns
    -------
    int8 array shaped like ``mean`` broadcast against the reference.
    """
    arrays = np.broadcast_arrays(mean, var, n, ref_mean, ref_var, ref_n)
    shape = arrays[0].shape
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (arrays[0] - arrays[3]) / np.sqrt(arrays[1] / arrays[2] + arrays[4] / arrays[5])
    cand = np.abs(t) > special.ndtri(1 - alpha / 2) * (1 - 1e-6)  # NaN -> False (scanpy: p = 1)
    labels = np.zeros(shape, dtype=np.int8)
    if not cand.any():
        return labels
    m1, v1, n1, m2, v2, n2 = (a[cand] for a in arrays)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores, p = stats.ttest_ind_from_stats(
            mean1=m1, std1=np.sqrt(v1), nobs1=n1, mean2=m2, std2=np.sqrt(v2), nobs2=n2, equal_var=False
        )
    pvals = np.ones(shape)
    pvals[cand] = np.nan_to_num(p, nan=1.0)
    score = np.zeros(shape)
    score[cand] = np.nan_to_num(scores, nan=0.0)
    flat_p, flat_s = pvals.reshape(-1, shape[-1]), score.reshape(-1, shape[-1])
    rows = np.flatnonzero((flat_p < alpha).any(axis=1))
    adjusted = stats.false_discovery_control(flat_p[rows], axis=-1, method="bh")
    flat = labels.reshape(-1, shape[-1])
    flat[rows] = np.sign(flat_s[rows]) * (adjusted < alpha)
    return labels


def vote(counts: np.ndarray) -> np.ndarray:
    """Majority vote over batches; ``counts[k]`` counts label ``k - 1``.

    The label with most votes wins; a tie goes to the sign of the sum of the
    tied labels ((0, 1) -> 1, (0, -1) -> -1, (1, -1) -> 0, (1, 0, -1) -> 0).
    """
    top = counts.max(axis=0)
    return np.sign((counts[2] == top).astype(np.int8) - (counts[0] == top)).astype(np.int8)


def deg(
    data: PerturbationData,
    *,
    variant: Variant = "auto",
    large_batch_cells: int = LARGE_BATCH_CELLS,
    min_cells: int = MIN_CELLS,
    alpha: float = ALPHA,
    block_rows: int = BLOCK_ROWS,
    progress: Progress | None = None,
    client: Any = None,
) -> Targets:
    """DEG labels of every perturbation against its context's controls.

    One streaming pass forms per-group sums and sums of squares (see
    :func:`group_sums`; ``block_rows``, ``progress`` and ``client`` as in
    :func:`lfc`); all t-tests then run vectorised.

    - ``large``: per batch, each (perturbation, batch) pair with at least
      ``min_cells`` cells against that batch's controls (a batch with fewer
      than ``min_cells`` controls is left out), then :func:`vote` over batches.
    - ``small``: all cells of a perturbation (at least ``min_cells``) against
      all control cells of its context.

    Returns
    -------
    Targets with int8 labels; perturbations with no pair left are in
    ``dropped`` and the pairs left out in ``discarded_pairs``.
    """
    if data.input == "differential":
        raise InvalidInputError(
            "DEG labels need expression values (t-tests against controls), not differential "
            "input; build an LFC task, or a DEG task from a table of significant genes"
        )
    lay = layout(data)
    stream = {"block_rows": block_rows, "progress": progress, "client": client}
    chosen = choose_variant(lay, variant, large_batch_cells)
    params = {**variant_params(lay, variant, chosen, large_batch_cells), "min_cells": min_cells, "alpha": alpha}
    if chosen == "large":
        kept_pairs = (lay.n >= min_cells) & (lay.n_ctrl >= min_cells)[None, :]
        values, keep = _deg_large(data, lay, kept_pairs, alpha, stream)
        why = f"no batch with >= {min_cells} of its cells and >= {min_cells} control cells"
    else:
        keep = lay.n.sum(axis=1) >= min_cells
        kept_pairs = np.where(keep[:, None], lay.n > 0, False)
        values = _deg_small(data, lay, keep, alpha, stream)
        why = f"fewer than {min_cells} cells"
    dropped = dropped_frame(data, np.flatnonzero(~keep), why)
    return Targets(
        kind="deg",
        variant=chosen,
        perts=np.flatnonzero(keep),
        values=values,
        params=params,
        dropped=dropped,
        discarded_pairs=pairs_frame(data, lay, (lay.n > 0) & ~kept_pairs),
    )


def _deg_small(data: PerturbationData, lay: Layout, keep: np.ndarray, alpha: float, stream: dict) -> np.ndarray:
    n_contexts = int(lay.pert_context.max()) + 1
    (kept,) = np.nonzero(keep)
    slot = np.full(len(keep), -1)
    slot[kept] = np.arange(kept.size)
    is_pert = lay.pert >= 0
    group = np.where(is_pert, slot[np.maximum(lay.pert, 0)], kept.size + lay.batch_context[lay.batch])
    use = group >= 0
    s1, s2 = group_sums(
        data.matrix,
        rows=lay.rows[use],
        group=group[use],
        weight=np.ones(use.sum()),
        n_groups=kept.size + n_contexts,
        squares=True,
        **stream,
    )
    n = np.bincount(group[use], minlength=kept.size + n_contexts).astype(float)[:, None]
    mean, var = mean_var(s1, s2, n)
    ref = kept.size + lay.pert_context[kept]
    return welch_labels(mean[: kept.size], var[: kept.size], n[: kept.size], mean[ref], var[ref], n[ref], alpha=alpha)


def _deg_large(
    data: PerturbationData, lay: Layout, kept_pairs: np.ndarray, alpha: float, stream: dict
) -> tuple[np.ndarray, np.ndarray]:
    n_p, n_b = kept_pairs.shape
    pair_p, pair_b = np.nonzero(kept_pairs)
    pair_id = np.full(kept_pairs.shape, -1)
    pair_id[pair_p, pair_b] = np.arange(pair_p.size)
    ctrl_batches = np.flatnonzero(kept_pairs.any(axis=0))
    ctrl_id = np.full(n_b, -1)
    ctrl_id[ctrl_batches] = pair_p.size + np.arange(ctrl_batches.size)
    is_pert = lay.pert >= 0
    group = np.where(is_pert, pair_id[np.maximum(lay.pert, 0), lay.batch], ctrl_id[lay.batch])
    use = group >= 0
    n_groups = pair_p.size + ctrl_batches.size
    s1, s2 = group_sums(
        data.matrix,
        rows=lay.rows[use],
        group=group[use],
        weight=np.ones(use.sum()),
        n_groups=n_groups,
        squares=True,
        **stream,
    )
    n = np.bincount(group[use], minlength=n_groups).astype(float)[:, None]
    mean, var = mean_var(s1, s2, n)
    ref = ctrl_id[pair_b]
    labels = welch_labels(
        mean[: pair_p.size], var[: pair_p.size], n[: pair_p.size], mean[ref], var[ref], n[ref], alpha=alpha
    )
    member = sp.csr_matrix(
        (np.ones(pair_p.size, dtype=np.int32), (pair_p, np.arange(pair_p.size))), shape=(n_p, pair_p.size)
    )
    counts = np.stack([member @ (labels == k).astype(np.int32) for k in (-1, 0, 1)])
    keep = kept_pairs.any(axis=1)
    return vote(counts[:, keep]), keep
