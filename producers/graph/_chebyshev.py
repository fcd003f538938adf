"""Chebyshev polynomials and the normalised adjacency, for WaveGC's spectral wavelets."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


def chebyshev_basis(x: torch.Tensor, degree: int) -> torch.Tensor:
    """``[degree + 1, *x.shape]``: ``T_0(x) .. T_degree(x)``."""
    terms = [torch.ones_like(x), x]
    for _ in range(degree - 1):
        terms.append(2 * x * terms[-1] - terms[-2])
    return torch.stack(terms[: degree + 1])


def normalised_adjacency(adj: sp.spmatrix) -> sp.csr_matrix:
    """``D^-1/2 A D^-1/2`` (isolated nodes get an empty row)."""
    adj = sp.csr_matrix(adj, dtype=np.float64)
    degree = np.asarray(adj.sum(axis=1)).ravel()
    inv = np.divide(1.0, np.sqrt(degree), out=np.zeros_like(degree), where=degree > 0)
    return sp.csr_matrix(sp.diags(inv) @ adj @ sp.diags(inv), dtype=np.float32)
