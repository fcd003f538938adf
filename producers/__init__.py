"""Producers compute embedding sets from recipes; jobs run many of them on Dask.

Write a producer by subclassing :class:`Producer` (see ``docs/producers.md``) and register it
under the ``pertstore.producers`` entry point group.
"""

from pertstore.producers._base import Batch, NoParams, Producer, ProducerContext
from pertstore.producers._registry import describe_producers, get_producer, producer_names
from pertstore.producers._spec import PlannedRecipe, RecipeSpec, load_recipes

__all__ = [
    "Batch",
    "JobProgress",
    "Jobs",
    "NoParams",
    "PlannedRecipe",
    "Producer",
    "ProducerContext",
    "RecipeProgress",
    "RecipeSpec",
    "TERMINAL",
    "describe_producers",
    "get_producer",
    "load_recipes",
    "produce_inline",
    "producer_names",
]

_LAZY = {
    "JobProgress": "pertstore.producers._jobs",
    "Jobs": "pertstore.producers._jobs",
    "RecipeProgress": "pertstore.producers._jobs",
    "TERMINAL": "pertstore.producers._jobs",
    "produce_inline": "pertstore.producers._jobs",
}
"""Exports imported on first use (they pull in torch or Dask)."""


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
