"""Rows of the benchmark table: each script writes its measurements with :func:`write_rows` (``--rows FILE``),
``benchmarks/run_all.py`` (``make bench``) gathers them into one table."""

from __future__ import annotations

import json
from pathlib import Path

FIELDS = ("work", "reference", "ref_s", "ours_s", "ratio", "mem_ratio", "target", "met", "note")


def row(
    work: str,
    reference: str,
    ref_s: float | None,
    ours_s: float,
    *,
    target: str,
    met: bool,
    ratio: float | None = None,
    mem_ratio: float | None = None,
    note: str = "",
) -> dict:
    """One row; ``ratio`` defaults to ``ref_s / ours_s`` (how many times faster ours is)."""
    if ratio is None and ref_s is not None:
        ratio = ref_s / ours_s
    return {
        "work": work,
        "reference": reference,
        "ref_s": ref_s,
        "ours_s": ours_s,
        "ratio": ratio,
        "mem_ratio": mem_ratio,
        "target": target,
        "met": bool(met),
        "note": note,
    }


def speed_row(
    work: str,
    reference: str,
    ref_s: float,
    ours_s: float,
    *,
    min_ratio: float,
    ref_mb: float | None = None,
    ours_mb: float | None = None,
    max_mem: float | None = None,
    note: str = "",
) -> dict:
    """A speed-up row: met when ``ref_s / ours_s >= min_ratio`` (and the memory ratio ``<= max_mem`` if given)."""
    mem = ours_mb / ref_mb if ref_mb and ours_mb is not None else None
    ok = ref_s / ours_s >= min_ratio and (max_mem is None or (mem is not None and mem <= max_mem))
    target = f">= {min_ratio:g}x" + (f", <= {max_mem:g} memory" if max_mem is not None else "")
    return row(work, reference, ref_s, ours_s, mem_ratio=mem, target=target, met=ok, note=note)


def write_rows(path: str | Path | None, rows: list[dict]) -> None:
    """Append ``rows`` to ``path`` as JSON lines (nothing when ``path`` is None)."""
    if path is None:
        return
    with open(path, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def read_rows(path: str | Path) -> list[dict]:
    """The rows a script wrote with :func:`write_rows`."""
    p = Path(path)
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []
