"""Storage backends: a key/value view of the store root through fsspec.

Keys are ``/``-separated paths relative to the root. Two backends:

- :class:`LocalStorage` for a directory: atomic writes through a temporary file and
  ``os.replace``, atomic publish through ``os.rename`` of the staged directory.
- :class:`FsspecStorage` for any fsspec filesystem (``s3://``, ``memory://``): an object
  store has no rename, so publish copies the staged objects and writes the group's
  ``zarr.json`` last; readers only see a set whose ``zarr.json`` exists.
"""

from __future__ import annotations

import os
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fsspec

from pertstore.errors import PertstoreError

GROUP_META = "zarr.json"


class Storage(ABC):
    """A store root seen as keys and bytes."""

    def __init__(self, *, read_only: bool = False) -> None:
        self.read_only = read_only

    def _check_writable(self) -> None:
        if self.read_only:
            raise PertstoreError(f"store {self.uri} was opened read-only and does not support writing")

    @property
    @abstractmethod
    def uri(self) -> str:
        """The root as a URI."""

    @property
    def is_local(self) -> bool:
        return False

    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """The bytes stored at ``key``; :class:`FileNotFoundError` when absent."""

    def read_many(self, keys: Sequence[str], *, threads: int = 8) -> list[bytes]:
        """Read many keys concurrently, results in the order of ``keys``."""
        if len(keys) <= 1 or threads <= 1:
            return [self.read_bytes(k) for k in keys]
        with ThreadPoolExecutor(min(threads, len(keys))) as pool:
            return list(pool.map(self.read_bytes, keys))

    @abstractmethod
    def read_range(self, key: str, start: int, stop: int | None = None) -> bytes:
        """Bytes ``start:stop`` of the object at ``key``; a negative ``start`` counts from its end.

        :class:`FileNotFoundError` when absent. Fewer bytes come back where the object is shorter.
        """

    @abstractmethod
    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Several ``(start, stop)`` byte ranges of one object, in order (one open, or one batched request)."""

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` atomically (readers see the old or the new bytes)."""

    def write_parts(self, key: str, parts: Iterable[bytes]) -> None:
        """Write the concatenation of ``parts`` at ``key`` atomically, without holding it all in memory."""
        self.write_bytes(key, b"".join(parts))

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist; False when it does. Atomic on a local
        directory; on an object store a check then a write (two racing writers may both win)."""
        self._check_writable()
        if self.exists(key):
            return False
        self.write_bytes(key, data)
        return True

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list_dir(self, prefix: str) -> list[str]:
        """Names (not keys) directly below ``prefix``; empty when it does not exist."""

    @abstractmethod
    def walk(self, prefix: str) -> list[str]:
        """All keys below ``prefix`` (recursively), relative to the root."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None:
        """Remove ``prefix`` and everything below it; no error when absent."""

    @abstractmethod
    def publish(self, staged: str, final: str) -> bool:
        """Make the staged group at ``staged`` visible at ``final``.

        Returns False (and discards the staged copy) when ``final`` is already published.
        """

    @abstractmethod
    def zarr_store(self, prefix: str, *, read_only: bool = True):
        """A zarr v3 store rooted at ``prefix``."""

    def staging_key(self, name: str) -> str:
        return f"staging/{name}"


class LocalStorage(Storage):
    """A directory on a local filesystem."""

    def __init__(self, root: str | os.PathLike, *, read_only: bool = False) -> None:
        super().__init__(read_only=read_only)
        self.root = Path(root).expanduser().resolve()

    @property
    def uri(self) -> str:
        return str(self.root)

    @property
    def is_local(self) -> bool:
        return True

    def path(self, key: str) -> Path:
        return self.root / key

    def read_bytes(self, key: str) -> bytes:
        with open(self.root / key, "rb") as f:
            return f.read()

    def read_range(self, key: str, start: int, stop: int | None = None) -> bytes:
        fd = os.open(self.root / key, os.O_RDONLY)
        try:
            if start < 0 or stop is None:
                size = os.fstat(fd).st_size
                start = max(0, size + start) if start < 0 else start
                stop = size if stop is None else stop
            return _pread(fd, start, stop)
        finally:
            os.close(fd)

    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        fd = os.open(self.root / key, os.O_RDONLY)
        try:
            return [_pread(fd, start, stop) for start, stop in ranges]
        finally:
            os.close(fd)

    def write_bytes(self, key: str, data: bytes) -> None:
        self.write_parts(key, (data,))

    def write_parts(self, key: str, parts: Iterable[bytes]) -> None:
        self._check_writable()
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as f:
                for part in parts:
                    f.write(part)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        return (self.root / key).exists()

    def create_exclusive(self, key: str, data: bytes) -> bool:
        self._check_writable()
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True

    def list_dir(self, prefix: str) -> list[str]:
        p = self.root / prefix
        return sorted(x.name for x in p.iterdir()) if p.is_dir() else []

    def walk(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.exists():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file())

    def delete_prefix(self, prefix: str) -> None:
        self._check_writable()
        p = self.root / prefix
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()

    def publish(self, staged: str, final: str) -> bool:
        self._check_writable()
        target = self.root / final
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(self.root / staged, target)  # atomic; fails if target is a non-empty dir
        except OSError:
            if (target / GROUP_META).exists():
                self.delete_prefix(staged)
                return False
            raise
        _fsync_dir(target.parent)
        return True

    def zarr_store(self, prefix: str, *, read_only: bool = True):
        from zarr.storage import LocalStore

        path = self.root / prefix
        if not read_only:
            path.mkdir(parents=True, exist_ok=True)
        return LocalStore(path, read_only=read_only)


