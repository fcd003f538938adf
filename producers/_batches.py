"""Batches packed by token count, shared by the language-model producers."""

from __future__ import annotations

import numpy as np


def token_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped so that each batch's rows x longest length stays within ``max_tokens``."""
    order = np.argsort(lengths, kind="stable")
    batches, current, longest = [], [], 0
    for i in order:
        longest_if = max(longest, lengths[i])
        if current and longest_if * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, longest_if = [], lengths[i]
        current.append(int(i))
        longest = longest_if
    if current:
        batches.append(current)
    return batches
