"""Reading embedding sets: chunk-aware row gathers through a decoded-chunk cache.

A set's ``values`` are row chunks of ``chunk_rows x dim`` float32, Blosc-LZ4 compressed, one
object per chunk (``values/c/<i>/0``). A read of some rows fetches only the chunks holding them,
concurrently, and decodes each straight into a per-set buffer shaped like the whole set (pages
of the buffer that were never written cost no memory). A later read of rows in chunks already
decoded is then plain numpy fancy indexing. Sets are evicted least-recently-used first when the
decoded bytes exceed the cache budget.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numcodecs
import numpy as np
import pandas as pd
from numcodecs import blosc

from pertstore.errors import CorruptedSetError
from pertstore.store._card import SetCard
from pertstore.store._storage import GROUP_META, Storage

blosc.use_threads = False  # decode in our own threads, with Blosc's GIL-free contextual API
_ZSTD = numcodecs.Zstd()
_VLEN = numcodecs.VLenUTF8()


def decode_chunk(raw: bytes, chunk_rows: int, dim: int, out: np.ndarray | None = None) -> np.ndarray:
    """Decode one stored ``values`` chunk into a ``[chunk_rows, dim]`` float32 array."""
    if out is None:
        out = np.empty((chunk_rows, dim), dtype="<f4")
    blosc.decompress(raw, out)
    return out


class OpenSet:
    """One published set opened for reading: its card, entity index and decoded chunks."""

    def __init__(self, storage: Storage, key: str, *, threads: int = 8) -> None:
        self.storage = storage
        self.key = key
        self.threads = threads
        meta = json.loads(storage.read_bytes(f"{key}/{GROUP_META}"))
        self.card = SetCard.from_attrs(meta.get("attributes", {}), where=key)
        arrays = meta.get("consolidated_metadata", {}).get("metadata", {})
        _check_layout(arrays.get("values"), arrays.get("entity"), self.card, key)
        self.ids = _read_entity_ids(storage, key, arrays["entity"])
        if len(self.ids) != self.card.n_rows:
            raise CorruptedSetError(f"{key}: {len(self.ids)} entity ids but the card says {self.card.n_rows} rows")
        self.index = pd.Index(self.ids)
        self.n_chunks = -(-self.card.n_rows // self.card.chunk_rows)
        self._buffer: np.ndarray | None = None
        self._loaded = np.zeros(self.n_chunks, dtype=bool)
        self._lock = threading.Lock()

    @property
    def chunk_nbytes(self) -> int:
        return self.card.chunk_rows * self.card.dim * 4

    @property
    def loaded_nbytes(self) -> int:
        return int(self._loaded.sum()) * self.chunk_nbytes

    def positions(self, entity_ids) -> np.ndarray:
        """Row of each canonical id in this set, -1 where the set lacks it."""
        return self.index.get_indexer(entity_ids)

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """``values[positions]`` as a new float32 array, reading only the chunks needed."""
        positions = np.asarray(positions, dtype=np.int64)
        self._ensure(np.unique(positions // self.card.chunk_rows))
        return self._buffer[positions]

    def all_rows(self) -> np.ndarray:
        self._ensure(np.arange(self.n_chunks))
        return self._buffer[: self.card.n_rows]

    def _ensure(self, chunks: np.ndarray) -> None:
        with self._lock:
            if self._buffer is None:
                self._buffer = np.empty((self.n_chunks * self.card.chunk_rows, self.card.dim), dtype="<f4")
            need = chunks[~self._loaded[chunks]]
            if need.size == 0:
                return
            keys = [f"{self.key}/values/c/{c}/0" for c in need]
            rows, dim = self.card.chunk_rows, self.card.dim

            def fetch(c_key: tuple[int, str]) -> None:
                c, k = c_key
                try:
                    raw = self.storage.read_bytes(k)
                    decode_chunk(raw, rows, dim, out=self._buffer[c * rows : (c + 1) * rows])
                except FileNotFoundError as e:
                    raise CorruptedSetError(f"{self.key}: chunk {c} is missing ({k})") from e
                except (RuntimeError, ValueError) as e:
                    raise CorruptedSetError(f"{self.key}: chunk {c} cannot be decoded ({e})") from e

            if self.storage.is_local and len(need) > 1 and self.threads > 1:
                with ThreadPoolExecutor(min(self.threads, len(need))) as pool:
                    list(pool.map(fetch, zip(need.tolist(), keys)))
            elif self.storage.is_local:
                for item in zip(need.tolist(), keys):
                    fetch(item)
            else:  # one batched request for object stores
                for c, raw in zip(need.tolist(), self.storage.read_many(keys, threads=self.threads)):
                    try:
                        decode_chunk(raw, rows, dim, out=self._buffer[c * rows : (c + 1) * rows])
                    except (RuntimeError, ValueError) as e:
                        raise CorruptedSetError(f"{self.key}: chunk {c} cannot be decoded ({e})") from e
            self._loaded[need] = True

    def drop(self) -> None:
        with self._lock:
            self._buffer = None
            self._loaded[:] = False


def _check_layout(values_meta: dict | None, entity_meta: dict | None, card: SetCard, key: str) -> None:
    if values_meta is None or entity_meta is None:
        raise CorruptedSetError(f"{key}: consolidated metadata lacks the 'values' or 'entity' array")
    codecs = [c["name"] for c in values_meta.get("codecs", [])]
    shape = values_meta.get("shape")
    chunks = values_meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape")
    if codecs != ["bytes", "blosc"] or values_meta.get("data_type") != "float32":
        raise CorruptedSetError(f"{key}: 'values' uses codecs {codecs} / {values_meta.get('data_type')}, "
                                "which this pertstore does not read")
    if shape != [card.n_rows, card.dim] or chunks != [card.chunk_rows, card.dim]:
        raise CorruptedSetError(f"{key}: 'values' shape {shape} / chunks {chunks} disagree with the card")


def _read_entity_ids(storage: Storage, key: str, entity_meta: dict) -> list[str]:
    codecs = [c["name"] for c in entity_meta.get("codecs", [])]
    n = entity_meta["shape"][0]
    chunk = entity_meta["chunk_grid"]["configuration"]["chunk_shape"][0]
    if codecs != ["vlen-utf8", "zstd"] or chunk < n:
        raise CorruptedSetError(f"{key}: 'entity' uses codecs {codecs} / chunk {chunk}, which this pertstore does not read")
    try:
        raw = storage.read_bytes(f"{key}/entity/c/0")
        ids = _VLEN.decode(_ZSTD.decode(raw))
    except FileNotFoundError as e:
        raise CorruptedSetError(f"{key}: the entity ids are missing") from e
    return [str(x) for x in ids[:n]]


class SetCache:
    """Open sets of one process, with an LRU budget on decoded bytes."""

    def __init__(self, storage: Storage, *, max_bytes: int, threads: int = 8) -> None:
        self.storage = storage
        self.max_bytes = max_bytes
        self.threads = threads
        self._sets: OrderedDict[str, OpenSet] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> OpenSet:
        with self._lock:
            s = self._sets.get(key)
            if s is not None:
                self._sets.move_to_end(key)
                return s
        s = OpenSet(self.storage, key, threads=self.threads)
        with self._lock:
            self._sets[key] = s
        return s

    def trim(self) -> None:
        """Drop decoded data of the least recently used sets until the budget holds."""
        with self._lock:
            total = sum(s.loaded_nbytes for s in self._sets.values())
            for s in list(self._sets.values())[:-1]:
                if total <= self.max_bytes:
                    break
                total -= s.loaded_nbytes
                s.drop()

    def clear(self) -> None:
        with self._lock:
            self._sets.clear()
