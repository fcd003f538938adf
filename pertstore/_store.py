"""The :class:`Store` facade: every operation the CLI and the REST API expose."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import xarray as xr

from pertstore._config import Settings, get_settings
from pertstore._similarity import IndexCache
from pertstore._store_write import WriteMethods
from pertstore.catalog import (
    Catalog,
    Resolution,
    default_gene_table,
    ensembl_assignment,
    gene_registry,
    job_record_problems,
    merge_registry,
    molecule_registry,
    read_registry,
    read_tags,
    rebuild,
)
from pertstore.errors import InvalidInputError, NotFoundError, PertstoreError
from pertstore.store import (
    STORE_ENCODING,
    STORE_MARKER,
    OpenSet,
    SetCache,
    SetCard,
    Storage,
    aligned_dataset,
    check_ids,
    check_names,
    open_storage,
    published_sets,
    read_card,
    registry_key,
    verify_set,
)


class Store(WriteMethods):
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
        return len(reg)

    def resolve(self, ids: Sequence[str], kind: str = "gene") -> Resolution:
        """Canonical ids for ids of any namespace (symbols, Entrez, Ensembl, names, SMILES, ...).

        An Ensembl id several genes share resolves by a rule, named in ``rules`` of the answer.
        """
        if kind not in ("gene", "molecule"):
            raise InvalidInputError(f"unknown entity kind {kind!r}; use 'gene' or 'molecule'")
        query = check_ids([str(i) for i in ids])
        return self.catalog.resolve(query, kind)

    # ---- tasks and jobs (writing sets: WriteMethods, pertstore/_store_write.py) ---------------

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
