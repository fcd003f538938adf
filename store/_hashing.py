"""The one file hasher: content digests that pin recipe and task inputs, and cheap file stamps for caches.

Digests are part of stored fingerprints (a recipe's ``inputs``, a task's ``input.sha256``), so they
must never change: SHA-256 of a file's bytes; for a directory, of each file's relative path then
bytes, files sorted by path.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK = 1 << 22
"""Bytes read at a time."""


def file_digest(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, or of every file under a directory (relative path, then bytes,
    in sorted order); a URL (``s3://...``) is read through fsspec."""
    h = hashlib.sha256()
    if "://" in str(path):
        import fsspec

        with fsspec.open(str(path), "rb") as f:
            _update(h, f)
        return h.hexdigest()
    path = Path(path)
    if not path.is_dir():
        with open(path, "rb") as f:
            _update(h, f)
        return h.hexdigest()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            _update(h, fh)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """``sha256:<hex>`` of :func:`file_digest`: how recipes pin their file inputs."""
    return f"sha256:{file_digest(path)}"


def file_stamp(path: str | Path) -> str:
    """16 hex digits naming a file's path, size and modification time (not its content): a cache key
    that changes when the file is replaced or edited."""
    path = Path(path)
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]


def _update(h, f) -> None:
    while chunk := f.read(BLOCK):
        h.update(chunk)
