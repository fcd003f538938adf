"""Writing embedding sets: fill a staging group chunk by chunk, then seal and publish it atomically.

A published set is sealed: its chunks lie in a few large shards (Zarr v3 ``sharding_indexed``,
the shard index at the end), so a cold reader opens one object per shard instead of one per chunk
and fetches the chunks it needs by byte range. There are two ways to get there:

- rows known in order (:meth:`SetWriter.write_rows`, :meth:`SetWriter.write_all`): the chunks are
  encoded and written straight into the sealed shards, one pass, no intermediate objects;
- chunks in any order, by several workers (:meth:`SetWriter.write_chunks`): staging keeps one
  object per row chunk (``values/c/<i>/0``), a resumed writer sees which exist, and publishing
  concatenates the staged chunk objects, unchanged, into the shards.

A seal is complete once its marker (``staging/<source>/<version>/sealed.done``) exists; publishing
renames the sealed group into place.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterable, Iterator, Sequence
from importlib.metadata import version as _pkg_version
from itertools import islice
from typing import Any, cast

import google_crc32c
import numpy as np
import zarr
from numcodecs import Blosc
from pertstore.store._card import SetCard
from pertstore.store._layout import set_key, staging_key
from pertstore.store._recipe import Recipe
from pertstore.store._storage import GROUP_META, Storage
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from pertstore.errors import InvalidInputError, PertstoreError

#: Target size of one uncompressed chunk of ``values``. Small enough that a request for a few ids
#: reads little (a cold read of 2,000 ids from 30 sets reads 0.6-1.1 GB with 16 KiB chunks, 1.8 GB
#: with 64 KiB ones, and takes 0.8x the time), large enough that a request for thousands does not
#: drown in per-chunk overhead (see ``benchmarks/bench_align.py`` and ``docs/architecture.md``).
DEFAULT_CHUNK_BYTES = 16 * 1024
#: Largest uncompressed size of one shard of ``values``: whole sets of up to 256 MiB are one object.
#: Fewer objects mean fewer opens on a cold read; a shard is streamed, never held in memory.
DEFAULT_SHARD_BYTES = 256 * 1024 * 1024
VALUES_CODEC: dict[str, Any] = {"cname": "lz4", "clevel": 5, "shuffle": "shuffle", "typesize": 4, "blocksize": 0}
SEALED = "sealed"
"""Folder inside a staging group where the sharded copy is assembled before it is published."""
SEALED_DONE = "sealed.done"
"""Marker beside :data:`SEALED`, written once the sealed group is complete."""
EMPTY = 2**64 - 1
"""Offset and length of an absent chunk in a shard index."""


def chunk_rows_for(dim: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Rows per chunk: the largest power of two keeping a chunk within ``chunk_bytes``, at least 1."""
    rows = max(1, chunk_bytes // (4 * max(dim, 1)))
    return 1 << (rows.bit_length() - 1)


def shard_chunks_for(n_chunks: int, chunk_nbytes: int, shard_bytes: int = DEFAULT_SHARD_BYTES) -> int:
    """Chunks per shard: as few shards as keep each under ``shard_bytes``, of near-equal size."""
    n_shards = max(1, -(-n_chunks * chunk_nbytes // shard_bytes))
    return max(1, -(-n_chunks // n_shards))


def _entity_codecs() -> list:
    """Zarr compressors of the ``entity`` array: Zstandard, then a CRC32C checked on every read of the ids."""
    return [ZstdCodec(), Crc32cCodec()]


def _values_codecs() -> list:
    """Zarr codecs of ``values`` chunks: Blosc, then the CRC32C that lets readers and ``verify``
    catch a corrupted chunk."""
    return [BloscCodec(**VALUES_CODEC), Crc32cCodec()]


def with_crc32c(raw: bytes) -> bytes:
    """``raw`` followed by its little-endian CRC32C, as Zarr's ``crc32c`` codec writes it."""
    return raw + google_crc32c.value(raw).to_bytes(4, "little")


def shard_index_bytes(offsets_lengths: np.ndarray) -> bytes:
    """A shard index as Zarr writes it: little-endian ``uint64`` (offset, length) pairs, then CRC32C."""
    return with_crc32c(np.ascontiguousarray(offsets_lengths, dtype="<u8").tobytes())


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

    def __init__(
        self,
        storage: Storage,
        recipe: Recipe,
        ids: Sequence[str],
        dim: int,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        shard_bytes: int = DEFAULT_SHARD_BYTES,
    ) -> None:
        ids = [str(i) for i in ids]
        if not ids:
            raise InvalidInputError(f"set {recipe.source}: no entities to write")
        if len(set(ids)) != len(ids):
            seen: dict[str, int] = {}
            for row, i in enumerate(ids):
                if i in seen:
                    raise InvalidInputError(
                        f"set {recipe.source}: entity {i!r} appears twice (rows {seen[i]} and {row})"
                    )
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
            values, entity = cast(zarr.Array, group["values"]), cast(zarr.Array, group["entity"])
            ok = (
                values.shape == (len(self.ids), self.dim)
                and values.chunks[0] == self.chunk_rows
                and list(np.asarray(entity[:])) == self.ids
            )
            if not ok:  # a stale staging area from another layout: start over
                self.storage.delete_prefix(self.staged)
                existing = False
                zstore = self.storage.zarr_store(self.staged, read_only=False)
        if not existing:
            group = zarr.open_group(zstore, mode="w", zarr_format=3)
            group.create_array(
                "values",
                shape=(len(self.ids), self.dim),
                dtype="float32",
                chunks=(self.chunk_rows, self.dim),
                dimension_names=("entity", "dim"),
                compressors=_values_codecs(),
                fill_value=0.0,
                config={"write_empty_chunks": True},
            )
            ent = group.create_array(
                "entity",
                shape=(len(self.ids),),
                dtype=str,
                chunks=(len(self.ids),),
                dimension_names=("entity",),
                compressors=_entity_codecs(),
            )
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
            raise InvalidInputError(
                f"set {self.recipe.source}: chunks {first}..{first + n_chunks - 1} out of range 0..{self.n_chunks - 1}"
            )
        block = check_values(values, self.ids[start:stop], where=f"set {self.recipe.source} chunk {first}")
        if block.shape[1] != self.dim:
            raise InvalidInputError(
                f"set {self.recipe.source}: chunk {first} has {block.shape[1]} dims, expected {self.dim}"
            )
        cast(zarr.Array, self._open()["values"])[start:stop] = block

    def write_all(self, values: np.ndarray, *, failed: dict[str, str] | None = None) -> None:
        """Write every row at once and seal the set (see :meth:`write_rows`)."""
        self.write_rows([values], failed=failed)

    def write_rows(self, blocks: Iterable[np.ndarray], *, failed: dict[str, str] | None = None) -> None:
        """Write the set's rows, given in order as blocks of any size, straight into sealed shards.

        Each chunk is encoded once and streamed into its shard; only one shard's encoded chunks
        are held at a time. ``failed`` (entity -> reason) goes on the card. :meth:`publish` then
        only renames the sealed group into place.
        """
        self.storage._check_writable()
        self.storage.delete_prefix(self.staged)  # chunks or a seal left by an earlier attempt
        content = content_hash(self.ids)
        self._seal(self._encoded_chunks(blocks, content), content, failed or {})

    def _encoded_chunks(self, blocks: Iterable[np.ndarray], content) -> Iterator[bytes]:
        """Re-cut ``blocks`` into chunks, validate, hash and encode them (zarr's Blosc settings)."""
        codec = Blosc(
            cname=VALUES_CODEC["cname"],
            clevel=VALUES_CODEC["clevel"],
            shuffle=Blosc.SHUFFLE,
            blocksize=VALUES_CODEC["blocksize"],
            typesize=VALUES_CODEC["typesize"],
        )
        pending: list[np.ndarray] = []
        n_pending = row = 0
        for block in blocks:
            stop = row + len(block)
            block = check_values(block, self.ids[row:stop], where=f"set {self.recipe.source} rows {row}..{stop - 1}")
            if block.shape[1] != self.dim:
                raise InvalidInputError(
                    f"set {self.recipe.source}: rows {row}..{stop - 1} have {block.shape[1]} dims, expected {self.dim}"
                )
            content.update(block)  # C-contiguous float32: hashed in place
            pending.append(block)
            n_pending, row = n_pending + len(block), stop
            while n_pending >= self.chunk_rows or (row == len(self.ids) and n_pending):
                rows = np.concatenate(pending) if len(pending) > 1 else pending[0]
                take = min(self.chunk_rows, n_pending)
                chunk = rows[:take]
                if take < self.chunk_rows:  # the set's last chunk, padded with the fill value as zarr does
                    chunk = np.zeros((self.chunk_rows, self.dim), dtype=np.float32)
                    chunk[:take] = rows[:take]
                pending, n_pending = [rows[take:]], n_pending - take
                yield with_crc32c(codec.encode(chunk))
        if row != len(self.ids):
            raise InvalidInputError(f"set {self.recipe.source}: {row} rows written for {len(self.ids)} ids")

    def publish(self, *, failed: dict[str, str] | None = None) -> tuple[SetCard, bool]:
        """Seal the staged set (unless :meth:`write_rows` did) and make it visible.

        Returns ``(card, newly_published)``; ``failed`` goes on the card of chunk-staged sets.
        Publishing a recipe that is already published discards the staging copy and returns the
        existing card with ``newly_published=False``.
        """
        if not self.published and not self.storage.exists(f"{self.staged}/{SEALED_DONE}"):
            self._seal_staged_chunks(failed or {})
        return publish_sealed(self.storage, self.recipe)

    def _seal_staged_chunks(self, failed: dict[str, str]) -> None:
        """Concatenate the staged chunk objects, unchanged, into the sealed group's shards."""
        self._open()
        missing = sorted(set(range(self.n_chunks)) - self.done_chunks())
        if missing:
            raise InvalidInputError(
                f"set {self.recipe.source}: {len(missing)} chunk(s) never written, first {missing[0]}"
            )
        self.storage.delete_prefix(f"{self.staged}/{SEALED}")  # a seal left half-done by a killed writer
        content = content_hash(self.ids)
        self._seal(self._staged_chunks(range(self.n_chunks), content), content, failed)
        self._group = None

    def _seal(self, chunks: Iterator[bytes], content, failed: dict[str, str]) -> None:
        """Write the sealed group from the set's encoded chunks, in order, shard by shard, then its card."""
        sealed = f"{self.staged}/{SEALED}"
        group = self._create_sealed_group(sealed)
        for shard, first in enumerate(range(0, self.n_chunks, self.shard_chunks)):
            n = min(self.shard_chunks, self.n_chunks - first)
            self.storage.write_parts(f"{sealed}/values/c/{shard}/0", self._shard_parts(islice(chunks, n)))
        next(chunks, None)  # lets the chunk generator finish its own checks (rows written vs ids)
        self._finish_seal(group, content, failed)

    def _staged_chunks(self, chunks: range, content) -> Iterator[bytes]:
        from pertstore.store._reader import decode_chunk

        for c in chunks:
            raw = self.storage.read_bytes(f"{self.staged}/values/c/{c}/0")
            rows = min(self.chunk_rows, len(self.ids) - c * self.chunk_rows)
            content.update(
                decode_chunk(raw, self.chunk_rows, self.dim)[:rows]
            )  # leading rows: contiguous, hashed in place
            yield raw

    def _create_sealed_group(self, sealed: str) -> zarr.Group:
        group = zarr.open_group(self.storage.zarr_store(sealed, read_only=False), mode="w", zarr_format=3)
        group.create_array(
            "values",
            shape=(len(self.ids), self.dim),
            dtype="float32",
            chunks=(self.chunk_rows, self.dim),
            shards=(self.shard_chunks * self.chunk_rows, self.dim),
            dimension_names=("entity", "dim"),
            compressors=_values_codecs(),
            fill_value=0.0,
        )
        ent = group.create_array(
            "entity",
            shape=(len(self.ids),),
            dtype=str,
            chunks=(len(self.ids),),
            dimension_names=("entity",),
            compressors=_entity_codecs(),
        )
        ent[:] = np.array(self.ids, dtype=object)
        return group

    def _finish_seal(self, group: zarr.Group, content, failed: dict[str, str]) -> None:
        """Put the card on the sealed group, consolidate its metadata and mark the seal complete."""
        card = SetCard(
            source=self.recipe.source,
            version=self.recipe.version,
            kind=self.recipe.kind,
            context=self.recipe.context,
            dim=self.dim,
            n_rows=len(self.ids),
            chunk_rows=self.chunk_rows,
            recipe=self.recipe,
            checksum=f"sha256:{content.hexdigest()}",
            failed=failed,
            pertstore_version=_pkg_version("pertstore"),
        )
        group.attrs.update(card.to_attrs())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # consolidated metadata is not in the v3 spec yet
            zarr.consolidate_metadata(group.store)
        self.storage.write_bytes(f"{self.staged}/{SEALED_DONE}", b"")

    def _shard_parts(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """One shard's encoded chunks, then its index."""
        index = np.full((self.shard_chunks, 2), EMPTY, dtype="<u8")
        offset = 0
        for i, raw in enumerate(chunks):
            index[i] = (offset, len(raw))
            offset += len(raw)
            yield raw
        yield shard_index_bytes(index)

    def abort(self) -> None:
        """Drop the staging group."""
        self._group = None
        self.storage.delete_prefix(self.staged)


def publish_sealed(storage: Storage, recipe: Recipe) -> tuple[SetCard, bool]:
    """Rename the sealed set of ``recipe`` into place; returns ``(card, newly_published)``."""
    staged, final = staging_key(recipe.source, recipe.version), set_key(recipe.source, recipe.version)
    if storage.exists(f"{final}/{GROUP_META}"):
        storage.delete_prefix(staged)
        return read_card(storage, final), False
    if not storage.exists(f"{staged}/{SEALED_DONE}"):
        raise PertstoreError(f"set {recipe.source}@{recipe.version} has no complete seal to publish")
    card = read_card(storage, f"{staged}/{SEALED}")
    newly = storage.publish(f"{staged}/{SEALED}", final)
    storage.delete_prefix(staged)
    return (card if newly else read_card(storage, final)), newly


def content_hash(ids: Sequence[str]):
    """The running set checksum: sha256 of the ids, a NUL, then the float32 rows in order."""
    content = hashlib.sha256("\n".join(ids).encode())
    content.update(b"\0")
    return content


def read_card(storage: Storage, key: str) -> SetCard:
    """The card of the published set at ``key``."""
    meta = json.loads(storage.read_bytes(f"{key}/{GROUP_META}"))
    return SetCard.from_attrs(meta.get("attributes", {}), where=key)
