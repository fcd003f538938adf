"""Recreate the catalog from the store alone: the store is the truth, the catalog an index."""

from __future__ import annotations

import io
import json
from typing import Any

import pandas as pd
from pertstore.catalog import _job_records
from pertstore.catalog._catalog import Catalog
from pertstore.store import OpenSet, Storage, published_sets, registry_key
from rich.progress import track

from pertstore.errors import CorruptedSetError


def read_registry(storage: Storage, kind: str) -> pd.DataFrame | None:
    """The registry of ``kind`` stored in the store, or None."""
    key = registry_key(kind)
    if not storage.exists(key):
        return None
    return parse_registry(storage.read_bytes(key))


def parse_registry(raw: bytes) -> pd.DataFrame:
    """A registry file's rows (empty strings where a field is missing)."""
    return pd.read_parquet(io.BytesIO(raw)).fillna("")


def read_tags(storage: Storage) -> tuple[list[tuple[str, str, str, str, str]], list[str]]:
    """Every ``(source, context, tag, version, updated_at)`` stored under ``tags/``, and one message per
    tag file that cannot be read (it is skipped: one bad file never stops a rebuild)."""
    out, problems = [], []
    for key in storage.walk("tags"):
        parts = key.split("/")
        if len(parts) != 4 or not parts[3].endswith(".json"):
            continue
        try:
            doc = json.loads(storage.read_bytes(key))
            version, updated = str(doc["version"]), str(doc["updated_at"])
            pd.Timestamp(updated)
        except (ValueError, KeyError, TypeError) as e:
            problems.append(f"{key}: not a tag file ({type(e).__name__}: {e}); skipped")
            continue
        context = "" if parts[2] == "_global" else parts[2]
        out.append((parts[1], context, parts[3][: -len(".json")], version, updated))
    return out, problems


def job_records(storage: Storage) -> list[str]:
    """Keys of the job records kept in the store."""
    return [k for k in storage.walk("jobs") if k.endswith(".json")]


def job_record_problems(storage: Storage) -> list[str]:
    """One message per job record a catalog rebuild would have to skip."""
    problems = []
    for key in job_records(storage):
        try:
            _job_records.check(storage.read_bytes(key), key)
        except ValueError as e:
            problems.append(str(e))
    return problems


def rebuild(catalog: Catalog, storage: Storage, *, progress: bool = False) -> dict:
    """Empty ``catalog`` and index everything the store holds; returns counts and, under ``problems``,
    the files that were skipped."""
    catalog.clear()
    counts: dict[str, Any] = {"sets": 0, "tags": 0, "gene": 0, "molecule": 0}
    for kind in ("gene", "molecule"):
        reg = read_registry(storage, kind)
        if reg is not None:
            catalog.replace_registry(kind, reg)
            counts[kind] = len(reg)
    keys = published_sets(storage)
    problems = []
    with catalog.transaction() as con:
        for key in track(keys, description="indexing sets", disable=not progress):
            try:
                s = OpenSet(storage, key, threads=1)
                catalog._insert_set(con, s.card, key, s.ids)
            except CorruptedSetError as e:  # never index ids that fail their checksum: `verify` names the set
                problems.append(f"{e}; set not indexed")
                continue
            counts["sets"] += 1
        tags, tag_problems = read_tags(storage)
        problems += tag_problems
        for source, context, tag, version, updated in tags:
            catalog._upsert_tag(con, source, context, tag, version, pd.Timestamp(updated).to_pydatetime())
            counts["tags"] += 1
    counts["jobs"] = 0
    for key in job_records(storage):
        try:
            with catalog.transaction() as con:
                _job_records.restore(con, storage.read_bytes(key), key)
            counts["jobs"] += 1
        except ValueError as e:
            problems.append(str(e))
    counts["tasks"] = catalog.tasks.reindex(storage)
    counts["results"], result_problems = catalog.results.reindex(storage)
    problems += result_problems
    counts["problems"] = problems
    return counts
