"""The one file hasher gives the digests the three hashers it replaced gave, so stored recipe and task
fingerprints do not change."""

from __future__ import annotations

import hashlib
from pathlib import Path

import fsspec
from pertstore.store import file_digest, file_sha256, file_stamp

GOLDEN = "sha256:498488dd730e1068399b3ab3931f234c0ff197b161faadd9eb4c9255d9f71b78"
"""SHA-256 of ``b"pertstore\\n"``, as `sha256sum` prints it: recipes stored today pin this."""


def _old_recipe_hash(path: str) -> str:
    """store/_recipe.py's ``file_sha256`` before the hashers were merged (recipe file inputs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def _old_task_hash(path: Path) -> str:
    """consumers/tasks/_ingest.py's ``file_sha256`` before (task inputs: a file or an AnnData-zarr folder)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def test_file_digests_are_unchanged(tmp_path):
    small = tmp_path / "small.txt"
    small.write_bytes(b"pertstore\n")
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 40_000)  # 10 MB: several read blocks
    assert file_sha256(small) == GOLDEN
    for f in (small, big):
        assert file_sha256(str(f)) == _old_recipe_hash(str(f))
        assert file_digest(f) == _old_task_hash(f) == file_sha256(f).removeprefix("sha256:")
    folder = tmp_path / "cells.zarr"
    (folder / "X" / "0").mkdir(parents=True)
    (folder / "zarr.json").write_text('{"a": 1}')
    (folder / "X" / "0" / "c.0").write_bytes(b"\x00\x01" * 1000)
    (folder / "obs.json").write_text("[]")
    assert file_digest(folder) == _old_task_hash(folder)
    assert file_digest(folder) != file_digest(folder / "zarr.json")


def test_urls_are_hashed_like_local_files(tmp_path):
    """producers/_spec.py hashed fsspec URLs (``s3://``) itself; the same bytes give the same pin."""
    local = tmp_path / "net.tsv"
    local.write_bytes(b"A\tB\t0.9\n" * 1000)
    with fsspec.open("memory://pertstore-test/net.tsv", "wb") as f:
        f.write(local.read_bytes())
    assert file_sha256("memory://pertstore-test/net.tsv") == file_sha256(local) == _old_recipe_hash(str(local))


def test_file_stamps_change_with_the_file_not_its_name_alone(tmp_path):
    f = tmp_path / "genome.fa"
    f.write_text(">chr1\nACGT\n")
    st = f.stat()
    assert file_stamp(f) == hashlib.sha256(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]
    first = file_stamp(f)
    f.write_text(">chr1\nACGTACGT\n")
    assert file_stamp(f) != first
