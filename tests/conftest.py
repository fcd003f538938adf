from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pertstore import Store


@pytest.fixture(scope="session")
def _template_store(tmp_path_factory) -> Path:
    """A store with the human genes registered, built once and copied per test."""
    root = tmp_path_factory.mktemp("template") / "store"
    Store.init(root).close()  # registers the human genes, as `pertstore init` does
    return root


@pytest.fixture
def store(_template_store: Path, tmp_path: Path) -> Store:
    root = tmp_path / "store"
    shutil.copytree(_template_store, root)
    s = Store.open(root)
    yield s
    s.close()


@pytest.fixture
def gene_ids(store: Store) -> list[str]:
    """2,000 canonical ids of protein-coding genes, in registry order."""
    df = store.catalog.query(
        "SELECT entity_id FROM entities WHERE kind = 'gene' AND entity_id LIKE 'ENSG%' ORDER BY entity_id LIMIT 2000"
    )
    return df.entity_id.tolist()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    value = os.environ.get("PERTSTORE_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("PERTSTORE_DATA_DIR is not set to the data directory (the Makefile sets it to ../shared/data)")
    return Path(value)
