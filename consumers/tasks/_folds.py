"""Seeded folds over perturbations: shared across contexts (as the reference), or drawn per context."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

N_FOLDS = 5


def make_folds(
    contexts: Sequence[str], *, labels: Sequence[str] | None = None, n_folds: int = N_FOLDS, seed: int = 0
) -> np.ndarray:
    """Fold of each perturbation (row).

    With ``labels`` (the default of built tasks), folds are drawn over the
    distinct perturbation labels: sorted, shuffled by
    ``numpy.random.default_rng(seed)`` and dealt round-robin into ``n_folds``
    folds, so the same perturbation falls in the same fold in every context
    (the reference's splits; joint models across cell lines need it). Without
    ``labels``, each context ``c`` (in sorted order, index ``i``) is shuffled by
    ``default_rng([seed, i])`` and dealt on its own, so fold sizes within a
    context differ by at most one.

    Returns
    -------
    int8 array of folds ``0 .. n_folds - 1``, aligned with ``contexts``.
    """
    contexts = np.asarray(contexts, dtype=str)
    folds = np.empty(contexts.size, dtype=np.int8)
    if labels is not None:
        keys, inverse = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
        of_key = np.empty(keys.size, dtype=np.int8)
        of_key[np.random.default_rng(seed).permutation(keys.size)] = np.arange(keys.size) % n_folds
        folds[:] = of_key[inverse]
        return folds
    for i, ctx in enumerate(sorted(set(contexts))):
        (rows,) = np.nonzero(contexts == ctx)
        perm = np.random.default_rng([seed, i]).permutation(rows.size)
        folds[rows[perm]] = np.arange(rows.size) % n_folds
    return folds
