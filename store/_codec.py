"""How a set's arrays are encoded: the ``values`` chunk codec (Blosc, then a CRC32C), the shard
index, the check that a set's metadata is the layout this reader knows, and the entity ids."""

from __future__ import annotations

import google_crc32c
import numcodecs
import numpy as np
from numcodecs import blosc
from pertstore.store._card import SetCard
from pertstore.store._storage import Storage

from pertstore.errors import CorruptedSetError

blosc.use_threads = False  # decode in our own threads, with Blosc's GIL-free contextual API
_ZSTD = numcodecs.Zstd()
_VLEN = numcodecs.VLenUTF8()


def decode_chunk(raw, chunk_rows: int, dim: int, out: np.ndarray | None = None) -> np.ndarray:
    """Decode one stored ``values`` chunk (any bytes-like: Blosc, then its CRC32C) into a
    ``[chunk_rows, dim]`` float32 array; ValueError when the CRC32C does not match."""
    if not crc32c_ok(raw):
        raise ValueError("its CRC32C does not match its bytes")
    if out is None:
        out = np.empty((chunk_rows, dim), dtype="<f4")
    blosc.decompress(memoryview(raw)[:-4], out)
    return out


def crc32c_ok(raw) -> bool:
    """Whether the last 4 bytes of ``raw`` (a stored chunk or shard index) are the CRC32C of the rest."""
    data = np.frombuffer(raw, dtype=np.uint8)  # google_crc32c takes arrays, not memoryviews
    return len(data) > 4 and google_crc32c.value(data[:-4]) == int.from_bytes(data[-4:].tobytes(), "little")


def parse_shard_index(raw: bytes, n_chunks: int, where: str) -> np.ndarray:
    """The ``[n_chunks, 2]`` (offset, length) table of a shard index, its CRC32C checked."""
    if len(raw) != 16 * n_chunks + 4:
        raise CorruptedSetError(f"{where}: the shard index is truncated ({len(raw)} bytes)")
    if not crc32c_ok(raw):
        raise CorruptedSetError(f"{where}: the shard index fails its CRC32C check")
    return np.frombuffer(raw, dtype="<u8", count=2 * n_chunks).reshape(n_chunks, 2)


def check_layout(values_meta: dict | None, entity_meta: dict | None, card: SetCard, key: str) -> int:
    """Check the ``values`` metadata is the sharded layout this reader knows; returns chunks per shard."""
    if values_meta is None or entity_meta is None:
        raise CorruptedSetError(f"{key}: consolidated metadata lacks the 'values' or 'entity' array")
    codecs = values_meta.get("codecs", [])
    names = [c.get("name") for c in codecs]
    conf = codecs[0].get("configuration", {}) if names == ["sharding_indexed"] else {}
    inner = [c.get("name") for c in conf.get("codecs", [])]
    index = [c.get("name") for c in conf.get("index_codecs", [])]
    endian = {
        c.get("configuration", {}).get("endian", "little")
        for c in conf.get("codecs", []) + conf.get("index_codecs", [])
        if c.get("name") == "bytes"
    }
    key_encoding = values_meta.get("chunk_key_encoding", {})
    if (
        inner != ["bytes", "blosc", "crc32c"]
        or index != ["bytes", "crc32c"]
        or conf.get("index_location") != "end"
        or endian != {"little"}
        or values_meta.get("data_type") != "float32"
        or key_encoding.get("name") != "default"
        or key_encoding.get("configuration", {}).get("separator", "/") != "/"
    ):
        raise CorruptedSetError(
            f"{key}: 'values' uses codecs {names} {inner} / {values_meta.get('data_type')}, which this "
            "pertstore does not read (sets written before sharding must be written again)"
        )
    shape = values_meta.get("shape")
    shards = values_meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape")
    chunks = conf.get("chunk_shape")
    if (
        shape != [card.n_rows, card.dim]
        or chunks != [card.chunk_rows, card.dim]
        or not shards
        or shards[1] != card.dim
        or shards[0] % card.chunk_rows
    ):
        raise CorruptedSetError(
            f"{key}: 'values' shape {shape} / chunks {chunks} / shards {shards} disagree with the card"
        )
    return shards[0] // card.chunk_rows


def read_entity_ids(storage: Storage, key: str, entity_meta: dict) -> list[str]:
    codecs = [c["name"] for c in entity_meta.get("codecs", [])]
    n = entity_meta["shape"][0]
    chunk = entity_meta["chunk_grid"]["configuration"]["chunk_shape"][0]
    if codecs not in (["vlen-utf8", "zstd", "crc32c"], ["vlen-utf8", "zstd"]) or chunk < n:
        raise CorruptedSetError(
            f"{key}: 'entity' uses codecs {codecs} / chunk {chunk}, which this pertstore does not read"
        )
    try:
        raw = storage.read_bytes(f"{key}/entity/c/0")
    except FileNotFoundError as e:
        raise CorruptedSetError(f"{key}: the entity ids are missing") from e
    if codecs[-1] == "crc32c":  # sets written since the ids carry a checksum: a flipped bit is an error, not NaN
        raw, stored = raw[:-4], raw[-4:]
        if google_crc32c.value(raw).to_bytes(4, "little") != stored:
            raise CorruptedSetError(f"{key}: the entity ids fail their CRC32C (entity/c/0 is corrupted)")
    try:
        ids = _VLEN.decode(_ZSTD.decode(raw))
    except (RuntimeError, ValueError) as e:
        raise CorruptedSetError(f"{key}: the entity ids cannot be decoded ({e})") from e
    return [str(x) for x in ids[:n]]
