import uuid

import numpy as np
import pytest
from pertstore.store import FsspecStorage, LocalStorage

from pertstore import Store
from pertstore.testing import BackendContractTests


class TestLocalStorage(BackendContractTests):
    @pytest.fixture
    def storage(self, tmp_path):
        return LocalStorage(tmp_path / "root")

    def make_read_only(self, storage):
        return LocalStorage(storage.root, read_only=True)


class TestFsspecStorage(BackendContractTests):
    """The object-store code path (no rename: copy, then the group metadata last), on fsspec's memory filesystem."""

    @pytest.fixture
    def storage(self):
        return FsspecStorage(f"memory://pertstore-{uuid.uuid4().hex}")

    def make_read_only(self, storage):
        return FsspecStorage(storage.uri, read_only=True)


def test_a_whole_store_on_an_fsspec_root(tmp_path):
    uri = f"memory://store-{uuid.uuid4().hex}"
    store = Store.init(uri, catalog=tmp_path / "catalog.duckdb")  # registers the human genes
    ids = store.resolve(["TP53", "BRCA1", "EGFR"], "gene").ids
    values = np.random.default_rng(0).random((3, 8), dtype=np.float32)
    from pertstore.store import Recipe

    store.write_set(Recipe(source="mem", producer="test", kind="gene"), ids, values)
    np.testing.assert_array_equal(store.align("mem", ["EGFR", "TP53"])["mem"].values, values[[2, 0]])
    assert store.storage.walk("staging") == []
    report = store.verify()
    assert all(r.ok for r in report["sets"]) and len(report["sets"]) == 1
    store.close()
    reopened = Store.open(uri, catalog=tmp_path / "other.duckdb")  # a fresh catalog rebuilt from the store
    np.testing.assert_array_equal(reopened.get("mem").values, values)
    reopened.close()


@pytest.fixture(params=["local", "fsspec"])
def any_storage(request, tmp_path):
    if request.param == "local":
        return LocalStorage(tmp_path / "root")
    return FsspecStorage(f"memory://ranges-{uuid.uuid4().hex}")


def test_byte_ranges_and_streamed_writes(any_storage):
    any_storage.write_parts("s/obj", (bytes([i]) * 10 for i in range(5)))  # written part by part
    data = any_storage.read_bytes("s/obj")
    assert data == b"".join(bytes([i]) * 10 for i in range(5))
    assert any_storage.read_range("s/obj", 12, 25) == data[12:25]
    assert any_storage.read_range("s/obj", -7) == data[-7:]
    assert any_storage.read_range("s/obj", 45, 60) == data[45:]  # short only at the end
    assert any_storage.read_ranges("s/obj", [(40, 50), (0, 3), (10, 10)]) == [data[40:50], data[:3], b""]
    assert any_storage.walk("s") == ["s/obj"]  # no temporary file left behind
    with pytest.raises(FileNotFoundError):
        any_storage.read_range("s/none", 0, 4)
    with pytest.raises(FileNotFoundError):
        any_storage.read_ranges("s/none", [(0, 4)])
