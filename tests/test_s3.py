"""The store on an ``s3://`` root, against moto's S3-compatible server started on loopback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pertstore.store import FsspecStorage
from servers import make_bucket, s3_server

from pertstore import Store
from pertstore.testing import BackendContractTests

BUCKET = "pertstore-test"


@pytest.fixture(scope="module")
def s3env():
    with s3_server() as env, pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        make_bucket(env, BUCKET)
        yield env


class TestS3Storage(BackendContractTests):
    @pytest.fixture
    def storage(self, s3env, request):
        return FsspecStorage(f"s3://{BUCKET}/contract/{request.node.name}")

    def make_read_only(self, storage):
        return FsspecStorage(storage.uri, read_only=True)


def test_store_on_s3_round_trip(s3env, tmp_path):
    uri = f"s3://{BUCKET}/store"
    genes = pd.DataFrame(
        {"entity_id": ["ENSG00000141510", "ENSG00000012048", "ENSG00000115415"], "symbol": ["TP53", "BRCA1", "STAT1"]}
    )
    with Store.init(uri, catalog=tmp_path / "a.duckdb") as s:  # registers the human genes
        values = np.arange(12, dtype=np.float32).reshape(3, 4)
        frame = pd.DataFrame(values, columns=[f"d{j}" for j in range(4)]).assign(gene=genes.symbol)
        frame.to_parquet(tmp_path / "e.parquet")
        card = s.import_file(tmp_path / "e.parquet", source="mine", id_col="gene")
        again = s.import_file(tmp_path / "e.parquet", source="mine", id_col="gene")
        assert again.version == card.version  # publishing the same recipe again is a no-op
        got = s.align(["mine"], ["STAT1", "TP53", "NOT_A_GENE"])
        np.testing.assert_array_equal(got["mine"].values[:2], values[[2, 0]])
        assert s.storage.walk("staging") == []
        listing = s.ls().drop(columns=["created_at"])
    # a second machine: a fresh catalog rebuilt from the bucket alone gives the same answers
    with Store.open(uri, catalog=tmp_path / "b.duckdb", read_only=True) as other:
        pd.testing.assert_frame_equal(other.ls().drop(columns=["created_at"]), listing)
        np.testing.assert_array_equal(other.get("mine", ["BRCA1"]).values[0], values[1])
        report = other.verify()
        assert [r.ok for r in report["sets"]] == [True] and not report["catalog"]
