"""Built-in producers: the ``random`` control and ``checksum``, a cheap deterministic one for tests."""

from __future__ import annotations

import hashlib
import time

import numpy as np
from pertstore.producers._base import Batch, Producer
from pydantic import BaseModel, ConfigDict, Field


class RandomParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dim: int = Field(128, ge=1, le=65536)
    seed: int = 0
    kind_of_ids: str = Field("all", pattern="^(all|protein-coding)$")
    """Which registered genes get a row: every registered entity, or protein-coding genes only."""


class RandomProducer(Producer):
    """The random control: Uniform[0, 1)^dim per entity, a pure function of (seed, entity id).

    A row depends only on its entity id and the seed, so sets over different entity lists agree
    wherever they overlap and chunks can be computed in any order.
    """

    name = "random"
    kind = "gene"
    Params = RandomParams
    description = "Uniform[0,1)^dim control embedding, seeded per entity"
    chunk_size = 4096

    def entities(self) -> list[str]:
        reg = self.ctx.registry(self.kind)
        if self.params.kind_of_ids == "protein-coding" and "gene_type" in reg:
            reg = reg[reg["gene_type"] == "protein-coding"]
        return reg["entity_id"].astype(str).tolist()

    def compute_chunk(self, ids: list[str]) -> Batch:
        rows = np.empty((len(ids), self.params.dim), dtype=np.float32)
        for i, entity in enumerate(ids):
            rows[i] = np.random.default_rng(_seed(self.params.seed, entity)).random(self.params.dim, dtype=np.float32)
        return Batch(ids, rows)


class RandomMoleculeProducer(RandomProducer):
    """The random control for molecules."""

    name = "random-molecule"
    kind = "molecule"
    description = "Uniform[0,1)^dim control embedding for molecules, seeded per entity"


class ChecksumParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dim: int = Field(8, ge=1, le=32)
    fail_prefix: str = ""
    """Entities whose id starts with this prefix fail (to exercise the failure ledger)."""
    work: int = Field(0, ge=0)
    """Extra hashing rounds per entity, to make the producer CPU-bound in benchmarks."""
    limit: int = Field(0, ge=0)
    """Embed only the first ``limit`` registered entities (0: all)."""
    delay: float = Field(0.0, ge=0.0, le=60.0)
    """Seconds to sleep per work item (tests that interrupt running jobs)."""
    raise_prefix: str = ""
    """A work item holding an id with this prefix raises (tests of failing work items)."""


class ChecksumProducer(Producer):
    """A deterministic test producer: the bytes of SHA-256(entity id) scaled to [0, 1)."""

    name = "checksum"
    kind = "gene"
    Params = ChecksumParams
    description = "SHA-256 of the entity id (tests and benchmarks)"
    chunk_size = 512

    def entities(self) -> list[str]:
        ids = self.ctx.registry(self.kind)["entity_id"].astype(str).tolist()
        return ids[: self.params.limit] if self.params.limit else ids

    def compute_chunk(self, ids: list[str]) -> Batch:
        time.sleep(self.params.delay)
        if self.params.raise_prefix and any(e.startswith(self.params.raise_prefix) for e in ids):
            raise RuntimeError(f"checksum producer told to fail on ids starting with {self.params.raise_prefix!r}")
        ok, rows, failed = [], [], {}
        for entity in ids:
            if self.params.fail_prefix and entity.startswith(self.params.fail_prefix):
                failed[entity] = f"id starts with {self.params.fail_prefix!r}"
                continue
            digest = hashlib.sha256(entity.encode()).digest()
            for _ in range(self.params.work):
                digest = hashlib.sha256(digest).digest()
            ok.append(entity)
            rows.append(np.frombuffer(digest[: self.params.dim], dtype=np.uint8) / 256.0)
        values = np.array(rows, dtype=np.float32).reshape(len(ok), self.params.dim)
        return Batch(ok, values, failed)


def _seed(seed: int, entity: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{entity}".encode()).digest()[:8], "little")
