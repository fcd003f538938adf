"""Deterministic training on CPU: every random source seeded, deterministic kernels, state restored after."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed Python's ``random`` (torch-geometric's negative sampling), numpy and torch; restore them after."""
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    was = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was[0], warn_only=was[1])
            random.setstate(py_state)
            np.random.set_state(np_state)
