"""Where things live under a store root, and the on-disk encodings pertstore writes.

Layout (all keys relative to the root):

- ``pertstore.json``: store marker with the layout's encoding version.
- ``sets/<source>/<version>/``: one published embedding set, a Zarr v3 group (see ``docs/architecture.md``).
- ``staging/<source>/<version>/``: a set being written; never read by readers.
- ``tags/<source>/<context or _global>/<tag>.json``: a tag pointing at a version.
- ``registry/<kind>.parquet``: the entity registry (genes, molecules).
- ``claims/<source>/<version>.json``: the job computing a recipe right now (host, pid), so a job
  of another process with the same recipe waits for it instead of computing it too.
- ``results/<task>/<task_version>/<stem>.results.parquet`` (and ``.errors.parquet``): one save of
  benchmark results, replayed in order by a catalog rebuild.
- ``indexes/<source>/<version>/<metric>.usearch``: a set's approximate neighbour index, built on first
  use (sets above 100,000 rows); derived data, never read as a set.
- ``jobs/<job_id>.json``: a producer job's record (its catalog rows), so a catalog rebuild keeps it.
"""

from __future__ import annotations

from pertstore.store._recipe import check_names

STORE_MARKER = "pertstore.json"
STORE_ENCODING = {"encoding-type": "pertstore-store", "encoding-version": "0.1.0"}
SET_ENCODING_TYPE = "pertstore-embedding-set"
SET_ENCODING_VERSION = "0.2.0"
"""0.2.0: 16 KiB chunks, each ending in its CRC32C (Zarr's ``crc32c`` codec) instead of digests on the card."""
GLOBAL_CONTEXT_DIR = "_global"
TASKS_PREFIX = "tasks"
TASK_ENCODING_TYPE = "pertstore-task"
RESULTS_PREFIX = "results"


def set_key(source: str, version: str) -> str:
    check_names(source=source, version=version)
    return f"sets/{source}/{version}"


def staging_key(source: str, version: str) -> str:
    check_names(source=source, version=version)
    return f"staging/{source}/{version}"


def tag_key(source: str, context: str, tag: str) -> str:
    check_names(source=source, context=context, tags=tag)
    return f"tags/{source}/{context or GLOBAL_CONTEXT_DIR}/{tag}.json"


def claim_key(source: str, version: str) -> str:
    check_names(source=source, version=version)
    return f"claims/{source}/{version}.json"


def results_key(task: str, task_version: str, stem: str) -> str:
    check_names(task=task, version=task_version)
    return f"{RESULTS_PREFIX}/{task}/{task_version}/{stem}"


def neighbor_index_key(source: str, version: str, metric: str) -> str:
    check_names(source=source, version=version)
    return f"indexes/{source}/{version}/{metric}.usearch"


def job_key(job_id: str) -> str:
    check_names(job=job_id)
    return f"jobs/{job_id}.json"


def registry_key(kind: str) -> str:
    return f"registry/{kind}.parquet"
