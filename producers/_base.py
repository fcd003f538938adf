"""The producer interface: what a producer declares and the two ways it computes embeddings."""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pertstore.store import EntityKind, Storage
from pydantic import BaseModel, ConfigDict

from pertstore._config import get_settings
from pertstore.errors import InvalidInputError

InputKind = Literal["file", "set"]


class NoParams(BaseModel):
    """Parameters of a producer that takes none."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class Batch:
    """Embeddings computed for some entities, and the entities that failed.

    ``ids[i]`` is the canonical id of row ``i`` of ``values``; ``failed`` maps an entity id to the
    reason it has no row (an unparsable SMILES, a gene without a sequence, ...).
    """

    ids: list[str]
    values: np.ndarray
    failed: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ids = [str(i) for i in self.ids]
        self.values = np.asarray(self.values, dtype=np.float32)
        if self.values.ndim != 2 or self.values.shape[0] != len(self.ids):
            raise InvalidInputError(f"a batch needs values of shape [{len(self.ids)}, dim], got {self.values.shape}")

    @classmethod
    def empty(cls, dim: int = 0, failed: dict[str, str] | None = None) -> Batch:
        return cls([], np.zeros((0, dim), dtype=np.float32), failed or {})


@dataclass
class ProducerContext:
    """What a running producer may use: the store's files, its inputs, its context and a device.

    Producers run on Dask workers, so they never touch the catalog: other sets are opened by their
    storage key and entity ids are resolved against the registry files of the store.
    """

    storage: Storage
    context: str = ""
    files: dict[str, str] = field(default_factory=dict)
    """File inputs: name -> local path or fsspec URL."""
    sets: dict[str, str] = field(default_factory=dict)
    """Set inputs: name -> ``source@version``."""

    @cached_property
    def device(self) -> str:
        """``cuda`` when torch sees a GPU, else ``cpu`` (``PERTSTORE_DEVICE`` overrides); imports torch."""
        if device := get_settings().device:
            return device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def path(self, name: str) -> Path:
        """The local path of file input ``name``."""
        if name not in self.files:
            raise InvalidInputError(f"the recipe gives no file input {name!r} (inputs: {sorted(self.files)})")
        return Path(self.files[name])

    def open_set(self, name: str):
        """The published set given as input ``name`` (an :class:`~pertstore.store.OpenSet`)."""
        from pertstore.store import OpenSet, set_key

        if name not in self.sets:
            raise InvalidInputError(f"the recipe gives no set input {name!r} (inputs: {sorted(self.sets)})")
        source, version = self.sets[name].split("@", 1)
        return OpenSet(self.storage, set_key(source, version))

    def registry(self, kind: EntityKind) -> pd.DataFrame:
        """The store's entity registry of ``kind`` (one row per canonical entity)."""
        if kind not in self._registries:
            self._registries[kind] = _read_registry(self.storage, kind)
        return self._registries[kind]

    def resolver(self, kind: EntityKind):
        """An in-memory catalog of the registry, for :meth:`Catalog.resolve` on workers."""
        if kind not in self._resolvers:
            from pertstore.catalog import Catalog

            cat = Catalog(":memory:")
            cat.replace_registry(kind, self.registry(kind))
            self._resolvers[kind] = cat
        return self._resolvers[kind]

    def resolve(self, ids: list[str], kind: EntityKind):
        """Resolve ids of any namespace to canonical ids (a :class:`Resolution`)."""
        return self.resolver(kind).resolve(ids, kind)

    @cached_property
    def _registries(self) -> dict[str, pd.DataFrame]:
        return {}

    @cached_property
    def _resolvers(self) -> dict[str, Any]:
        return {}


def _read_registry(storage: Storage, kind: str) -> pd.DataFrame:
    from pertstore.store import registry_key

    key = registry_key(kind)
    reg = _parsed_registry(storage.read_bytes(key)) if storage.exists(key) else None
    if reg is None or reg.empty:
        raise InvalidInputError(f"the store has no {kind} registry; run `pertstore registry {kind}s` first")
    return reg.copy()


@lru_cache(maxsize=4)
def _parsed_registry(raw: bytes) -> pd.DataFrame:
    """A registry file parsed once per worker process and file content (the parts of a job share it)."""
    from pertstore.catalog import parse_registry

    return parse_registry(raw)


class Producer(ABC):
    """Computes one embedding set from a recipe's parameters and inputs.

    Subclasses declare ``name``, ``kind``, ``Params`` (a pydantic model), ``inputs`` (name -> "file"
    or "set") and ``code_version`` (bump it when the numbers change), and implement either

    - **chunked** (``chunked = True``): :meth:`entities` lists the ids to embed and
      :meth:`compute_chunk` embeds a few of them; the job runs chunks in parallel, resumes
      finished chunks, and never holds the whole set in memory; or
    - **whole** (``chunked = False``): :meth:`compute` returns every row at once (graph models).

    A producer reports per-entity failures in :attr:`Batch.failed` instead of raising.
    """

    name: ClassVar[str]
    kind: ClassVar[EntityKind]
    Params: ClassVar[type[BaseModel]] = NoParams
    inputs: ClassVar[dict[str, InputKind]] = {}
    code_version: ClassVar[str] = "1"
    chunked: ClassVar[bool] = True
    chunk_size: ClassVar[int] = 1024
    """Entities per work item of a chunked producer."""
    description: ClassVar[str] = ""

    def __init__(self, params: BaseModel | dict | None, ctx: ProducerContext) -> None:
        self.params = params if isinstance(params, self.Params) else self.parse_params(params or {})
        self.ctx = ctx

    @classmethod
    def parse_params(cls, params: dict) -> BaseModel:
        try:
            return cls.Params.model_validate(params)
        except Exception as e:  # pydantic's ValidationError lists every bad field
            raise InvalidInputError(f"producer {cls.name}: invalid parameters: {e}") from e

    @classmethod
    def libraries(cls) -> dict[str, str]:
        """Versions of the libraries whose changes could change the numbers (recorded in the recipe)."""
        return {}

    def entities(self) -> list[str]:
        """Canonical ids to embed (chunked producers); runs in the job's driver, so keep it cheap."""
        raise NotImplementedError(f"producer {self.name} is chunked and must implement entities()")

    def compute_chunk(self, ids: list[str]) -> Batch:
        """Embeddings of ``ids`` (chunked producers)."""
        raise NotImplementedError(f"producer {self.name} is chunked and must implement compute_chunk()")

    def compute(self) -> Batch:
        """Every row of the set (whole producers)."""
        raise NotImplementedError(f"producer {self.name} must implement compute()")

    def close(self) -> None:  # noqa: B027 - an optional hook: most producers hold nothing to release
        """Release models or files (called once per work item)."""
