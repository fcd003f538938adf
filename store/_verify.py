"""Integrity checks of published sets: chunk digests and content checksums."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from pertstore.errors import CorruptedSetError
from pertstore.store._layout import set_key
from pertstore.store._reader import OpenSet, decode_chunk
from pertstore.store._storage import GROUP_META, Storage


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
    """Re-check one set: every chunk's digest, then the content checksum over ids and values."""
    try:
        s = OpenSet(storage, key, threads=1)
    except (CorruptedSetError, ValueError, KeyError) as e:
        return SetReport(key, False, [f"unreadable metadata or ids: {e}"])
    card = s.card
    problems = []
    content = hashlib.sha256("\n".join(s.ids).encode())
    content.update(b"\0")
    for c in range(s.n_chunks):
        chunk_key = f"{key}/values/c/{c}/0"
        try:
            raw = storage.read_bytes(chunk_key)
        except FileNotFoundError:
            problems.append(f"chunk {c} ({chunk_key}) is missing")
            continue
        if hashlib.sha256(raw).hexdigest() != card.chunk_digests[c]:
            problems.append(f"chunk {c} ({chunk_key}) is corrupted: its digest differs from the card's")
            continue
        try:
            rows = min(card.chunk_rows, card.n_rows - c * card.chunk_rows)
            content.update(decode_chunk(raw, card.chunk_rows, card.dim)[:rows].tobytes())
        except (RuntimeError, ValueError) as e:
            problems.append(f"chunk {c} ({chunk_key}) cannot be decoded: {e}")
    if not problems and f"sha256:{content.hexdigest()}" != card.checksum:
        problems.append("content checksum differs from the card's")
    return SetReport(key, not problems, problems)
