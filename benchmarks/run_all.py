"""Every benchmark in one run, one table: ``make bench`` (quick sizes) or ``make bench FULL=1`` (the documented ones).

Each benchmark script runs in its own process with ``--rows FILE`` and writes its measurements as rows
(:mod:`_rows`); this driver prints them as one table (work, reference, reference s, ours s, ratio,
memory ratio, target, met) and writes it as CSV with the date, mode and machine
(``benchmarks/results/bench.csv``, or ``bench-full.csv``). BLAS is pinned to one thread in every
process; each script measures each side in a fresh process where it says so, medians of repeats.

    python benchmarks/run_all.py [--full] [--only tasks eval align deg api l1000 sciplex] [--out CSV]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _rows import FIELDS, read_rows

HERE = Path(__file__).resolve().parent
THREADS = {
    k: "1"
    for k in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMBA_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
    )
}

#: name -> (script, quick arguments, full arguments); full = the sizes docs/ quote.
BENCHES: dict[str, tuple[str, list[str], list[str]]] = {
    "tasks": (
        "bench_tasks.py",
        ["--scale", "0.25", "--repeats", "3", "--only", "lfc", "backed", "deg"],
        ["--scale", "0.5", "--repeats", "3", "--only", "lfc", "backed", "deg"],
    ),
    # experimental error with 20 trials (one outer draw x the preset's 20 inner): its Spearman ranks of
    # [trials, genes] per perturbation cost the same at any cell count and dominate small files
    "sciplex": (
        "bench_tasks.py",
        ["--cells", "50000", "--scale", "0.25", "--repeats", "1", "--trials", "20", "--only", "sciplex"],
        ["--cells", "1000000", "--scale", "1", "--repeats", "1", "--trials", "20", "--only", "sciplex"],
    ),
    "l1000": ("bench_l1000.py", ["--repeats", "1"], ["--repeats", "3"]),
    "eval": ("bench_eval.py", ["--quick"], []),
    "deg": ("bench_deg.py", ["--genes", "400", "--repeats", "1"], ["--genes", "400", "--repeats", "3"]),
    "align": ("bench_align.py", ["--n-sets", "30", "--repeats", "2"], ["--n-sets", "30", "--repeats", "5"]),
    "api": ("bench_api.py", ["--repeats", "3"], ["--repeats", "7"]),
}


def machine() -> str:
    """CPU model, cores and memory of this machine, in words."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    mem = next(
        (
            int(line.split()[1]) / 2**20
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0.0,
    )
    return f"{platform.node()}: {os.cpu_count()} cores {model}, {mem:.0f} GiB"


def fmt(value: object, spec: str) -> str:
    return "-" if value is None or value == "" else format(value, spec)


def ratio(value: float | None) -> str:
    """``12.3x`` (two decimals below 10, so that a row near its target reads as the check does)."""
    return "-" if value is None else f"{value:.2f}x" if value < 10 else f"{value:.1f}x"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="the documented sizes (slow: the 1M-cell task, 6 GB of disk)")
    ap.add_argument("--only", nargs="+", choices=list(BENCHES), default=list(BENCHES))
    ap.add_argument("--out", type=Path, default=None, help="CSV (default benchmarks/results/bench[-full].csv)")
    args = ap.parse_args()
    out = args.out or HERE / "results" / ("bench-full.csv" if args.full else "bench.csv")
    mode = "full" if args.full else "quick"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows, failed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            script, quick, full = BENCHES[name]
            path = Path(tmp) / f"{name}.jsonl"
            cmd = [sys.executable, str(HERE / script), *(full if args.full else quick), "--rows", str(path)]
            print(f"[{name}] {' '.join(cmd[1:-2])}", flush=True)
            t0 = time.perf_counter()
            done = subprocess.run(
                cmd, cwd=HERE, env={**os.environ, **THREADS}, capture_output=True, text=True, check=False
            )
            status = f", exit {done.returncode}" if done.returncode else ""
            print(f"[{name}] {time.perf_counter() - t0:.0f} s{status}", flush=True)
            got = read_rows(path)
            if done.returncode or not got:
                why = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no rows"]
                failed.append(name)
                got = [{"work": f"{name}: failed ({why[0][:80]})", "target": "", "met": False}]
            rows += got
    print(f"\n{stamp}, {mode} mode, {machine()}; BLAS 1 thread")
    head = f"{'work':<68} {'reference':<38} {'ref s':>8} {'ours s':>8} {'ratio':>7} {'mem':>6} {'target':<26} met"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(
            f"{r['work'][:68]:<68} {(r.get('reference') or '-')[:38]:<38} {fmt(r.get('ref_s'), '8.2f'):>8} "
            f"{fmt(r.get('ours_s'), '8.2f'):>8} {ratio(r.get('ratio')):>7} "
            f"{fmt(r.get('mem_ratio'), '6.2f'):>6} {r.get('target', ''):<26} {'yes' if r.get('met') else 'NO'}"
            + (f"  ({r['note']})" if r.get("note") else "")
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["date", "mode", "machine", *FIELDS])
        writer.writeheader()
        for r in rows:
            writer.writerow({"date": stamp, "mode": mode, "machine": machine(), **{k: r.get(k, "") for k in FIELDS}})
    print(f"\n{sum(bool(r.get('met')) for r in rows)} of {len(rows)} rows at target; written to {out}")
    if failed:
        sys.exit(f"benchmarks that failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
