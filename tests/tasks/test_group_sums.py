"""The compiled group sums (``_matrix._add_rows``) against a dense numpy construction, every option at once."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from pertstore.consumers.tasks._matrix import CellMatrix, group_sums

from pertstore.errors import InvalidInputError


@pytest.mark.parametrize("genes, normalise_kept", [(None, False), ([1, 4, 5, 9], False), ([0, 2, 3, 7, 8], True)])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_group_sums_equal_dense_numpy(genes, normalise_kept, dtype):
    rng = np.random.default_rng(3)
    counts = rng.poisson(0.7, size=(57, 10)).astype(dtype)
    counts[5] = 0  # an empty cell
    names = np.array([f"c{i}" for i in range(57)])
    matrix = CellMatrix(
        sp.csr_matrix(counts),
        is_counts=True,
        obs_names=names,
        var_names=names[:10],
        genes=None if genes is None else np.array(genes),
        normalise_kept=normalise_kept,
    )
    rows = rng.permutation(57)[:40]  # 17 cells in no group
    group, weight = rng.integers(0, 6, size=40), rng.random(40)
    s1, s2 = group_sums(matrix, rows=rows, group=group, weight=weight, n_groups=6, squares=True, block_rows=16)

    x = counts.astype(np.float64)
    kept = np.arange(10) if genes is None else np.array(genes)
    totals = (x[:, kept] if normalise_kept else x).sum(axis=1, keepdims=True)
    norm = np.log1p(x / np.where(totals == 0, 1, totals) * 1e4)[:, kept]  # scanpy's normalize_total + log1p
    want1, want2 = np.zeros((6, kept.size)), np.zeros((6, kept.size))
    for r, g, w in zip(rows, group, weight, strict=True):
        want1[g] += w * norm[r]
        want2[g] += w * norm[r] ** 2
    np.testing.assert_allclose(s1, want1, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s2, want2, rtol=1e-12, atol=1e-12)


def test_group_sums_still_refuse_non_counts():
    x = sp.csr_matrix(np.array([[1.0, 2.5], [0.0, 1.0]]))
    names = np.array(["a", "b"], dtype=object)
    matrix = CellMatrix(x, is_counts=True, obs_names=names, var_names=names)
    with pytest.raises(InvalidInputError, match="non-integer value 2.5 at cell 'a', gene 'b'"):
        group_sums(matrix, rows=np.array([0, 1]), group=np.array([0, 0]), weight=np.ones(2), n_groups=1)
