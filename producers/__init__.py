"""Producers compute embedding sets from recipes; jobs run many of them on Dask.

Write a producer by subclassing :class:`Producer` (see ``docs/producers.md``) and register it
under the ``pertstore.producers`` entry point group.
"""

from pertstore.producers._base import Batch, NoParams, Producer, ProducerContext
from pertstore.producers._registry import describe_producers, get_producer, producer_names
from pertstore.producers._spec import PlannedRecipe, RecipeSpec, load_recipes

__all__ = [
    "Batch", "NoParams", "PlannedRecipe", "Producer", "ProducerContext", "RecipeSpec", "describe_producers",
    "get_producer", "load_recipes", "producer_names",
]
