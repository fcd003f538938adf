"""Zarr layout, staged writers, chunk-aware readers and storage backends of pertstore."""

from pertstore.store._align import aligned_dataset
from pertstore.store._card import SetCard
from pertstore.store._export import from_arrow, to_anndata, to_arrow, to_numpy, to_pandas, write_aligned
from pertstore.store._import import read_embedding_file
from pertstore.store._layout import (STORE_ENCODING, STORE_MARKER, neighbor_index_key, registry_key, set_key,
                                     staging_key, tag_key)
from pertstore.store._reader import OpenSet, SetCache, decode_chunk
from pertstore.store._hashing import file_digest, file_sha256, file_stamp
from pertstore.store._recipe import EntityKind, Recipe, check_ids, check_name, check_names
from pertstore.store._storage import FsspecStorage, LocalStorage, Storage, open_storage
from pertstore.store._verify import SetReport, published_sets, verify_set
from pertstore.store._writer import SetWriter, check_values, chunk_rows_for, read_card

__all__ = [
    "STORE_ENCODING", "STORE_MARKER", "EntityKind", "FsspecStorage", "LocalStorage", "OpenSet", "Recipe",
    "SetCache", "SetCard", "SetReport", "SetWriter", "Storage", "aligned_dataset", "check_ids", "check_name", "check_names", "check_values",
    "chunk_rows_for", "decode_chunk", "file_digest", "file_sha256", "file_stamp", "from_arrow", "open_storage",
    "published_sets", "read_card",
    "neighbor_index_key", "read_embedding_file", "registry_key", "set_key", "staging_key", "tag_key", "to_anndata", "to_arrow",
    "to_numpy", "to_pandas", "verify_set", "write_aligned",
]
