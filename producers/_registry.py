"""Finding producers: built-in ones and any package's, through the ``pertstore.producers`` entry points."""

from __future__ import annotations

import importlib
from functools import lru_cache
from importlib.metadata import entry_points

import pandas as pd
from pertstore.producers._base import Producer

from pertstore.errors import NotFoundError

ENTRY_POINT_GROUP = "pertstore.producers"


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def producer_names() -> list[str]:
    """Names of every installed producer."""
    return sorted(_entry_points())


def get_producer(name: str) -> type[Producer]:
    """The producer class registered as ``name``, or imported from ``"package.module:Class"``."""
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise NotFoundError(f"producer {name!r} cannot be imported: {e}") from e
    else:
        ep = _entry_points().get(name)
        if ep is None:
            raise NotFoundError(f"no producer named {name!r}; installed: {', '.join(producer_names()) or 'none'}")
        cls = ep.load()
    if not (isinstance(cls, type) and issubclass(cls, Producer)):
        raise NotFoundError(f"{name!r} is not a pertstore Producer subclass")
    return cls


def describe_producers() -> pd.DataFrame:
    """One row per installed producer: name, kind, mode, inputs, parameters with defaults."""
    rows = []
    for name in producer_names():
        cls = get_producer(name)
        params = []
        for field, info in cls.Params.model_fields.items():
            default = "required" if info.is_required() else repr(info.get_default(call_default_factory=True))
            params.append(f"{field}={default}")
        rows.append(
            {
                "name": name,
                "kind": cls.kind,
                "mode": "chunked" if cls.chunked else "whole",
                "inputs": ", ".join(f"{k}:{v}" for k, v in cls.inputs.items()),
                "params": ", ".join(params),
                "description": cls.description,
            }
        )
    return pd.DataFrame(rows, columns=["name", "kind", "mode", "inputs", "params", "description"])
