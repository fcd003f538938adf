from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from pertstore import Store
from pertstore.store import Recipe


@pytest.fixture(scope="session")
def _template_store(tmp_path_factory) -> Path:
    """A store with the human genes registered, built once and copied per test."""
    root = tmp_path_factory.mktemp("template") / "store"
    with Store.init(root) as s:
        s.register_genes()
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
    df = store.catalog.query("SELECT entity_id FROM entities WHERE kind = 'gene' AND entity_id LIKE 'ENSG%' "
                             "ORDER BY entity_id LIMIT 2000")
    return df.entity_id.tolist()


def random_set(store: Store, ids: list[str], *, source: str = "rand", dim: int = 16, seed: int = 0,
               context: str = "") -> tuple[np.ndarray, Recipe]:
    values = np.random.default_rng(seed).random((len(ids), dim), dtype=np.float32)
    recipe = Recipe(source=source, producer="test", kind="gene", params={"seed": seed, "dim": dim}, context=context)
    store.write_set(recipe, ids, values)
    return values, recipe


@pytest.fixture(scope="session")
def data_dir() -> Path:
    value = os.environ.get("PERTSTORE_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("PERTSTORE_DATA_DIR is not set to the data directory (the Makefile sets it to ../shared/data)")
    return Path(value)


def store_snapshot(store: Store) -> tuple[list[str], list]:
    """Every key of the store plus every catalog row: equal snapshots mean nothing changed."""
    keys = [k for k in store.storage.walk("") if not k.startswith("catalog.duckdb")]
    rows = [store.catalog.query(f"SELECT * FROM {t} ORDER BY ALL").to_dict("records")
            for t in ("sources", "sets", "tags", "set_entities")]
    return keys, rows
