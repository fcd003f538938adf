"""Hardening (issue #23) of the process itself: background work never crashes the interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_a_store_left_open_exits_cleanly_with_background_work_running(store):
    """The README's pattern without ``with``: two aligns start the alias index in a thread; exit must be 0.

    Before the fix most runs ended in "terminate called after throwing an instance of ''" (exit 134):
    the interpreter stopped the daemon thread inside DuckDB.
    """
    store.produce("random", source="a", params={"dim": 8})
    root = store.uri
    store.close()
    code = f"from pertstore import Store; s = Store.open({str(root)!r}); s.align(['a'], ['TP53']); s.align(['a'], ['TP53'])"
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-500:]
        assert "terminate called" not in done.stderr


def test_a_malformed_tag_file_is_reported_and_skipped_by_rebuild_and_flagged_by_verify(store, tmp_path):
    from typer.testing import CliRunner

    from pertstore.cli import app

    store.produce("random", source="a", params={"dim": 8})
    store.produce("random", source="b", params={"dim": 4})
    bad = tmp_path / "store" / "tags" / "b" / "_global" / "broken.json"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text('{"version": ')                                 # a torn write or a hand edit
    assert any("broken.json" in p for p in store.verify()["catalog"])
    counts = store.rebuild_catalog()
    assert counts["sets"] == 2 and counts["tags"] == 2               # both sets' latest tags are back
    assert len(counts["problems"]) == 1 and "broken.json" in counts["problems"][0]
    assert set(store.ls().source) == {"a", "b"}
    root = store.uri
    store.close()
    result = CliRunner().invoke(app, ["catalog", "rebuild", "--store", str(root)])
    assert result.exit_code == 0 and "skipped" in result.output and "broken.json" in result.output


def test_a_flipped_bit_in_the_entity_ids_is_caught_on_read_never_nan(store, gene_ids):
    import numpy as np
    import pytest

    from pertstore.errors import CorruptedSetError

    card = store.produce("random", source="a", params={"dim": 8})
    ids = gene_ids[:50]
    expected = store.align(["a"], ids)["a"].values
    store.close()
    from pertstore import Store

    chunk = Path(str(store.uri)) / "sets" / "a" / card.version / "entity" / "c" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    chunk.write_bytes(bytes(raw))
    with Store.open(store.uri) as s:
        for _ in range(3):   # cold, then warm (ids read in the background): right values or an error, never NaN
            got = s.align(["a"], ids)["a"].values
            np.testing.assert_array_equal(got, expected)
        with pytest.raises(CorruptedSetError, match="CRC32C"):
            s.open_set("a").ids
        assert any("CRC32C" in p for r in s.verify()["sets"] for p in r.problems)
        counts = s.rebuild_catalog()
        assert counts["sets"] == 0 and any("CRC32C" in p for p in counts["problems"])
