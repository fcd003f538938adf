from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import pytest

PAPALEXI = "perturb/papalexi2021_thp1_crispr_ko.h5ad"
NORMAN = "perturb/norman2019_mcfaline2023_devel.h5ad"


def shared_file(name: str) -> Path:
    value = os.environ.get("PERTSTORE_DATA_DIR")
    if not value:
        pytest.skip("PERTSTORE_DATA_DIR is not set (the Makefile points it at the shared data directory)")
    path = Path(value) / name
    if not path.is_file():
        pytest.skip(f"{path} does not exist (PERTSTORE_DATA_DIR={value})")
    return path


@pytest.fixture(scope="session")
def papalexi() -> Path:
    return shared_file(PAPALEXI)


@pytest.fixture(scope="session")
def norman() -> Path:
    return shared_file(NORMAN)


@pytest.fixture
def write_h5ad(tmp_path: Path):
    def write(a: ad.AnnData, name: str = "cells.h5ad") -> Path:
        path = tmp_path / name
        a.write_h5ad(path)
        return path

    return write
