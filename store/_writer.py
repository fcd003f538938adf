"""Writing embedding sets: fill a staging group chunk by chunk, then seal and publish it atomically.

Staging keeps one object per row chunk (``values/c/<i>/0``), so chunks can be written in any
order, by several workers, and a resumed writer sees which exist. Publishing seals the set: the
staged chunk objects are concatenated, unchanged, into a few large shards (Zarr v3
``sharding_indexed``, the shard index at the end), so a cold reader opens one object per shard
instead of one per chunk and fetches the chunks it needs by byte range.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator, Sequence
from importlib.metadata import version as _pkg_version

import google_crc32c
import numpy as np
import zarr
from zarr.codecs import BloscCodec

from pertstore.errors import InvalidInputError
from pertstore.store._card import SetCard
from pertstore.store._layout import set_key, staging_key
from pertstore.store._recipe import Recipe
from pertstore.store._storage import GROUP_META, Storage

#: Target size of one uncompressed chunk of ``values``. Small enough that a request for a few ids
#: decodes little, large enough that a request for thousands does not drown in per-chunk overhead
#: (see ``benchmarks/bench_align.py`` and ``docs/architecture.md``).
DEFAULT_CHUNK_BYTES = 64 * 1024
#: Largest uncompressed size of one shard of ``values``: whole sets of up to 256 MiB are one object.
#: Fewer objects mean fewer opens on a cold read; a shard is streamed, never held in memory.
DEFAULT_SHARD_BYTES = 256 * 1024 * 1024
VALUES_CODEC = {"cname": "lz4", "clevel": 5, "shuffle": "shuffle", "typesize": 4, "blocksize": 0}
SEALED = "sealed"
"""Folder inside a staging group where the sharded copy is assembled before it is published."""
EMPTY = 2**64 - 1
"""Offset and length of an absent chunk in a shard index."""


def chunk_rows_for(dim: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Rows per chunk: a power of two giving about ``chunk_bytes`` per chunk, at least 8."""
    rows = max(1, chunk_bytes // (4 * max(dim, 1)))
    return max(8, 1 << (rows.bit_length() - 1))


def shard_chunks_for(n_chunks: int, chunk_nbytes: int, shard_bytes: int = DEFAULT_SHARD_BYTES) -> int:
    """Chunks per shard: as few shards as keep each under ``shard_bytes``, of near-equal size."""
    n_shards = max(1, -(-n_chunks * chunk_nbytes // shard_bytes))
    return max(1, -(-n_chunks // n_shards))


def shard_index_bytes(offsets_lengths: np.ndarray) -> bytes:
    """A shard index as Zarr writes it: little-endian ``uint64`` (offset, length) pairs, then CRC32C."""
    raw = np.ascontiguousarray(offsets_lengths, dtype="<u8").tobytes()
    return raw + np.uint32(google_crc32c.value(raw)).tobytes()


def check_values(values: np.ndarray, ids: Sequence[str], *, where: str) -> np.ndarray:
    """Validate a ``[entity, dim]`` block: numeric, 2-D, finite; return it as float32."""
    arr = np.asarray(values)
    if arr.ndim != 2:
        raise InvalidInputError(f"{where}: values must be 2-D [entity, dim], got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise InvalidInputError(f"{where}: values must be numeric, got dtype {arr.dtype}")
    if arr.shape[0] != len(ids):
        raise InvalidInputError(f"{where}: {arr.shape[0]} rows of values but {len(ids)} ids")
    arr32 = arr.astype(np.float32, copy=False)
    bad = ~np.isfinite(arr32)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        n = int(bad.any(axis=1).sum())
        raise InvalidInputError(
            f"{where}: {n} row(s) hold NaN or inf values; first at row {row} (id {ids[row]!r}), column {col}"
        )
    return np.ascontiguousarray(arr32)


class SetWriter:
    """Stage one embedding set and publish it.

    The staging group lives at ``staging/<source>/<version>``: a writer opened again for the same
    recipe (e.g. a resumed job) finds the chunks already written and only fills the rest.
    """

    def __init__(self, storage: Storage, recipe: Recipe, ids: Sequence[str], dim: int,
                 *, chunk_bytes: int = DEFAULT_CHUNK_BYTES, shard_bytes: int = DEFAULT_SHARD_BYTES) -> None:
        ids = [str(i) for i in ids]
        if not ids:
            raise InvalidInputError(f"set {recipe.source}: no entities to write")
        if len(set(ids)) != len(ids):
            seen: dict[str, int] = {}
            for row, i in enumerate(ids):
                if i in seen:
                    raise InvalidInputError(f"set {recipe.source}: entity {i!r} appears twice (rows {seen[i]} and {row})")
                seen[i] = row
        if dim < 1:
            raise InvalidInputError(f"set {recipe.source}: dim must be >= 1, got {dim}")
        self.storage = storage
        self.recipe = recipe
        self.ids = ids
        self.dim = int(dim)
        self.chunk_rows = chunk_rows_for(self.dim, chunk_bytes)
        self.shard_chunks = shard_chunks_for(self.n_chunks, self.chunk_rows * self.dim * 4, shard_bytes)
        self.staged = staging_key(recipe.source, recipe.version)
        self.final = set_key(recipe.source, recipe.version)
        self._group: zarr.Group | None = None

    @property
    def n_chunks(self) -> int:
        return -(-len(self.ids) // self.chunk_rows)

    @property
    def published(self) -> bool:
        return self.storage.exists(f"{self.final}/{GROUP_META}")

    def _open(self) -> zarr.Group:
        if self._group is not None:
            return self._group
        self.storage._check_writable()
        zstore = self.storage.zarr_store(self.staged, read_only=False)
        existing = self.storage.exists(f"{self.staged}/values/{GROUP_META}")
        if existing:
            group = zarr.open_group(zstore, mode="r+", zarr_format=3)
            ok = (group["values"].shape == (len(self.ids), self.dim)
                  and group["values"].chunks[0] == self.chunk_rows
                  and list(group["entity"][:]) == self.ids)
            if not ok:  # a stale staging area from another layout: start over
                self.storage.delete_prefix(self.staged)
                existing = False
                zstore = self.storage.zarr_store(self.staged, read_only=False)
        if not existing:
            group = zarr.open_group(zstore, mode="w", zarr_format=3)
            group.create_array(
                "values", shape=(len(self.ids), self.dim), dtype="float32", chunks=(self.chunk_rows, self.dim),
                dimension_names=("entity", "dim"), compressors=BloscCodec(**VALUES_CODEC), fill_value=0.0,
                config={"write_empty_chunks": True},
            )
            ent = group.create_array("entity", shape=(len(self.ids),), dtype=str, chunks=(len(self.ids),),
                                     dimension_names=("entity",))
            ent[:] = np.array(self.ids, dtype=object)
        self._group = group
        return group

    def done_chunks(self) -> set[int]:
        """Indices of the chunks already present in the staging group."""
        names = self.storage.list_dir(f"{self.staged}/values/c")
        return {int(n) for n in names if n.isdigit()}

    def write_chunk(self, index: int, values: np.ndarray) -> None:
        """Write chunk ``index`` (rows ``index * chunk_rows`` onwards) of the set."""
        self.write_chunks(index, values, n_chunks=1)

    def write_chunks(self, first: int, values: np.ndarray, *, n_chunks: int | None = None) -> None:
        """Write consecutive whole chunks from chunk ``first`` on (zarr encodes and stores them concurrently).

        ``values`` holds ``n_chunks`` chunks' rows (default: as many as it has rows for); only the
        set's last chunk may be short.
        """
        n_chunks = n_chunks or max(1, -(-len(values) // self.chunk_rows))
        start = first * self.chunk_rows
        stop = min(start + n_chunks * self.chunk_rows, len(self.ids))
        if not (0 <= first and first + n_chunks <= self.n_chunks):
            raise InvalidInputError(f"set {self.recipe.source}: chunks {first}..{first + n_chunks - 1} out of range "
                                    f"0..{self.n_chunks - 1}")
        block = check_values(values, self.ids[start:stop], where=f"set {self.recipe.source} chunk {first}")
        if block.shape[1] != self.dim:
            raise InvalidInputError(f"set {self.recipe.source}: chunk {first} has {block.shape[1]} dims, expected {self.dim}")
        self._open()["values"][start:stop] = block

    def write_all(self, values: np.ndarray) -> None:
        """Write every row at once (zarr encodes and stores the chunks concurrently)."""
        block = check_values(values, self.ids, where=f"set {self.recipe.source}")
        if block.shape[1] != self.dim:
            raise InvalidInputError(f"set {self.recipe.source}: values have {block.shape[1]} dims, expected {self.dim}")
        self._open()["values"][:] = block

    def publish(self, *, failed: dict[str, str] | None = None) -> tuple[SetCard, bool]:
        """Seal the staged group and make it visible; returns ``(card, newly_published)``.

        Publishing a recipe that is already published discards the staging copy and returns the
        existing card with ``newly_published=False``.
        """
        if self.published:
            self.storage.delete_prefix(self.staged)
            return read_card(self.storage, self.final), False
        self._open()
        missing = sorted(set(range(self.n_chunks)) - self.done_chunks())
        if missing:
            raise InvalidInputError(f"set {self.recipe.source}: {len(missing)} chunk(s) never written, first {missing[0]}")
        sealed = f"{self.staged}/{SEALED}"
        self.storage.delete_prefix(sealed)  # a seal left half-done by a killed writer
        card = self._seal(sealed, failed or {})
        self._group = None
        newly = self.storage.publish(sealed, self.final)
        self.storage.delete_prefix(self.staged)
        return (card if newly else read_card(self.storage, self.final)), newly

    def _seal(self, sealed: str, failed: dict[str, str]) -> SetCard:
        """Write the sharded, consolidated group at ``sealed`` from the staged chunks; return its card."""
        group = zarr.open_group(self.storage.zarr_store(sealed, read_only=False), mode="w", zarr_format=3)
        group.create_array(
            "values", shape=(len(self.ids), self.dim), dtype="float32", chunks=(self.chunk_rows, self.dim),
            shards=(self.shard_chunks * self.chunk_rows, self.dim), dimension_names=("entity", "dim"),
            compressors=BloscCodec(**VALUES_CODEC), fill_value=0.0,
        )
        ent = group.create_array("entity", shape=(len(self.ids),), dtype=str, chunks=(len(self.ids),),
                                 dimension_names=("entity",))
        ent[:] = np.array(self.ids, dtype=object)
        content = hashlib.sha256("\n".join(self.ids).encode())
        content.update(b"\0")
        digests: list[str] = []
        for shard, first in enumerate(range(0, self.n_chunks, self.shard_chunks)):
            chunks = range(first, min(first + self.shard_chunks, self.n_chunks))
            self.storage.write_parts(f"{sealed}/values/c/{shard}/0", self._shard_parts(chunks, digests, content))
        card = SetCard(
            source=self.recipe.source, version=self.recipe.version, kind=self.recipe.kind,
            context=self.recipe.context, dim=self.dim, n_rows=len(self.ids), chunk_rows=self.chunk_rows,
            recipe=self.recipe, checksum=f"sha256:{content.hexdigest()}", chunk_digests=digests, failed=failed,
            pertstore_version=_pkg_version("pertstore"),
        )
        group.attrs.update(card.to_attrs())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # consolidated metadata is not in the v3 spec yet
            zarr.consolidate_metadata(group.store)
        return card

    def _shard_parts(self, chunks: range, digests: list[str], content) -> Iterator[bytes]:
        """The staged chunks of one shard, unchanged, then its index; digests and checksum on the way."""
        from pertstore.store._reader import decode_chunk

        index = np.full((self.shard_chunks, 2), EMPTY, dtype="<u8")
        offset = 0
        for i, c in enumerate(chunks):
            raw = self.storage.read_bytes(f"{self.staged}/values/c/{c}/0")
            digests.append(hashlib.sha256(raw).hexdigest())
            rows = min(self.chunk_rows, len(self.ids) - c * self.chunk_rows)
            content.update(decode_chunk(raw, self.chunk_rows, self.dim)[:rows].tobytes())
            index[i] = (offset, len(raw))
            offset += len(raw)
            yield raw
        yield shard_index_bytes(index)

    def abort(self) -> None:
        """Drop the staging group."""
        self._group = None
        self.storage.delete_prefix(self.staged)


def read_card(storage: Storage, key: str) -> SetCard:
    """The card of the published set at ``key``."""
    meta = json.loads(storage.read_bytes(f"{key}/{GROUP_META}"))
    return SetCard.from_attrs(meta.get("attributes", {}), where=key)
