"""Compiled loops over the non-zeros of CSR rows (numba): validation, value ranges and group sums."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def first_invalid(data: np.ndarray, allow_negative: bool, integers: bool) -> int:  # pragma: no cover (compiled)
    """Position of the first non-finite, negative (unless allowed) or non-integer (``integers``) value; -1."""
    for j in range(data.size):
        x = data[j]
        if not np.isfinite(x) or (x < 0 and not allow_negative) or (integers and x != np.floor(x)):
            return j
    return -1


@numba.njit(cache=True, nogil=True)
def value_range(values: np.ndarray) -> tuple[float, float, bool]:  # pragma: no cover (compiled)
    """``(min, max, all integers)`` of the finite values; ``(0, 0, True)`` for none."""
    low, top, integers, seen = 0.0, 0.0, True, False
    for j in range(values.size):
        x = float(values[j])
        if not np.isfinite(x):
            continue
        if not seen or x < low:
            low = x
        if not seen or x > top:
            top = x
        seen = True
        if integers and x != np.floor(x):
            integers = False
    return low, top, integers


SMALL_COUNTS = 64
"""Counts below this get their normalised log computed once per row in :func:`add_rows`."""


@numba.njit(cache=True, nogil=True)
def add_rows(
    out: np.ndarray,
    out2: np.ndarray,
    squares: bool,
    data: np.ndarray,
    indices: np.ndarray,
    indptr: np.ndarray,
    group: np.ndarray,
    weight: np.ndarray,
    column: np.ndarray,
    normalise: bool,
    total_kept: bool,
    target_sum: float,
) -> None:  # pragma: no cover (compiled)
    """The loop of :meth:`CellMatrix.add_rows`: per row, counts normalised as :meth:`CellMatrix._normalise`
    to ``target_sum`` (over every gene, or the kept ones with ``total_kept``), genes mapped through
    ``column`` (-1: left out), each value added into its (group, gene) cell, rows in order."""
    logs = np.empty(SMALL_COUNTS)  # per row: log(k * scale + 1) of the small counts k met so far
    for i in range(group.size):
        g = group[i]
        if g < 0:
            continue
        lo, hi = indptr[i], indptr[i + 1]
        scale = 1.0
        if normalise:
            total = 0.0
            for j in range(lo, hi):
                if not total_kept or column[indices[j]] >= 0:
                    total += float(data[j])
            scale = target_sum / (total if total != 0.0 else 1.0)
            logs[:] = -1.0
        w = weight[i]
        for j in range(lo, hi):
            c = column[indices[j]]
            if c < 0:
                continue
            x = float(data[j])
            if normalise:
                if x < SMALL_COUNTS:  # most counts are small: one log per distinct count in the row
                    k = int(x)
                    if logs[k] < 0.0:
                        logs[k] = np.log(x * scale + 1.0)
                    x = logs[k]
                else:
                    x = np.log(x * scale + 1.0)
            out[g, c] += w * x
            if squares:
                out2[g, c] += w * x * x
