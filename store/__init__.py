"""Zarr layout, staged writers, chunk-aware readers and storage backends of pertstore.

``__all__`` is what the other packages import (``docs/architecture.md`` says which names each layer
uses); anything else stays importable from its owning module, for tests.
"""

from pertstore.store._align import aligned_dataset
from pertstore.store._cache import SetCache
from pertstore.store._card import SetCard
from pertstore.store._export import from_arrow, sources_of, to_anndata, to_arrow, write_aligned
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
from pertstore.store._reader import OpenSet
from pertstore.store._recipe import MAX_ID_CHARS, EntityKind, Recipe, check_ids, check_name, check_names
from pertstore.store._storage import GROUP_META, Storage, open_storage
from pertstore.store._verify import published_sets, verify_set
from pertstore.store._writer import SetWriter, check_values, publish_sealed, read_card

__all__ = [
    # producers and consumers (and the catalog, the facade)
    "EntityKind",
    "GROUP_META",
    "OpenSet",
    "Recipe",
    "SetWriter",
    "Storage",
    "TASKS_PREFIX",
    "TASK_ENCODING_TYPE",
    "check_name",
    "check_names",
    "claim_key",
    "file_digest",
    "file_sha256",
    "file_stamp",
    "job_key",
    "publish_sealed",
    "registry_key",
    "set_key",
    "staging_key",
    # the catalog (indexing and rebuilding from the store)
    "RESULTS_PREFIX",
    "SetCard",
    "published_sets",
    "results_key",
    # the facade (pertstore.Store and its neighbour queries)
    "EXACT_MAX_ROWS",
    "ExactIndex",
    "GraphIndex",
    "STORE_ENCODING",
    "STORE_MARKER",
    "SetCache",
    "aligned_dataset",
    "check_ids",
    "check_search",
    "check_values",
    "neighbor_index_key",
    "open_storage",
    "read_card",
    "read_embedding_file",
    "tag_key",
    "top_k_overlap",
    "verify_set",
    # front ends (CLI, REST API) and users (the README's exports of an aligned Dataset)
    "MAX_ID_CHARS",
    "SET_ENCODING_TYPE",
    "SET_ENCODING_VERSION",
    "from_arrow",
    "sources_of",
    "to_anndata",
    "to_arrow",
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
