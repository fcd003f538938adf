"""Chebyshev polynomials for graph filters: scalar bases, interpolation, and the sparse recursion.

A filter ``f(L)`` of the normalised Laplacian ``L = I - N`` (``N = D^-1/2 A D^-1/2``, spectrum of
``L`` in ``[0, 2]``) that is a polynomial of degree ``< m`` is ``sum_k c_k T_k(L - I)``; its
coefficients are exactly those of Chebyshev interpolation at ``m`` Chebyshev nodes, so any such
filter, whatever its parametrisation, is applied with one shared recursion
``T_0 X = X, T_1 X = -N X, T_{k+1} X = -2 N T_k X - T_{k-1} X``.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch


def chebyshev_basis(x: torch.Tensor, degree: int) -> torch.Tensor:
    """``[degree + 1, *x.shape]``: ``T_0(x) .. T_degree(x)``."""
    terms = [torch.ones_like(x), x]
    for _ in range(degree - 1):
        terms.append(2 * x * terms[-1] - terms[-2])
    return torch.stack(terms[: degree + 1])


def chebyshev_nodes(m: int) -> torch.Tensor:
    """The ``m`` Chebyshev nodes of the first kind in ``[-1, 1]``."""
    return torch.cos(math.pi * (torch.arange(m, dtype=torch.float64) + 0.5) / m)


def interpolation_matrix(m: int) -> torch.Tensor:
    """``[m, m]`` map from a function's values at :func:`chebyshev_nodes` to its Chebyshev coefficients."""
    basis = chebyshev_basis(chebyshev_nodes(m), m - 1)  # [m (k), m (node)]
    weight = torch.full((m, 1), 2.0 / m, dtype=torch.float64)
    weight[0] = 1.0 / m
    return weight * basis


def normalised_adjacency(adj: sp.spmatrix) -> sp.csr_matrix:
    """``D^-1/2 A D^-1/2`` (isolated nodes get an empty row)."""
    adj = sp.csr_matrix(adj, dtype=np.float64)
    degree = np.asarray(adj.sum(axis=1)).ravel()
    inv = np.divide(1.0, np.sqrt(degree), out=np.zeros_like(degree), where=degree > 0)
    return sp.csr_matrix(sp.diags(inv) @ adj @ sp.diags(inv), dtype=np.float32)


class _SymmetricMatmul(torch.autograd.Function):
    """``M @ X`` for a fixed symmetric scipy matrix ``M``; the gradient is ``M @ grad``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, matrix: sp.csr_matrix) -> torch.Tensor:
        ctx.matrix = matrix
        return torch.from_numpy(np.asarray(matrix @ x.detach().numpy()))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return torch.from_numpy(np.asarray(ctx.matrix @ grad.contiguous().numpy())), None


def chebyshev_terms(norm_adj: sp.csr_matrix, x: torch.Tensor, m: int) -> list[torch.Tensor]:
    """``[T_0(L - I) X, ..., T_{m-1}(L - I) X]`` with ``L - I = -norm_adj`` (symmetric)."""
    terms = [x]
    if m > 1:
        terms.append(-_SymmetricMatmul.apply(x, norm_adj))
    for _ in range(m - 2):
        terms.append(-2 * _SymmetricMatmul.apply(terms[-1], norm_adj) - terms[-2])
    return terms
