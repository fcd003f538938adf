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
    bad.write_text('{"version": ')  # a torn write or a hand edit
    assert any("broken.json" in p for p in store.verify()["catalog"])
    counts = store.rebuild_catalog()
    assert counts["sets"] == 2 and counts["tags"] == 2  # both sets' latest tags are back
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
        for _ in range(3):  # cold, then warm (ids read in the background): right values or an error, never NaN
            got = s.align(["a"], ids)["a"].values
            np.testing.assert_array_equal(got, expected)
        with pytest.raises(CorruptedSetError, match="CRC32C"):
            s.open_set("a").ids
        assert any("CRC32C" in p for r in s.verify()["sets"] for p in r.problems)
        counts = s.rebuild_catalog()
        assert counts["sets"] == 0 and any("CRC32C" in p for p in counts["problems"])


def test_resolver_answers_are_bounded_in_bytes_and_long_ids_are_not_kept():
    from pertstore.catalog._registry import ANSWER_MAX_CHARS, AliasIndex, probe_keys

    index = AliasIndex([(key, 0, "ENSG00000141510") for key in probe_keys(["TP53"]).key], answer_bytes=200_000)
    for start in range(0, 300_000, 20_000):  # 300k distinct ids of ~380 B, as the attack sent them
        res = index.resolve([f"{i:0380d}" for i in range(start, start + 20_000)] + ["TP53"])
        assert res.ids[-1] == "ENSG00000141510" and res.unresolved[0].startswith("0")
        assert index.answer_nbytes <= index.answer_bytes
    assert len(index._answers) < 1_000  # least recently used answers dropped
    index.resolve(["x" * (ANSWER_MAX_CHARS + 1)])
    assert "x" * (ANSWER_MAX_CHARS + 1) not in index._answers


def test_caches_stay_within_the_store_budget(store, gene_ids, monkeypatch):
    """Decoded rows, ids, row maps and the alias index are all counted in ``PERTSTORE_CACHE_BYTES``."""
    import numpy as np

    from pertstore import Store

    for name in "abcd":
        store.produce("random", source=name, params={"dim": 64})
    root = store.uri
    expected = {name: store.align([name], gene_ids)[name].values for name in "abcd"}
    store.close()
    budget = 3 * 2**20  # far below the human genes' alias index
    monkeypatch.setenv("PERTSTORE_CACHE_BYTES", str(budget))
    with Store.open(root) as s:
        for _ in range(4):
            for name in "abcd":
                np.testing.assert_array_equal(s.align([name], gene_ids)[name].values, expected[name])
            s.catalog.settle()
            s.cache.settle()
        assert s.catalog.cache_nbytes == 0  # the index (about 65 MB) is not kept
        assert s.catalog._alias_indexes["gene"][1] is None  # ... and not built again
        held = s.cache.nbytes - max(o.nbytes for o in s.cache._sets.values())  # the last set read is kept
        assert held <= budget
