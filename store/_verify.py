"""Integrity checks of published sets: shard indexes, chunk CRC32Cs and content checksums."""

from __future__ import annotations

from dataclasses import dataclass, field

from pertstore.store._layout import set_key
from pertstore.store._reader import OpenSet, crc32c_ok, decode_chunk, parse_shard_index
from pertstore.store._storage import GROUP_META, Storage
from pertstore.store._writer import EMPTY, content_hash

from pertstore.errors import CorruptedSetError


@dataclass
class SetReport:
    key: str
    ok: bool
    problems: list[str] = field(default_factory=list)


def published_sets(storage: Storage) -> list[str]:
    """Keys of every published set (those whose group metadata exists)."""
    keys = []
    for source in storage.list_dir("sets"):
        for version in storage.list_dir(f"sets/{source}"):
            key = set_key(source, version)
            if storage.exists(f"{key}/{GROUP_META}"):
                keys.append(key)
    return keys


def verify_set(storage: Storage, key: str) -> SetReport:
    """Re-check one set: each shard's index, every chunk's CRC32C, then the checksum over ids and values."""
    try:
        s = OpenSet(storage, key, threads=1)
        ids = s.ids
    except (CorruptedSetError, ValueError, KeyError) as e:
        return SetReport(key, False, [f"unreadable metadata or ids: {e}"])
    card = s.card
    problems: list[str] = []
    content = content_hash(ids)
    for shard in range(s.n_shards):
        shard_key = s.shard_key(shard)
        first = shard * s.shard_chunks
        chunks = range(first, min(first + s.shard_chunks, s.n_chunks))
        try:
            raw = storage.read_bytes(shard_key)
        except FileNotFoundError:
            problems.append(f"shard {shard} ({shard_key}) holding chunks {chunks.start}..{chunks.stop - 1} is missing")
            continue
        try:
            table = parse_shard_index(raw[-(16 * s.shard_chunks + 4) :], s.shard_chunks, shard_key)
        except CorruptedSetError as e:
            problems.append(f"shard {shard} ({shard_key}) is corrupted: {e}")
            continue
        for c, (offset, length) in zip(chunks, table.tolist()):
            if offset == EMPTY or offset + length > len(raw) - 16 * s.shard_chunks - 4:
                problems.append(f"chunk {c} ({shard_key}) is missing from its shard")
                continue
            chunk = raw[offset : offset + length]
            if not crc32c_ok(chunk):
                problems.append(
                    f"chunk {c} ({shard_key}, bytes {offset}..{offset + length}) is corrupted: "
                    "its CRC32C does not match its bytes"
                )
                continue
            try:
                rows = min(card.chunk_rows, card.n_rows - c * card.chunk_rows)
                content.update(decode_chunk(chunk, card.chunk_rows, card.dim)[:rows])
            except (RuntimeError, ValueError) as e:
                problems.append(f"chunk {c} ({shard_key}) cannot be decoded: {e}")
    if not problems and f"sha256:{content.hexdigest()}" != card.checksum:
        problems.append("content checksum differs from the card's")
    return SetReport(key, not problems, problems)
