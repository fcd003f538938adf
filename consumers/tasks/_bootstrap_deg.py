"""The DEG experimental error's replicates (resampled as pandas' groupby sample) and their scores per fold."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from ._bootstrap_lfc import _Cells
from ._deg import mean_var, vote, welch_labels
from ._groups import Layout, Targets
from ._ingest import PerturbationData
from ._matrix import BLOCK_ROWS, Progress, group_sums


def groupby_sample_counts(labels: np.ndarray, seed: int) -> np.ndarray:
    """How often each cell is drawn by ``df.groupby(labels).sample(frac=1, replace=True, random_state=seed)``.

    pandas draws ``RandomState(seed).choice(n_g, n_g, replace=True)`` for each
    group in sorted key order, the group's rows in frame order.
    """
    rs = np.random.RandomState(seed)
    keys, inverse = np.unique(labels, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(inverse, minlength=keys.size))]
    counts = np.zeros(labels.size, dtype=np.int64)
    for g in range(keys.size):
        rows = order[bounds[g] : bounds[g + 1]]
        counts += np.bincount(rows[rs.choice(rows.size, size=rows.size, replace=True)], minlength=labels.size)
    return counts


def _deg_small_replicates(
    data: PerturbationData,
    lay: Layout,
    targets: Targets,
    trials: int,
    seed: int,
    block_rows: int,
    progress: Progress | None,
) -> Iterator[np.ndarray]:
    """``run_exp_error_essential_deg``: per trial, every label's cells resampled, the labels recomputed."""
    alpha = targets.params["alpha"]
    labels = data.cells["label"].astype(str).to_numpy()
    ctx_codes = lay.batch_context[lay.batch]
    n_contexts = len(data.cells["context"].cat.categories)
    slot = np.full(len(data.perturbations), -1)
    slot[targets.perts] = np.arange(targets.perts.size)
    group = np.where(lay.pert >= 0, slot[np.maximum(lay.pert, 0)], targets.perts.size + ctx_codes)
    n_groups, k = targets.perts.size + n_contexts, targets.perts.size
    ref = k + lay.pert_context[targets.perts]
    for t, state in enumerate(np.random.SeedSequence(seed).generate_state(trials)):
        weight = np.zeros(len(labels))
        for ci in range(n_contexts):  # the reference runs each context (cell line) on its own
            in_ctx = ctx_codes == ci
            weight[in_ctx] = groupby_sample_counts(labels[in_ctx], int(state))
        use = (group >= 0) & (weight > 0)
        s1, s2 = group_sums(
            data.matrix,
            rows=lay.rows[use],
            group=group[use],
            weight=weight[use],
            n_groups=n_groups,
            squares=True,
            block_rows=block_rows,
        )
        n = np.bincount(group[use], weights=weight[use], minlength=n_groups)[:, None]
        mean, var = mean_var(s1, s2, n)
        yield welch_labels(mean[:k], var[:k], n[:k], mean[ref], var[ref], n[ref], alpha=alpha)
        if progress is not None:
            progress("bootstrap", t + 1, trials)


def _deg_large_replicates(
    data: PerturbationData, lay: Layout, targets: Targets, outer: int, inner: int, seed: int, progress: Progress | None
) -> Iterator[np.ndarray]:
    """``run_exp_error_tahoe_deg``: per perturbation, its kept batches drawn (``outer`` states of
    ``SeedSequence(seed)``, the same for every perturbation), then per inner state the cells of each
    (drawn batch ``plate_i``, perturbation or ``control``) group resampled as pandas does; labels per
    drawn batch against its controls, then the vote."""
    alpha, min_cells = targets.params["alpha"], targets.params["min_cells"]
    kept = (lay.n >= min_cells) & (lay.n_ctrl >= min_cells)[None, :]
    cells = _Cells(data, lay)
    label = data.perturbations["label"].to_numpy()
    out = np.zeros((outer * inner, targets.perts.size, data.matrix.shape[1]), dtype=np.int8)
    outer_states = np.random.SeedSequence(seed).generate_state(outer)
    for i, (p, x) in enumerate(cells.perturbed([int(p) for p in targets.perts], BLOCK_ROWS)):
        groups = sorted(((b, s) for b, s in cells.groups(p) if kept[p, b]), key=lambda g: cells.first_row(p, g[1]))
        x2 = x.copy()
        x2.data **= 2
        for o, state in enumerate(outer_states):
            drawn = np.random.default_rng(state).choice(len(groups), size=len(groups))
            names = [f"plate_{j}" for j in range(drawn.size)]
            # pandas' group order: (plate name, label) sorted; the controls are 'control'
            order = sorted((names[j], key) for j in range(drawn.size) for key in ("control", str(label[p])))
            inner_states = np.random.SeedSequence(int(state)).generate_state(inner)
            counts = {key: np.zeros((_size(groups, drawn, key, lay), inner)) for key in order}
            for t, inner_state in enumerate(inner_states):
                rs = np.random.RandomState(int(inner_state))
                for key in order:
                    n = counts[key].shape[0]
                    counts[key][:, t] = np.bincount(rs.choice(n, size=n, replace=True), minlength=n)
            votes = np.zeros((3, inner, x.shape[1]), dtype=np.int32)
            for j, g in enumerate(drawn):
                b, rows = groups[g]
                kp, kc = counts[(names[j], str(label[p]))], counts[(names[j], "control")]
                xc = cells.controls([b])
                xc2 = xc.copy()
                xc2.data **= 2
                mean, var = mean_var((x[rows].T @ kp).T, (x2[rows].T @ kp).T, float(kp.shape[0]))
                cmean, cvar = mean_var((xc.T @ kc).T, (xc2.T @ kc).T, float(kc.shape[0]))
                lab = welch_labels(mean, var, kp.shape[0], cmean, cvar, kc.shape[0], alpha=alpha)
                for c in range(3):
                    votes[c] += lab == c - 1
            out[o * inner : (o + 1) * inner, i] = vote(votes)
        if progress is not None:
            progress("bootstrap", i + 1, targets.perts.size)
    yield from out


def _size(groups: list[tuple[int, slice]], drawn: np.ndarray, key: tuple[str, str], lay: Layout) -> int:
    b, rows = groups[drawn[int(key[0].split("_")[1])]]
    return int(lay.n_ctrl[b]) if key[1] == "control" else rows.stop - rows.start


def _score(
    data: PerturbationData, lay: Layout, targets: Targets, folds: np.ndarray, replicates: Iterator[np.ndarray]
) -> pd.DataFrame:
    """Each replicate's labels scored per fold against the task's labels: F1, precision and recall over the
    classes present in the truth (the reference also reports AUROC and AUPRC of one-hot replicate labels;
    they are left out here, a per-gene curve per trial and fold costs minutes and no figure uses them)."""
    from pertstore.consumers.evaluators._metrics import deg_label_metrics

    contexts = [str(c) for c in data.cells["context"].cat.categories]
    row_ctx = lay.pert_context[targets.perts]
    rows = []
    for t, replicate in enumerate(replicates):
        for ci, ctx in enumerate(contexts):
            for f in sorted(set(folds[row_ctx == ci].tolist()) - {-1}):
                test = (row_ctx == ci) & (folds == f)
                for m, v in deg_label_metrics(targets.values[test], replicate[test]).items():
                    rows.append((ctx, int(f), m, t, float(v)))
    return pd.DataFrame(rows, columns=["context", "fold", "metric", "trial", "value"])
