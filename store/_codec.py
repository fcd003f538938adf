"""How a set's arrays are encoded: the ``values`` chunk codec (Blosc, then a CRC32C), the shard
index, the check that a set's metadata is the layout this reader knows, and the entity ids."""

from __future__ import annotations

import ctypes
from collections.abc import Callable

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


def _bind_blosc_decompress() -> Callable[[int, int, int, int], int] | None:
    """C-Blosc's ``blosc_decompress_ctx``, from the copy numcodecs' extension carries, called through
    ctypes (which lets go of the GIL during the call); None where that extension does not export it.

    numcodecs' Python wrapper spends about as long checking its arguments as a 16 KiB chunk takes to
    decode (18 us a chunk against 10 us this way), and a cold read decodes tens of thousands of them.
    """
    try:
        function = ctypes.CDLL(blosc.__file__).blosc_decompress_ctx
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_BLOSC_DECOMPRESS = _bind_blosc_decompress()


def decode_chunk(raw, chunk_rows: int, dim: int, out: np.ndarray | None = None) -> np.ndarray:
    """Decode one stored ``values`` chunk (any bytes-like: Blosc, then its CRC32C) into a
    ``[chunk_rows, dim]`` float32 array; ValueError when the CRC32C does not match."""
    if out is None:
        out = np.empty((chunk_rows, dim), dtype="<f4")
    if not out.flags.c_contiguous or out.dtype != np.dtype("<f4") or out.size != chunk_rows * dim:
        raise ValueError(f"out must be a C-contiguous float32 array of {chunk_rows} x {dim} values")
    data = np.frombuffer(raw, dtype=np.uint8)
    decode_at(data, data.ctypes.data if data.size else 0, 0, data.size, out, out.ctypes.data)
    return out


def decode_at(blob: np.ndarray, blob_address: int, start: int, length: int, out: np.ndarray, out_address: int) -> None:
    """Decode the chunk at bytes ``start:start + length`` of ``blob`` (a uint8 array whose data
    starts at ``blob_address``) into ``out`` (C-contiguous float32, its data at ``out_address``).

    ValueError when the chunk's CRC32C does not match its bytes, or its Blosc header disagrees
    with its length or with the size of ``out``: nothing is decoded from a chunk that fails.
    """
    end = start + length - 4
    if length <= 20 or google_crc32c.value(blob[start:end]) != int.from_bytes(blob[end : end + 4], "little"):
        raise ValueError("its CRC32C does not match its bytes")
    if (
        int.from_bytes(blob[start + 12 : start + 16], "little") != length - 4
        or int.from_bytes(blob[start + 4 : start + 8], "little") != out.nbytes
    ):
        raise ValueError(f"its Blosc header disagrees with its {length} bytes or its {out.nbytes} decoded bytes")
    if _BLOSC_DECOMPRESS is None:
        try:
            blosc.decompress(blob[start:end], out)
        except RuntimeError as e:
            raise ValueError(f"Blosc cannot decode it ({e})") from e
        got = out.nbytes
    else:
        got = _BLOSC_DECOMPRESS(blob_address + start, out_address, out.nbytes, 1)
    if got != out.nbytes:
        raise ValueError(f"Blosc cannot decode it (code {got})")


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
