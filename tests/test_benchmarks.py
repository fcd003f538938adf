"""``make bench``'s driver: rows gathered from the scripts into one table and a CSV (the benchmarks themselves
are slow; the L1000 row, skipped without the data directory, stands in for them here)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_run_all_writes_one_table_and_csv_with_date_and_machine(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PERTSTORE_DATA_DIR"}
    out = tmp_path / "bench.csv"
    done = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--only", "l1000", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "build the 3 L1000 tasks" in done.stdout and "skipped: PERTSTORE_DATA_DIR unset" in done.stdout
    assert "0 of 1 rows at target" in done.stdout
    (row,) = list(csv.DictReader(out.open()))
    assert row["mode"] == "quick" and row["date"].endswith("UTC") and "cores" in row["machine"]
    assert row["target"] == "< 30 s together" and row["met"] == "False"


def test_speed_row_checks_ratio_and_memory():
    sys.path.insert(0, str(BENCH))
    try:
        from _rows import speed_row
    finally:
        sys.path.remove(str(BENCH))
    assert speed_row("w", "r", 10.0, 2.0, min_ratio=5.0, ref_mb=100.0, ours_mb=25.0, max_mem=0.25)["met"]
    assert not speed_row("w", "r", 10.0, 2.0, min_ratio=5.0, ref_mb=100.0, ours_mb=26.0, max_mem=0.25)["met"]
    slow = speed_row("w", "r", 9.0, 2.0, min_ratio=5.0)
    assert not slow["met"] and slow["ratio"] == 4.5 and slow["target"] == ">= 5x"
