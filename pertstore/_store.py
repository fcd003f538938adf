"""The :class:`Store` facade: every operation the CLI and the REST API expose."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from pertstore._config import Settings, get_settings
from pertstore._similarity import IndexCache
from pertstore.catalog import (
    Catalog,
    Resolution,
    default_gene_table,
    ensembl_assignment,
    gene_registry,
    job_record_problems,
    merge_registry,
    molecule_registry,
    note_rules,
    read_registry,
    read_tags,
    rebuild,
)
from pertstore.errors import InvalidInputError, NotFoundError, PertstoreError
from pertstore.store import (
    STORE_ENCODING,
    STORE_MARKER,
    OpenSet,
    Recipe,
    SetCache,
    SetCard,
    SetWriter,
    Storage,
    aligned_dataset,
    check_ids,
    check_names,
    check_values,
    file_sha256,
    open_storage,
    published_sets,
    read_card,
    read_embedding_file,
    registry_key,
    set_key,
    tag_key,
    verify_set,
)


class Store:
    """An embedding store: versioned Zarr sets under one root, indexed by a DuckDB catalog.

    Open one with :meth:`Store.open` (or create one with :meth:`Store.init`). The catalog and
    the chunk cache are built on first use; a long-lived process keeps decoded chunks in memory
    (``PERTSTORE_CACHE_BYTES``), so repeated reads are plain numpy indexing.
    """

    def __init__(
        self, storage: Storage, *, catalog_path: str | Path | None = None, settings: Settings | None = None
    ) -> None:
        self.storage = storage
        self.settings = settings or get_settings()
        self.catalog_path = Path(catalog_path) if catalog_path else _default_catalog_path(storage)
        self._catalog: Catalog | None = None
        self._cache: SetCache | None = None
        self._indexes = IndexCache()
        """Prepared neighbour-search indexes (see :mod:`pertstore._similarity`)."""
        self._shared_rules: dict[str, tuple[str, str]] | None = None
        """Shared Ensembl ids a rule gave to one gene: ``{id: (entity id, rule)}`` (read on first need)."""
        self.release_catalog = False
        """Let go of the catalog file between job updates, so other processes can read it (the CLI)."""

    # ---- opening -------------------------------------------------------------------------------

    @classmethod
    def init(
        cls, uri: str | Path | None = None, *, catalog: str | Path | None = None, genes: bool = True, **options
    ) -> Store:
        """Create a store at ``uri`` (default ``$PERTSTORE_STORE``); opening an existing one is fine.

        With ``genes`` (the default, as ``pertstore init``), a store without a gene registry gets
        the human genes (:meth:`register_genes`); ``genes=False`` leaves the registry empty.
        """
        settings = get_settings()
        storage = open_storage(uri or settings.store, storage_options=options.get("storage_options"))
        if not storage.exists(STORE_MARKER):
            storage.write_bytes(STORE_MARKER, json.dumps(STORE_ENCODING).encode())
        store = cls(storage, catalog_path=catalog or settings.catalog, settings=settings)
        if genes and not storage.exists(registry_key("gene")):
            store.register_genes()
        return store

    @classmethod
    def open(
        cls,
        uri: str | Path | None = None,
        *,
        catalog: str | Path | None = None,
        read_only: bool = False,
        storage_options: dict | None = None,
    ) -> Store:
        """Open an existing store; the catalog is rebuilt from the store if its file is missing."""
        settings = get_settings()
        storage = open_storage(uri or settings.store, read_only=read_only, storage_options=storage_options)
        if not storage.exists(STORE_MARKER):
            raise NotFoundError(f"no pertstore store at {storage.uri} (create one with `pertstore init {storage.uri}`)")
        marker = json.loads(storage.read_bytes(STORE_MARKER))
        if marker.get("encoding-version") != STORE_ENCODING["encoding-version"]:
            raise PertstoreError(
                f"store {storage.uri} has layout {marker.get('encoding-version')!r}; "
                f"this pertstore reads {STORE_ENCODING['encoding-version']}"
            )
        store = cls(storage, catalog_path=catalog or settings.catalog, settings=settings)
        if not store.catalog_path.exists():
            store.rebuild_catalog()
        return store

    @property
    def uri(self) -> str:
        return self.storage.uri

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = Catalog(self.catalog_path, cache_bytes=self.settings.cache_bytes)
        return self._catalog

    @property
    def cache(self) -> SetCache:
        if self._cache is None:
            self._cache = SetCache(
                self.storage, max_bytes=self.settings.cache_bytes, threads=self.settings.read_threads
            )
        return self._cache

    def close(self) -> None:
        """Close the catalog connection and drop decoded chunks."""
        if self._catalog is not None:
            self._catalog.close()
        if self._cache is not None:
            self._cache.clear()

    def settle(self) -> None:
        """Wait for the indexes a long-lived process builds in the background (entity aliases, set
        ids) after its first reads; reads never need to, benchmarks of the warm state do."""
        if self._catalog is not None:
            self._catalog.settle()
        if self._cache is not None:
            self._cache.settle()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    # ---- entities ------------------------------------------------------------------------------

    def register_genes(self, table: pd.DataFrame | None = None, *, ensembl: pd.DataFrame | None = None) -> int:
        """Register genes from a table shaped like ``genes/human_genes.tsv.gz`` (default: the vendored one).

        ``ensembl``: Ensembl's ``(ensembl_id, symbol)`` assignment, which gives an Ensembl id listed
        under several genes to the gene Ensembl names (default: ``genes/tss_grch38.tsv.gz`` of the
        data directory, ``$PERTSTORE_DATA_DIR``, when it is there). Returns the number of genes now
        registered; the registry is written to ``registry/gene.parquet``.
        """
        if ensembl is None and self.settings.data_dir:
            path = Path(self.settings.data_dir) / "genes" / "tss_grch38.tsv.gz"
            ensembl = ensembl_assignment(path) if path.is_file() else None
        reg = gene_registry(default_gene_table() if table is None else table, ensembl)
        merged = merge_registry(read_registry(self.storage, "gene"), reg)
        given = dict(zip(reg.entity_id, reg.shared_ensembl))  # the newest rules win for genes already registered
        merged["shared_ensembl"] = [
            given.get(e, old)
            for e, old in zip(merged.entity_id, merged.get("shared_ensembl", pd.Series("", merged.index)))
        ]
        return self._save_registry("gene", merged.fillna(""))

    def register_molecules(
        self, table: pd.DataFrame, *, name_col: str = "name", smiles_col: str = "smiles", alias_cols: Sequence[str] = ()
    ) -> tuple[int, list[str]]:
        """Register molecules (InChIKey of the RDKit structure) with their names and aliases.

        Returns the number of molecules now registered and one message per row that failed.
        """
        reg, failures = molecule_registry(table, name_col=name_col, smiles_col=smiles_col, alias_cols=alias_cols)
        return self._save_registry("molecule", merge_registry(read_registry(self.storage, "molecule"), reg)), failures

    def _save_registry(self, kind: str, reg: pd.DataFrame) -> int:
        buf = io.BytesIO()
        reg.to_parquet(buf, index=False)
        self.storage.write_bytes(registry_key(kind), buf.getvalue())
        self.catalog.replace_registry(kind, reg)
        self._shared_rules = None
        return len(reg)

    def resolve(self, ids: Sequence[str], kind: str = "gene") -> Resolution:
        """Canonical ids for ids of any namespace (symbols, Entrez, Ensembl, names, SMILES, ...).

        An Ensembl id several genes share resolves by a rule, named in ``rules`` of the answer.
        """
        if kind not in ("gene", "molecule"):
            raise InvalidInputError(f"unknown entity kind {kind!r}; use 'gene' or 'molecule'")
        query = check_ids([str(i) for i in ids])
        res = self.catalog.resolve(query, kind)
        if kind == "gene":
            if self._shared_rules is None:
                self._shared_rules = self.catalog.shared_id_rules()
            note_rules(res, self._shared_rules)
        return res

    # ---- writing -------------------------------------------------------------------------------

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

    @property
    def tasks(self):
        """Perturbation tasks of this store: ``save``, ``load``, ``ls`` (``tasks/<name>/<version>``)."""
        from pertstore.consumers.tasks import Tasks

        return Tasks(self)

    @property
    def jobs(self):
        """Batch jobs of this store: ``submit``, ``ls``, ``status``, ``cancel``, ``resume``."""
        from pertstore.producers import Jobs

        return Jobs(self)

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

    # ---- reading -------------------------------------------------------------------------------

    def ls(self, source: str | None = None, context: str | None = None) -> pd.DataFrame:
        """Published sets (one row per source, version), with their tags."""
        check_names(source=source, context=context)
        return self.catalog.list_sets(source, context)

    def sources(self) -> pd.DataFrame:
        return self.catalog.sources()

    def contexts(self) -> list[str]:
        return self.catalog.contexts()

    def show(
        self, source: str, *, context: str | None = None, version: str | None = None, tag: str | None = None
    ) -> SetCard:
        """The card of one set."""
        check_names(source=source, context=context, version=version, tags=tag)
        row = self.catalog.find_set(source, context=context, version=version, tag=tag)
        return read_card(self.storage, row.path)

    def open_set(
        self, source: str, *, context: str | None = None, version: str | None = None, tag: str | None = None
    ) -> OpenSet:
        check_names(source=source, context=context, version=version, tags=tag)
        row = self.catalog.find_set(source, context=context, version=version, tag=tag)
        return self.cache.get(row.path)

    def get(
        self,
        source: str,
        ids: Sequence[str] | None = None,
        *,
        context: str | None = None,
        version: str | None = None,
        tag: str | None = None,
    ) -> xr.DataArray:
        """One set as a DataArray ``(entity, dim)``: all rows, or the rows of ``ids`` (aligned, NaN if absent).

        :meth:`align` names each source's width ``<source>_dim`` instead, since sources of one
        Dataset differ in width.
        """
        if ids is not None:
            ds = self.align([source], ids, context=context, version=version, tag=tag)
            return ds[source].rename({f"{source}_dim": "dim"})
        s = self.open_set(source, context=context, version=version, tag=tag)
        return xr.DataArray(
            s.all_rows().copy(),
            dims=("entity", "dim"),
            coords={"entity": s.ids},
            name=source,
            attrs={"version": s.card.version, "context": s.card.context},
        )

    def align(
        self,
        sources: str | Sequence[str],
        ids: Sequence[str],
        *,
        context: str | None = None,
        version: str | dict[str, str] | None = None,
        tag: str | dict[str, str] | None = None,
        kind: str | None = None,
    ) -> xr.Dataset:
        """Embeddings of ``ids`` from several sources, rows in the caller's order.

        Parameters
        ----------
        sources
            Source names; each contributes one variable ``(entity, <source>_dim)``.
        ids
            Entity ids in any namespace the registry knows (symbols, Ensembl, Entrez, SMILES, names, ...).
        context
            For contextual sources, the context (cell line) to read; global sources ignore it.
        version, tag
            One value for every source, or a ``{source: value}`` mapping; default: tag ``latest``.

        Returns
        -------
        A Dataset with NaN rows and ``covered[entity, source] = False`` where a source lacks an
        entity; ``attrs['unresolved']`` and ``attrs['ambiguous']`` list ids that did not resolve.
        """
        sources = [sources] if isinstance(sources, str) else list(sources)
        if not sources:
            raise InvalidInputError("align needs at least one source")
        ids = check_ids([str(i) for i in ids])
        for s in sources:
            check_names(source=s, context=context, version=_pick(version, s), tags=_pick(tag, s))
        rows = {
            s: self.catalog.find_set(s, context=context, version=_pick(version, s), tag=_pick(tag, s)) for s in sources
        }
        kinds = {r.kind for r in rows.values()}
        if len(kinds) > 1:
            raise InvalidInputError(
                f"sources mix entity kinds {sorted(kinds)}: { ({s: r.kind for s, r in rows.items()}) }"
            )
        kind = kind or kinds.pop()
        res = self.resolve(ids, kind)
        sets = dict(zip(rows, self.cache.get_many([r.path for r in rows.values()])))
        positions = self.cache.positions(
            list(sets.values()),
            res.ids,
            lambda those: self.catalog.positions([(s.card.source, s.card.version) for s in those], res.ids),
        )
        ds = aligned_dataset(
            ids, res.ids, sets, positions, context=context or "", unresolved=res.unresolved, ambiguous=res.ambiguous
        )
        self.cache.trim(extra=self.catalog.cache_nbytes)
        return ds

    # ---- similarity ----------------------------------------------------------------------------

    def neighbors(
        self,
        source: str,
        ids: Sequence[str],
        *,
        k: int = 20,
        metric: str = "cosine",
        context: str | None = None,
        version: str | None = None,
        tag: str | None = None,
        restrict_to: Sequence[str] | None = None,
        method: str = "auto",
    ) -> pd.DataFrame:
        """The ``k`` entities of set ``source`` nearest to each of ``ids`` (see :func:`pertstore._similarity.neighbors`:
        ``method`` exact, index (approximate HNSW kept in the store) or auto, exact up to 100,000 rows)."""
        from pertstore import _similarity

        return _similarity.neighbors(
            self,
            source,
            ids,
            k=k,
            metric=metric,
            context=context,
            version=version,
            tag=tag,
            restrict_to=restrict_to,
            method=method,
        )

    def compare_neighbors(
        self,
        a: str,
        b: str,
        ids: Sequence[str] | None = None,
        *,
        k: int = 20,
        metric: str = "cosine",
        context: str | None = None,
    ) -> pd.DataFrame:
        """Per entity, the share of its top-``k`` neighbours in set ``a`` also among its top-``k`` in ``b``
        (see :func:`pertstore._similarity.compare_neighbors`)."""
        from pertstore import _similarity

        return _similarity.compare_neighbors(self, a, b, ids, k=k, metric=metric, context=context)

    # ---- maintenance ---------------------------------------------------------------------------

    def rebuild_catalog(self, *, progress: bool = False) -> dict:
        """Recreate the catalog from the store alone; returns what it indexed and, under ``problems``,
        the files it skipped (a malformed tag file never stops a rebuild)."""
        self._shared_rules = None
        return rebuild(self.catalog, self.storage, progress=progress)

    def verify(self, *, progress: bool = False) -> dict:
        """Re-check every published set's chunks and checksum, and the catalog against the store.

        Sets published but not yet indexed (a writer killed between the two steps) are indexed.
        Returns ``{"sets": [SetReport...], "catalog": [problems], "indexed": [keys], "staging": [leftover keys]}``.
        """
        from rich.progress import track

        keys = published_sets(self.storage)
        reports = [verify_set(self.storage, k) for k in track(keys, description="verifying", disable=not progress)]
        indexed = self.catalog.indexed_paths()
        lagging = sorted(set(keys) - indexed)  # published, then the writer died before indexing: the store wins
        for k in lagging:
            self.index_published(read_card(self.storage, k), ["latest"])
        problems = [f"{k} is in the catalog but not in the store" for k in sorted(indexed - set(keys))]
        problems += read_tags(self.storage)[1] + job_record_problems(self.storage)  # what a rebuild would skip
        return {"sets": reports, "catalog": problems, "indexed": lagging, "staging": _staging_areas(self.storage)}


def _staging_areas(storage: Storage) -> list[str]:
    """Staging areas that still hold files (a writer died or is at work); the empty folders a
    finished job leaves behind are not reported."""
    areas = set()
    for key in storage.walk("staging"):
        parts = key.split("/")  # staging/<source>/<version>/..., staging/_parts|_tasks/<name>/<version>/...
        areas.add("/".join(parts[: 4 if parts[1].startswith("_") else 3]))
    return sorted(areas)


def _pick(value: str | dict[str, str] | None, source: str) -> str | None:
    return value.get(source) if isinstance(value, dict) else value


def _default_catalog_path(storage: Storage) -> Path:
    if storage.is_local:
        return Path(storage.uri) / "catalog.duckdb"
    digest = hashlib.sha1(storage.uri.encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "pertstore" / f"catalog-{digest}.duckdb"
