"""The card of an embedding set: what the group's attrs hold and the catalog indexes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pertstore.store._layout import SET_ENCODING_TYPE, SET_ENCODING_VERSION
from pertstore.store._recipe import EntityKind, Recipe
from pydantic import BaseModel, ConfigDict, Field

from pertstore.errors import CorruptedSetError


class SetCard(BaseModel):
    """Metadata of one published embedding set, mirrored in its Zarr group attrs."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    encoding_type: str = Field(SET_ENCODING_TYPE, alias="encoding-type")
    encoding_version: str = Field(SET_ENCODING_VERSION, alias="encoding-version")
    source: str
    version: str
    kind: EntityKind
    context: str = ""
    dim: int
    n_rows: int
    chunk_rows: int
    recipe: Recipe
    checksum: str
    """``sha256:`` of the entity ids (newline-joined) then the little-endian float32 rows."""
    failed: dict[str, str] = Field(default_factory=dict)
    """Entities the producer could not embed, with the reason."""
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    pertstore_version: str = ""

    def to_attrs(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any], *, where: str) -> SetCard:
        kind = attrs.get("encoding-type")
        version = attrs.get("encoding-version")
        if kind != SET_ENCODING_TYPE:
            raise CorruptedSetError(f"{where}: not a pertstore embedding set (encoding-type={kind!r})")
        if version != SET_ENCODING_VERSION:
            raise CorruptedSetError(
                f"{where}: encoding-version {version!r} is not supported (this pertstore reads {SET_ENCODING_VERSION})"
            )
        return cls.model_validate(attrs)
