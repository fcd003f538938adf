"""Recipes: everything that determines an embedding set, and the version derived from it."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pertstore.errors import InvalidInputError

EntityKind = Literal["gene", "molecule"]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
MAX_ID_CHARS = 1_000
"""Longest entity id (symbol, Ensembl id, SMILES, name) a store accepts."""


def check_name(value: str, what: str) -> str:
    """A user-given name (source, tag, context, version, task, job) usable as one path segment.

    The whole string must match (``fullmatch``: a final newline does not), so no name holds ``/`` or
    starts with ``.``; every front end (CLI, REST, Python) gets this one check through :class:`Store`.
    """
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidInputError(
            f"{what} {value!r} must be 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return value


def check_names(
    *,
    source: str | None = None,
    context: str | None = None,
    version: str | None = None,
    tags: Sequence[str] | str | None = (),
    **names: str | None,
) -> None:
    """:func:`check_name` for each name given (an empty context means global, ``None`` means unset)."""
    tags = [tags] if isinstance(tags, str) else list(tags or ())
    for what, value in [("source", source), ("version", version), *(("tag", t) for t in tags), *names.items()]:
        if value is not None:
            check_name(value, what)
    if context:
        check_name(context, "context")


def check_ids(ids: list[str]) -> list[str]:
    """Entity ids a request may carry: valid UTF-8 text of at most :data:`MAX_ID_CHARS` characters."""
    for i, q in enumerate(ids):
        if len(q) > MAX_ID_CHARS:
            raise InvalidInputError(f"id #{i} has {len(q):,} characters; ids have at most {MAX_ID_CHARS:,}")
        try:
            q.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(f"id #{i} is not valid text (it holds a lone surrogate)") from None
    return ids


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
