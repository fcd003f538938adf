"""Seeded folds over perturbations, per context."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

N_FOLDS = 5


def make_folds(contexts: Sequence[str], *, n_folds: int = N_FOLDS, seed: int = 0) -> np.ndarray:
    """Fold of each perturbation (row), balanced within each context.

    Within context ``c`` (in sorted order, index ``i``) the rows are shuffled
    by ``numpy.random.default_rng([seed, i])`` and dealt round-robin into
    ``n_folds`` folds, so fold sizes differ by at most one.

    Returns
    -------
    int8 array of folds ``0 .. n_folds - 1``, aligned with ``contexts``.
    """
    contexts = np.asarray(contexts, dtype=str)
    folds = np.empty(contexts.size, dtype=np.int8)
    for i, ctx in enumerate(sorted(set(contexts))):
        (rows,) = np.nonzero(contexts == ctx)
        perm = np.random.default_rng([seed, i]).permutation(rows.size)
        folds[rows[perm]] = np.arange(rows.size) % n_folds
    return folds