class FsspecStorage(Storage):
    """Any fsspec filesystem: object stores (S3) and the in-memory filesystem used in tests."""

    def __init__(self, uri: str, *, read_only: bool = False, storage_options: dict | None = None) -> None:
        super().__init__(read_only=read_only)
        self.fs, self.root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
        self.root = self.root.rstrip("/")
        self._uri = uri.rstrip("/")
        self.storage_options = storage_options or {}

    @property
    def uri(self) -> str:
        return self._uri

    def _full(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def read_bytes(self, key: str) -> bytes:
        return self.fs.cat_file(self._full(key))

    def read_range(self, key: str, start: int, stop: int | None = None) -> bytes:
        return self.fs.cat_file(self._full(key), start=start, end=stop)

    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        if not ranges:
            return []
        path = self._full(key)
        got = self.fs.cat_ranges([path] * len(ranges), [a for a, _ in ranges], [b for _, b in ranges])
        for value in got:
            if isinstance(value, Exception):
                raise FileNotFoundError(path) from value
        return got

    def read_many(self, keys: Sequence[str], *, threads: int = 8) -> list[bytes]:
        if not keys:
            return []
        paths = [self._full(k) for k in keys]
        got = self.fs.cat(paths, on_error="return")  # one batched (async where possible) call
        out = []
        for p in paths:
            value = got[p]
            if isinstance(value, Exception):
                raise FileNotFoundError(p) from value
            out.append(value)
        return out

    def write_bytes(self, key: str, data: bytes) -> None:
        self._check_writable()
        self.fs.pipe_file(self._full(key), data)  # a single PUT: atomic on object stores

    def write_parts(self, key: str, parts: Iterable[bytes]) -> None:
        self._check_writable()
        with self.fs.open(self._full(key), "wb") as f:  # a multipart upload: visible only once complete
            for part in parts:
                f.write(part)

    def exists(self, key: str) -> bool:
        return self.fs.exists(self._full(key))

    def list_dir(self, prefix: str) -> list[str]:
        try:
            entries = self.fs.ls(self._full(prefix), detail=False)
        except FileNotFoundError:
            return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def walk(self, prefix: str) -> list[str]:
        base = self._full(prefix)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        root = self.root.strip("/")
        return sorted(f.strip("/")[len(root) + 1 :] for f in found)

    def delete_prefix(self, prefix: str) -> None:
        self._check_writable()
        path = self._full(prefix)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def publish(self, staged: str, final: str) -> bool:
        self._check_writable()
        if self.exists(f"{final}/{GROUP_META}"):
            self.delete_prefix(staged)
            return False
        keys = [k[len(staged) + 1 :] for k in self.walk(staged)]
        body = [k for k in keys if k != GROUP_META]
        for k in body:
            self.fs.copy(self._full(f"{staged}/{k}"), self._full(f"{final}/{k}"))
        # the group's metadata goes last: it is the commit marker readers look for
        self.fs.copy(self._full(f"{staged}/{GROUP_META}"), self._full(f"{final}/{GROUP_META}"))
        self.delete_prefix(staged)
        return True

    def zarr_store(self, prefix: str, *, read_only: bool = True):
        from zarr.storage import FsspecStore

        return FsspecStore.from_url(
            f"{self._uri}/{prefix}", read_only=read_only, storage_options=self.storage_options or None
        )


def _pread(fd: int, start: int, stop: int) -> bytes:
    """Bytes ``start:stop`` of an open file (short only at its end)."""
    want = max(0, stop - start)
    data = os.pread(fd, want, start)
    if len(data) == want or not data:
        return data
    parts = [data]  # a very large read may come back in pieces
    got = len(data)
    while got < want:
        more = os.pread(fd, want - got, start + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_storage(uri: str | os.PathLike, *, read_only: bool = False, storage_options: dict | None = None) -> Storage:
    """The backend for ``uri``: a local directory for paths and ``file://``, fsspec otherwise."""
    uri = str(uri)
    if "://" not in uri:
        return LocalStorage(uri, read_only=read_only)
    if uri.startswith("file://"):
        return LocalStorage(uri[len("file://") :], read_only=read_only)
    return FsspecStorage(uri, read_only=read_only, storage_options=storage_options)
