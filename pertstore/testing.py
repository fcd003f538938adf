"""Contract tests every storage backend must pass; subclass and provide a ``storage`` fixture."""

from __future__ import annotations

import pytest

from pertstore.errors import PertstoreError
from pertstore.store import Storage


class BackendContractTests:
    """Shared tests of :class:`pertstore.store.Storage` backends.

    A subclass defines a ``storage`` fixture returning an empty, writable backend and a
    ``make_read_only(storage)`` method returning a read-only view of the same root.
    """

    def make_read_only(self, storage: Storage) -> Storage:
        raise NotImplementedError

    def test_write_read_exists(self, storage: Storage) -> None:
        assert not storage.exists("a/b.bin")
        storage.write_bytes("a/b.bin", b"hello")
        assert storage.exists("a/b.bin")
        assert storage.read_bytes("a/b.bin") == b"hello"
        storage.write_bytes("a/b.bin", b"bye")
        assert storage.read_bytes("a/b.bin") == b"bye"

    def test_missing_key_raises(self, storage: Storage) -> None:
        with pytest.raises(FileNotFoundError):
            storage.read_bytes("nope")

    def test_read_many_keeps_order(self, storage: Storage) -> None:
        for i in range(20):
            storage.write_bytes(f"m/{i}", str(i).encode())
        keys = [f"m/{i}" for i in reversed(range(20))]
        assert storage.read_many(keys, threads=4) == [str(i).encode() for i in reversed(range(20))]

    def test_list_walk_delete(self, storage: Storage) -> None:
        storage.write_bytes("d/x/1", b"1")
        storage.write_bytes("d/y/2", b"2")
        assert storage.list_dir("d") == ["x", "y"]
        assert storage.walk("d") == ["d/x/1", "d/y/2"]
        assert storage.list_dir("absent") == []
        storage.delete_prefix("d/x")
        assert storage.walk("d") == ["d/y/2"]
        storage.delete_prefix("absent")  # no error

    def test_publish_moves_and_refuses_twice(self, storage: Storage) -> None:
        storage.write_bytes("staging/s/v/zarr.json", b"{}")
        storage.write_bytes("staging/s/v/values/c/0/0", b"chunk")
        assert storage.publish("staging/s/v", "sets/s/v") is True
        assert storage.read_bytes("sets/s/v/values/c/0/0") == b"chunk"
        assert storage.exists("sets/s/v/zarr.json")
        assert storage.walk("staging") == []
        storage.write_bytes("staging/s/v/zarr.json", b'{"other": 1}')
        assert storage.publish("staging/s/v", "sets/s/v") is False
        assert storage.read_bytes("sets/s/v/zarr.json") == b"{}"  # published sets never change
        assert storage.walk("staging") == []

    def test_read_only_refuses_writes(self, storage: Storage) -> None:
        storage.write_bytes("k", b"v")
        ro = self.make_read_only(storage)
        assert ro.read_bytes("k") == b"v"
        with pytest.raises(PertstoreError, match="read-only"):
            ro.write_bytes("k", b"w")
        with pytest.raises(PertstoreError, match="read-only"):
            ro.delete_prefix("k")
