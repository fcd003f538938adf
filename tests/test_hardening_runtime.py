"""Hardening (issue #23) of the process itself: background work never crashes the interpreter."""

from __future__ import annotations

import subprocess
import sys


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
