"""Units of work that run on Dask workers (or inline): compute a part, assemble a staged set.

A chunked recipe is split into parts of ``chunk_size`` entities. Each part's result is written to
``staging/_parts/<source>/<version>/<part>.npz`` atomically, so a resumed job skips finished parts
and a retried part overwrites nothing but itself. Assembling streams the parts in order
into a sealed set (on a worker); the driver publishes sealed sets once the whole job has succeeded.
Workers only touch the store's files, never the catalog.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field

import numpy as np
from pertstore.producers._base import Batch, Producer, ProducerContext
from pertstore.producers._spec import PlannedRecipe
from pertstore.store import SetWriter, Storage, publish_sealed, staging_key

from pertstore.errors import InvalidInputError, PertstoreError


@dataclass
class PartResult:
    """What the driver learns from a finished work item."""

    part: int
    n_items: int
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def parts_key(planned: PlannedRecipe) -> str:
    return f"staging/_parts/{planned.recipe.source}/{planned.recipe.version}"


def part_key(planned: PlannedRecipe, part: int) -> str:
    return f"{parts_key(planned)}/{part:06d}.npz"


def make_producer(storage: Storage, planned: PlannedRecipe) -> Producer:
    ctx = ProducerContext(storage=storage, context=planned.recipe.context, files=planned.files, sets=planned.sets)
    return planned.producer_cls(planned.recipe.params, ctx)


def list_entities(storage: Storage, planned: PlannedRecipe) -> list[str]:
    """The entity ids a chunked recipe will embed, in order, without duplicates."""
    producer = make_producer(storage, planned)
    try:
        ids = [str(i) for i in producer.entities()]
    finally:
        producer.close()
    if not ids:
        raise InvalidInputError(f"recipe {planned.recipe.source}: producer {planned.recipe.producer} lists no entities")
    return list(dict.fromkeys(ids))


def split(ids: list[str], size: int) -> list[list[str]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def run_part(storage: Storage, planned: PlannedRecipe, part: int, ids) -> PartResult:
    """Compute one part of a chunked recipe and store it (idempotent)."""
    t0 = time.perf_counter()
    ids = [str(i) for i in ids]
    producer = make_producer(storage, planned)
    try:
        batch = producer.compute_chunk(list(ids))
    finally:
        producer.close()
    _check_batch(batch, ids, planned, part)
    buf = io.BytesIO()
    np.savez(
        buf,
        ids=np.array(batch.ids, dtype=object).astype(str),
        values=batch.values,
        failed=np.array(json.dumps(batch.failed, sort_keys=True)),
    )
    storage.write_bytes(part_key(planned, part), buf.getvalue())
    return PartResult(part, len(ids), batch.failed, time.perf_counter() - t0)


def _check_batch(batch: Batch, ids: list[str], planned: PlannedRecipe, part: int) -> None:
    asked = set(ids)
    extra = (set(batch.ids) | set(batch.failed)) - asked
    missing = asked - set(batch.ids) - set(batch.failed)
    where = f"producer {planned.recipe.producer}, set {planned.recipe.source}, part {part}"
    if extra:
        raise PertstoreError(f"{where}: returned ids it was not asked for, e.g. {sorted(extra)[0]!r}")
    if missing:
        raise PertstoreError(
            f"{where}: returned neither a row nor a failure for {len(missing)} id(s), e.g. {sorted(missing)[0]!r}"
        )
    if len(set(batch.ids)) != len(batch.ids):
        raise PertstoreError(f"{where}: returned an id twice")


def done_parts(storage: Storage, planned: PlannedRecipe) -> set[int]:
    return {int(n[:-4]) for n in storage.list_dir(parts_key(planned)) if n.endswith(".npz") and n[:-4].isdigit()}


def read_part(storage: Storage, planned: PlannedRecipe, part: int) -> Batch:
    with np.load(io.BytesIO(storage.read_bytes(part_key(planned, part)))) as z:
        return Batch(z["ids"].tolist(), z["values"], json.loads(str(z["failed"])))


def assemble(storage: Storage, planned: PlannedRecipe, n_parts: int, max_failed_fraction: float) -> dict:
    """Seal the set of a chunked recipe from its parts, streaming part by part.

    Returns ``{"failed": {...}, "n_rows": n, "dim": d}``; raises when too many entities failed.
    """
    ids: list[str] = []
    failed: dict[str, str] = {}
    dim = None
    for part in range(n_parts):
        batch = read_part(storage, planned, part)
        ids.extend(batch.ids)
        failed.update(batch.failed)
        if batch.ids:
            if dim is not None and batch.values.shape[1] != dim:
                raise PertstoreError(
                    f"set {planned.recipe.source}: part {part} has dim {batch.values.shape[1]}, earlier parts {dim}"
                )
            dim = batch.values.shape[1]
    _check_failures(planned, len(ids), failed, max_failed_fraction)
    values = (read_part(storage, planned, part).values for part in range(n_parts))
    SetWriter(storage, planned.recipe, ids, dim).write_rows((v for v in values if len(v)), failed=failed)
    return {"failed": failed, "n_rows": len(ids), "dim": dim}


def run_whole(storage: Storage, planned: PlannedRecipe, max_failed_fraction: float) -> dict:
    """Compute a whole-set recipe and stage it."""
    producer = make_producer(storage, planned)
    try:
        batch = producer.compute()
    finally:
        producer.close()
    if len(set(batch.ids)) != len(batch.ids):
        raise PertstoreError(f"producer {planned.recipe.producer}: set {planned.recipe.source} has an id twice")
    _check_failures(planned, len(batch.ids), batch.failed, max_failed_fraction)
    SetWriter(storage, planned.recipe, batch.ids, batch.values.shape[1]).write_all(batch.values, failed=batch.failed)
    return {"failed": batch.failed, "n_rows": len(batch.ids), "dim": batch.values.shape[1]}


def _check_failures(planned: PlannedRecipe, n_ok: int, failed: dict[str, str], limit: float) -> None:
    total = n_ok + len(failed)
    if n_ok == 0:
        example = next(iter(failed.items()), ("-", "no entities"))
        raise PertstoreError(f"set {planned.recipe.source}: every entity failed (e.g. {example[0]}: {example[1]})")
    if total and len(failed) / total > limit:
        raise PertstoreError(
            f"set {planned.recipe.source}: {len(failed)} of {total} entities failed "
            f"({len(failed) / total:.1%} > the allowed {limit:.1%}); see the failure ledger"
        )


def publish_staged(storage: Storage, planned: PlannedRecipe):
    """Publish a sealed set (storage only) and drop its parts; returns ``(card, newly_published)``."""
    card, newly = publish_sealed(storage, planned.recipe)
    storage.delete_prefix(parts_key(planned))
    return card, newly


def abort(storage: Storage, planned: PlannedRecipe) -> None:
    """Remove a recipe's staged set and parts."""
    storage.delete_prefix(staging_key(planned.recipe.source, planned.recipe.version))
    storage.delete_prefix(parts_key(planned))
