"""Helpers shared by the store tests (plain functions, not fixtures)."""

from __future__ import annotations

import hashlib

import numpy as np
from pertstore.store import Recipe

from pertstore import Store


def random_set(
    store: Store, ids: list[str], *, source: str = "rand", dim: int = 16, seed: int = 0, context: str = ""
) -> tuple[np.ndarray, Recipe]:
    values = np.random.default_rng(seed).random((len(ids), dim), dtype=np.float32)
    recipe = Recipe(source=source, producer="test", kind="gene", params={"seed": seed, "dim": dim}, context=context)
    store.write_set(recipe, ids, values)
    return values, recipe


def stored_bytes_digest(store: Store, source: str) -> str:
    """SHA-256 over the stored shards of ``source``'s latest set, in shard order."""
    s = store.open_set(source)
    digest = hashlib.sha256()
    for shard in range(s.n_shards):
        digest.update(store.storage.read_bytes(s.shard_key(shard)))
    return digest.hexdigest()


def store_snapshot(store: Store) -> tuple[list[str], list]:
    """Every key of the store plus every catalog row: equal snapshots mean nothing changed."""
    keys = [k for k in store.storage.walk("") if not k.startswith("catalog.duckdb")]
    rows = [
        store.catalog.query(f"SELECT * FROM {t} ORDER BY ALL").to_dict("records")
        for t in ("sources", "sets", "tags", "set_entities")
    ]
    return keys, rows
