"""Recipes: everything that determines an embedding set, and the version derived from it."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pertstore.errors import InvalidInputError

EntityKind = Literal["gene", "molecule"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def check_name(value: str, what: str) -> str:
    """A source, tag or context name usable as a path segment."""
    if not _NAME.match(value):
        raise InvalidInputError(f"{what} {value!r} must match {_NAME.pattern} (letters, digits, '_', '.', '-')")
    return value


class Recipe(BaseModel):
    """Everything that determines a set's values; its canonical JSON hashes to the set's version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    producer: str
    kind: EntityKind
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(default_factory=dict)
    """Input artifacts by content hash (``sha256:...``) or other sets by ``source@version``."""
    context: str = ""
    """Empty for global embeddings; e.g. a cell line for contextual ones."""
    code_version: str = "1"
    libraries: dict[str, str] = Field(default_factory=dict)

    @field_validator("source")
    @classmethod
    def _source_name(cls, v: str) -> str:
        return check_name(v, "source")

    @field_validator("context")
    @classmethod
    def _context_name(cls, v: str) -> str:
        return check_name(v, "context") if v else v

    def canonical_json(self) -> str:
        """Sorted keys, no whitespace: equal recipes give equal strings."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    @property
    def version(self) -> str:
        """First 16 hex digits of the SHA-256 of the canonical JSON."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]


def file_sha256(path: str, *, block: int = 1 << 22) -> str:
    """``sha256:<hex>`` of a file's bytes (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"
