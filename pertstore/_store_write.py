"""The writing half of the :class:`~pertstore.Store` facade: sets, tags and imports (a mixin of ``Store``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pertstore.errors import InvalidInputError
from pertstore.store import (
    Recipe,
    SetCard,
    SetWriter,
    check_names,
    check_values,
    file_sha256,
    read_card,
    read_embedding_file,
    set_key,
    tag_key,
)

if TYPE_CHECKING:
    from pertstore.catalog import Catalog, Resolution
    from pertstore.store import SetCache, Storage


class WriteMethods:
    """Publishing sets (whole, staged, computed or imported) and pointing tags at them; :class:`~pertstore.Store`
    inherits these methods, which use its storage, catalog, cache and resolver."""

    storage: Storage

    if TYPE_CHECKING:

        @property
        def catalog(self) -> Catalog: ...

        @property
        def cache(self) -> SetCache: ...

        @property
        def jobs(self) -> Any: ...

        def resolve(self, ids: Sequence[str], kind: str = "gene") -> Resolution: ...

    def has(self, recipe: Recipe) -> bool:
        """Whether the set of ``recipe`` is already published."""
        return self.storage.exists(f"{set_key(recipe.source, recipe.version)}/zarr.json")

    def writer(self, recipe: Recipe, ids: Sequence[str], dim: int) -> SetWriter:
        """A staged writer for ``recipe``; call :meth:`publish` with it when every chunk is written."""
        self.catalog.check_compatible(recipe.source, recipe.kind, dim)
        return SetWriter(self.storage, recipe, ids, dim)

    def publish(self, writer: SetWriter, *, failed: dict[str, str] | None = None, tags: Sequence[str] = ()) -> SetCard:
        """Publish a staged set, index it and point ``latest`` (and ``tags``) at it.

        Publishing a recipe that is already published changes nothing and returns its card.
        """
        check_names(tags=tags)
        card, newly = writer.publish(failed=failed)
        if newly:
            self.index_published(card, ["latest", *tags])
        elif tags:
            for t in tags:
                self.tag(card.source, card.version, t)
        return card

    def write_set(
        self,
        recipe: Recipe,
        ids: Sequence[str],
        values: np.ndarray,
        *,
        failed: dict[str, str] | None = None,
        tags: Sequence[str] = (),
    ) -> SetCard:
        """Write a whole ``[entity, dim]`` matrix for canonical ``ids`` as the set of ``recipe``."""
        check_names(tags=tags)
        values = check_values(values, list(ids), where=f"set {recipe.source}")
        if self.has(recipe):
            return self.published_card(recipe, tags)
        w = self.writer(recipe, ids, values.shape[1])
        try:
            w.write_all(values, failed=failed)
        except BaseException:
            w.abort()
            raise
        return self.publish(w, tags=tags)

    def produce(
        self,
        producer: str,
        *,
        source: str,
        params: dict | None = None,
        inputs: dict[str, str] | None = None,
        context: str = "",
        tags: Sequence[str] = (),
        max_failed_fraction: float = 0.05,
    ) -> SetCard:
        """Compute one set with ``producer`` in this process (no Dask) and publish it.

        ``inputs`` maps the producer's input names to file paths or ``set:SOURCE[@VERSION|:TAG]``.
        Returns the existing card when the recipe's set is already published.
        """
        from pertstore.producers import RecipeSpec, produce_inline

        check_names(source=source, context=context, tags=tags)
        spec = RecipeSpec(
            producer=producer, source=source, params=params or {}, inputs=inputs or {}, context=context, tags=list(tags)
        )
        (planned,) = self.jobs.plan([spec])
        return produce_inline(self, planned, max_failed_fraction=max_failed_fraction)

    def published_card(self, recipe: Recipe, tags: Sequence[str]) -> SetCard:
        """The card of an already published recipe (indexed now if a crash left it unindexed)."""
        check_names(tags=tags)
        key = set_key(recipe.source, recipe.version)
        card = read_card(self.storage, key)
        if not self.catalog.is_indexed(key):
            self.index_published(card, ["latest"])
        for t in tags:
            self.tag(card.source, card.version, t)
        return card

    def index_published(self, card: SetCard, tags: Sequence[str]) -> None:
        """Index a set just published (its ids, ``latest`` and ``tags``) in the catalog."""
        check_names(tags=tags)
        key = set_key(card.source, card.version)
        ids = self.cache.get(key).ids
        now = datetime.now(UTC)
        for t in tags:
            self._write_tag(card.source, card.context, t, card.version, now)
        self.catalog.index_set(card, key, ids)
        for t in tags:
            self.catalog.set_tag(card.source, card.context, t, card.version, now)

    def _write_tag(self, source: str, context: str, tag: str, version: str, when: datetime) -> None:
        doc = {"version": version, "updated_at": when.isoformat()}
        self.storage.write_bytes(tag_key(source, context, tag), json.dumps(doc).encode())

    def tag(self, source: str, version: str, tag: str) -> None:
        """Point ``tag`` of ``source`` (in the set's context) at ``version``."""
        check_names(source=source, version=version, tags=tag)
        row = self.catalog.find_set(source, version=version)
        now = datetime.now(UTC)
        self._write_tag(source, row.context, tag, version, now)
        self.catalog.set_tag(source, row.context, tag, version, now)

    def import_file(
        self,
        path: str | Path,
        *,
        source: str,
        kind: str = "gene",
        context: str = "",
        field: str | None = None,
        id_col: str | None = None,
        drop_unresolved: bool = False,
        drop_nonfinite: bool = False,
        tags: Sequence[str] = (),
    ) -> SetCard:
        """Import embeddings computed elsewhere (h5ad, npz, parquet, csv) as a new set of ``source``.

        Ids are resolved through the registry; unresolved or ambiguous ids are an error naming
        them, unless ``drop_unresolved`` (then they are left out and listed in the card's
        ``failed``). Rows holding NaN or inf are an error unless ``drop_nonfinite`` (then they are
        left out and listed too). Two rows resolving to the same entity are an error. The recipe
        records the file's SHA-256, so importing the same file again is a no-op.
        """
        check_names(source=source, context=context, tags=tags)
        path = Path(path)
        ids, values, params = read_embedding_file(path, field=field, id_col=id_col)
        recipe = Recipe(
            source=source,
            producer="import",
            kind=kind,
            context=context,
            params=params | {"drop_unresolved": drop_unresolved, "drop_nonfinite": drop_nonfinite},
            inputs={"file": file_sha256(str(path))},
        )
        nonfinite: dict[str, str] = {}
        if drop_nonfinite and values.dtype.kind == "f":
            finite = np.isfinite(values).all(axis=1)
            nonfinite = {q: "NaN or inf values" for q, ok in zip(ids, finite) if not ok}
            ids, values = [q for q, ok in zip(ids, finite) if ok], values[finite]
        dups = pd.Index(ids)[pd.Index(ids).duplicated()]
        if len(dups):
            first = ids.index(dups[0])
            second = ids.index(dups[0], first + 1)
            raise InvalidInputError(
                f"{path}: id {dups[0]!r} appears more than once (rows {first} and {second}); "
                f"{len(set(dups))} duplicated id(s)"
            )
        values = check_values(values, ids, where=str(path))
        if self.has(recipe):
            return self.published_card(recipe, tags)
        self.catalog.check_compatible(source, kind, values.shape[1])
        res = self.resolve(ids, kind)
        failed = (
            nonfinite
            | {q: "unresolved" for q in res.unresolved}
            | {q: f"ambiguous: {', '.join(c)}" for q, c in res.ambiguous.items()}
        )
        unresolved = {q: why for q, why in failed.items() if q not in nonfinite}
        if unresolved and not drop_unresolved:
            rows = [f"row {i} {q!r} ({unresolved[q]})" for i, q in enumerate(ids) if q in unresolved][:5]
            raise InvalidInputError(
                f"{path}: {len(unresolved)} id(s) do not resolve to a registered {kind}: "
                + "; ".join(rows)
                + " (pass drop_unresolved / --drop-unresolved to skip them)"
            )
        keep = np.array([c is not None for c in res.ids])
        canonical = [c for c in res.ids if c is not None]
        if not canonical:
            raise InvalidInputError(f"{path}: none of the {len(ids)} ids resolves to a registered {kind}")
        seen: dict[str, int] = {}
        for row, (q, c) in enumerate(zip(ids, res.ids)):
            if c is None:
                continue
            if c in seen:
                raise InvalidInputError(
                    f"{path}: rows {seen[c]} ({ids[seen[c]]!r}) and {row} ({q!r}) both resolve to {kind} {c}"
                )
            seen[c] = row
        return self.write_set(recipe, canonical, values[keep], failed=failed, tags=tags)
