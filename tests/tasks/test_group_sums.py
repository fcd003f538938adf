"""The compiled group sums (``_kernels.add_rows``) against a dense numpy construction, every option at once."""

from __future__ import annotations

import anndata as ad
import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from anndata.io import sparse_dataset
from pertstore.consumers.tasks._matrix import CellMatrix, group_sums

from pertstore.errors import InvalidInputError


def _split_duplicates(counts: np.ndarray, rng: np.random.Generator) -> sp.csr_matrix:
    """``counts`` as a non-canonical CSR: each non-zero stored as two entries (summing to it), rows unsorted."""
    data, indices, indptr = [], [], [0]
    for row in counts:
        cols = np.flatnonzero(row)
        first = np.floor(row[cols] * rng.random(cols.size))
        first[row[cols] > 2**24] = 0  # past float32's exact integers: an explicit zero beside the value
        entries = rng.permutation(np.r_[np.c_[cols, first], np.c_[cols, row[cols] - first]])
        indices += list(entries[:, 0].astype(np.int32))
        data += list(entries[:, 1])
        indptr.append(len(data))
    x = sp.csr_matrix((np.array(data, dtype=counts.dtype), np.array(indices, np.int32), indptr), shape=counts.shape)
    assert not x.has_canonical_format
    return x


@pytest.mark.parametrize("genes, normalise_kept", [(None, False), ([1, 4, 5, 9], False), ([0, 2, 3, 7, 8], True)])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
@pytest.mark.parametrize("stored", ["memory", "backed h5ad, duplicate entries"])
def test_group_sums_equal_dense_numpy(genes, normalise_kept, dtype, stored, tmp_path, request):
    rng = np.random.default_rng(3)
    counts = rng.poisson(0.7, size=(57, 10)).astype(dtype)
    large = rng.random(counts.shape) < 0.1  # counts past the per-row table of small counts' logs
    counts[large] = rng.integers(60, 400, size=int(large.sum()))
    counts[7, 3] = 1e19 if dtype == np.float32 else 2**62  # past int64 as a float32 count
    counts[5] = 0  # an empty cell
    names = np.array([f"c{i}" for i in range(57)])
    elem = sp.csr_matrix(counts)
    if stored != "memory":
        with h5py.File(tmp_path / "x.h5ad", "w") as f:
            ad.io.write_elem(f, "X", _split_duplicates(counts, rng))
        file = h5py.File(tmp_path / "x.h5ad", "r")
        request.addfinalizer(file.close)
        elem = sparse_dataset(file["X"])
    matrix = CellMatrix(
        elem,
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
