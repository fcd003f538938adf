"""Hardening (issue 23) through the CLI's entry point and the Python facade: names never escape the store
or end in a newline, and bad files, names and output paths give a clear message and exit code 2."""

from __future__ import annotations

import gzip
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from pertstore.store import check_name

from pertstore import Store
from pertstore.cli._main import main
from pertstore.errors import InvalidInputError

IDS = ["TP53", "BRCA1", "EGFR"]


def cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    """Run ``pertstore ARGS`` through the console entry point; returns the exit code and all output."""
    monkeypatch.setattr(sys, "argv", ["pertstore", *map(str, args)])
    monkeypatch.setenv("COLUMNS", "1000")  # rich would wrap long messages
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return code, out.out + out.err


def _published(store: Store, tmp_path) -> tuple[str, dict[str, bytes]]:
    np.savez(tmp_path / "e.npz", ids=np.array(IDS), values=np.ones((3, 4), dtype=np.float32))
    card = store.import_file(tmp_path / "e.npz", source="emb")
    root = store.storage.root
    return card.version, {str(p): p.read_bytes() for p in (root / "sets").rglob("*") if p.is_file()}


def test_tags_cannot_escape_the_store(store, tmp_path, monkeypatch, capsys):
    """Item 1: ``--tag ../../../sets/<src>/<ver>/zarr`` overwrote a published set's zarr.json; a tag
    ``../../../../../x`` wrote outside the store. Now: exit 2, the set unchanged, nothing written."""
    version, before = _published(store, tmp_path)
    root = store.uri
    store.close()
    pd.DataFrame({"id": IDS, "a": [1.0, 2, 3]}).to_csv(tmp_path / "e.csv", index=False)
    for tag in (f"../../../sets/emb/{version}/zarr", "../../../../../x", "a/b", ".hidden"):
        code, out = cli(
            monkeypatch, capsys, "import", tmp_path / "e.csv", "--source", "evil", "--tag", tag, "--store", root
        )
        assert code == 2 and "tag" in out and "Traceback" not in out, out
    after = {str(p): p.read_bytes() for p in (tmp_path / "store" / "sets").rglob("*") if p.is_file()}
    assert after == before
    assert not list(tmp_path.rglob("x.json")) and not (tmp_path / "store" / "sets" / "evil").exists()
    with Store.open(root) as s:
        assert s.align(["emb"], IDS)["covered"].values.all()
        with pytest.raises(InvalidInputError):  # the Python facade refuses the same tags
            s.tag("emb", version, "../../x")
        with pytest.raises(InvalidInputError):
            s.produce("checksum", source="ck", params={"limit": 10, "dim": 2}, tags=["../../x"])
        assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("name", ["nl\n", "a\n", "..", "../x", "a/b", "", "x" * 129, "\ud800", "-x"])
def test_one_name_check_matches_the_whole_name(name):
    """Item 2: the pattern ended in ``$``, which matches before a final newline."""
    with pytest.raises(InvalidInputError):
        check_name(name, "source")


def test_every_front_end_refuses_names_ending_in_a_newline(store, tmp_path, monkeypatch, capsys):
    """Item 2: source, context and tag names (Python and CLI), and task names, are checked at the facade."""
    version, _ = _published(store, tmp_path)
    for kwargs in ({"source": "nl\n"}, {"source": "ok", "context": "c\n"}, {"source": "ok", "tags": ["t\n"]}):
        with pytest.raises(InvalidInputError):
            store.import_file(tmp_path / "e.npz", **kwargs)
    with pytest.raises(InvalidInputError):
        store.tag("emb", version, "nl\n")
    with pytest.raises(InvalidInputError):
        store.show("emb", version=version + "\n")
    assert list(store.ls().source) == ["emb"]
    root = store.uri
    store.close()
    code, out = cli(monkeypatch, capsys, "import", tmp_path / "e.npz", "--source", "nl\n", "--store", root)
    assert code == 2 and "source" in out and "Traceback" not in out


def _broken_files(tmp_path):
    good = tmp_path / "good.h5ad"
    ad.AnnData(np.ones((3, 4), dtype=np.float32), obs=pd.DataFrame(index=IDS)).write_h5ad(good)
    raw = good.read_bytes()
    flipped = bytearray(raw)
    for i in range(0, len(flipped), 97):
        flipped[i] ^= 0xFF
    files = {
        "truncated.h5ad": raw[: len(raw) // 2],
        "flipped.h5ad": bytes(flipped),
        "garbage.h5ad": b"x" * 500,
        "garbage.npz": b"PK\x03\x04" + b"x" * 100,
        "garbage.parquet": b"PAR1" + b"x" * 100 + b"PAR1",
        "gzip.parquet": gzip.compress(b"x" * 100),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    np.savez(tmp_path / "object.npz", ids=np.array(IDS), values=np.array([[1], "a", None], dtype=object))
    return [tmp_path / n for n in files] + [tmp_path / "object.npz"]


def test_cli_bad_files_names_and_outputs_exit_2(store, tmp_path, monkeypatch, capsys):
    """Item 4: broken or garbage files, a bad --source and --out into a missing folder: a one-line
    message and exit code 2, never a traceback; the store is unchanged."""
    _published(store, tmp_path)
    root = store.uri
    store.close()
    for path in _broken_files(tmp_path):
        code, out = cli(monkeypatch, capsys, "import", path, "--source", "up", "--store", root)
        assert code == 2 and path.name in out and "Traceback" not in out, (path.name, out)
    for source in ("../../x", "a b", "nl\n"):
        code, out = cli(monkeypatch, capsys, "import", tmp_path / "e.npz", "--source", source, "--store", root)
        assert code == 2 and "source" in out and "Traceback" not in out, out
    for command in (["align", "emb", "-i", "TP53"], ["export", "emb"]):
        code, out = cli(monkeypatch, capsys, *command, "--out", tmp_path / "missing" / "a.parquet", "--store", root)
        assert code == 2 and "does not exist" in out and "Traceback" not in out, out
    with Store.open(root) as s:
        assert list(s.ls().source) == ["emb"]


def test_cli_subprocess_exit_code_for_a_garbage_file(store, tmp_path):
    """Item 4 as a user runs it: ``pertstore import`` of a garbage h5ad exits 2 with one message."""
    root = store.uri
    store.close()
    (tmp_path / "bad.h5ad").write_bytes(b"not an h5ad at all" * 10)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pertstore.cli",
            "import",
            str(tmp_path / "bad.h5ad"),
            "--source",
            "up",
            "--store",
            root,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "not a readable h5ad file" in proc.stderr and "Traceback" not in proc.stderr


def test_verify_reports_only_staging_areas_holding_files(store):
    store.produce("random", source="r4", params={"dim": 4})
    assert store.storage.list_dir("staging")  # the empty folders a finished write leaves behind...
    assert store.verify()["staging"] == []  # ...are not unpublished staging areas
    store.storage.write_bytes("staging/_parts/r9/abc/000000.npz", b"x")
    store.storage.write_bytes("staging/r8/def/zarr.json", b"{}")
    assert store.verify()["staging"] == ["staging/_parts/r9/abc", "staging/r8/def"]
