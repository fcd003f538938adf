"""Zarr layout, staged writers, chunk-aware readers and storage backends of pertstore."""

from pertstore.store._align import aligned_dataset
from pertstore.store._card import SetCard
from pertstore.store._export import from_arrow, sources_of, to_anndata, to_arrow, to_numpy, to_pandas, write_aligned
from pertstore.store._hashing import file_digest, file_sha256, file_stamp
from pertstore.store._import import read_embedding_file
from pertstore.store._layout import (
    RESULTS_PREFIX,
    SET_ENCODING_TYPE,
    SET_ENCODING_VERSION,
    STORE_ENCODING,
    STORE_MARKER,
    TASK_ENCODING_TYPE,
    TASKS_PREFIX,
    claim_key,
    job_key,
    neighbor_index_key,
    registry_key,
    results_key,
    set_key,
    staging_key,
    tag_key,
)
from pertstore.store._reader import OpenSet, SetCache, decode_chunk
from pertstore.store._recipe import MAX_ID_CHARS, EntityKind, Recipe, check_ids, check_name, check_names
from pertstore.store._storage import GROUP_META, FsspecStorage, LocalStorage, Storage, open_storage
from pertstore.store._verify import SetReport, published_sets, verify_set
from pertstore.store._writer import SetWriter, check_values, chunk_rows_for, publish_sealed, read_card

__all__ = [
    "EXACT_MAX_ROWS",
    "EntityKind",
    "ExactIndex",
    "FsspecStorage",
    "GROUP_META",
    "GraphIndex",
    "LocalStorage",
    "MAX_ID_CHARS",
    "OpenSet",
    "RESULTS_PREFIX",
    "Recipe",
    "SET_ENCODING_TYPE",
    "SET_ENCODING_VERSION",
    "STORE_ENCODING",
    "STORE_MARKER",
    "SetCache",
    "SetCard",
    "SetReport",
    "SetWriter",
    "Storage",
    "TASKS_PREFIX",
    "TASK_ENCODING_TYPE",
    "aligned_dataset",
    "check_ids",
    "check_name",
    "check_names",
    "check_search",
    "check_values",
    "chunk_rows_for",
    "claim_key",
    "decode_chunk",
    "file_digest",
    "file_sha256",
    "file_stamp",
    "from_arrow",
    "job_key",
    "neighbor_index_key",
    "open_storage",
    "publish_sealed",
    "published_sets",
    "read_card",
    "read_embedding_file",
    "registry_key",
    "results_key",
    "set_key",
    "sources_of",
    "staging_key",
    "tag_key",
    "to_anndata",
    "to_arrow",
    "to_numpy",
    "to_pandas",
    "top_k_overlap",
    "verify_set",
    "write_aligned",
]

_LAZY = {
    "EXACT_MAX_ROWS": "pertstore.store._neighbors",
    "ExactIndex": "pertstore.store._neighbors",
    "GraphIndex": "pertstore.store._neighbors",
    "check_search": "pertstore.store._neighbors",
    "top_k_overlap": "pertstore.store._neighbors",
}
"""Exports imported on first use (they pull in torch or Dask)."""


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
