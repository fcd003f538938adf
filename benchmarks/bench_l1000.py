"""Building the demo's three L1000 tasks from the data directory, timed (issue: under 30 s together).

The tasks of ``pertstore._demo.DEMO_TASKS`` built from ``PERTSTORE_DATA_DIR/perturb/``: the overexpression
DEG task from the table of significant genes (``store.tasks.import_deg_table``), the shRNA knockdown LFC
task (``l1000-knockdown`` preset) and the kinase-inhibitor dose-response LFC task (``l1000-dose`` preset,
each dose a context), with the demo's options and default experimental-error settings. Each repeat runs in
a fresh process (BLAS 1 thread) on a fresh store whose genes and molecules are registered first, untimed,
as the demo does, and the task modules imported; the three builds are timed together; median of
``--repeats``. No reference tool builds
these tasks: the row's target is the time itself. Skipped with a message when ``PERTSTORE_DATA_DIR`` is
unset.

    PERTSTORE_DATA_DIR=... python benchmarks/bench_l1000.py [--repeats 3] [--rows FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _memory import peak_rss_gib  # benchmarks/ is on sys.path when a benchmark runs
from _rows import row, write_rows

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

TARGET_S = 30.0
L1000 = ("lincs-overexpression-deg", "cmap-knockdown-lfc", "ljp-kinase-dose-lfc")


def worker(data_dir: Path, root: Path) -> dict:
    """Register genes and molecules (untimed), then build the three tasks as the demo does (timed)."""
    from pertstore.catalog import read_repurposing_hub, read_sciplex3

    from pertstore import Store
    from pertstore._demo import DEMO_TASKS

    store = Store.init(root)
    store.register_genes()
    store.register_molecules(read_sciplex3(data_dir / "molecules" / "sciplex3_drugs.tsv"))
    store.register_molecules(
        read_repurposing_hub(data_dir / "molecules" / "repurposing_hub.tsv.gz"), alias_cols=["broad_id", "compound_id"]
    )
    store.tasks  # noqa: B018  (imports the task modules out of the timed region, as the other benchmarks do)
    base = peak_rss_gib()
    each, sizes = {}, {}
    for name, rel, kind, options in DEMO_TASKS:
        if name not in L1000:
            continue
        t0 = time.perf_counter()
        if kind == "deg-table":
            task, _ = store.tasks.import_deg_table(data_dir / rel, name=name, **options)
        else:
            task, _ = store.tasks.build(data_dir / rel, name=name, kind=kind, **options)
        each[name] = time.perf_counter() - t0
        sizes[name] = [len(task.pert_ids), len(task.gene_ids)]
    store.close()
    return {
        "seconds": sum(each.values()),
        "each": each,
        "sizes": sizes,
        "peak_gib": peak_rss_gib(),
        "extra_gib": peak_rss_gib() - base,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", default=None, help="append the measurement as a JSON row to this file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    from pertstore import get_settings

    data = get_settings().data_dir
    if args.worker:
        print(json.dumps(worker(Path(data), Path(args.worker))))
        return
    if not data or not (Path(data) / "perturb").is_dir():
        print("PERTSTORE_DATA_DIR is not set (or has no perturb/): skipping the L1000 task-building benchmark")
        write_rows(
            args.rows,
            [
                row(
                    "build the 3 L1000 tasks (knockdown, overexpression DEG, dose-response)",
                    "",
                    None,
                    float("nan"),
                    target=f"< {TARGET_S:g} s together",
                    met=False,
                    note="skipped: PERTSTORE_DATA_DIR unset",
                )
            ],
        )
        return
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            done = subprocess.run(
                [sys.executable, __file__, "--worker", str(Path(tmp) / "store")],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode:
                raise SystemExit(f"building the L1000 tasks failed:\n{done.stderr[-3000:]}")
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    seconds = statistics.median(r["seconds"] for r in runs)
    each = {n: statistics.median(r["each"][n] for r in runs) for n in L1000}
    peak = max(r["peak_gib"] for r in runs)
    sizes = runs[0]["sizes"]
    print(
        f"L1000 tasks built in {seconds:.1f} s together (median of {args.repeats}; target < {TARGET_S:g} s), "
        f"peak RSS {peak:.2f} GiB"
    )
    for n in L1000:
        print(f"  {n:<26} {each[n]:6.1f} s  ({sizes[n][0]:,} perturbations x {sizes[n][1]:,} genes)")
    note = ", ".join(f"{n.split('-')[1]} {each[n]:.1f} s" for n in L1000) + f"; peak RSS {peak:.2f} GiB"
    write_rows(
        args.rows,
        [
            row(
                "build the 3 L1000 tasks (knockdown, overexpression DEG, dose-response)",
                "",
                None,
                seconds,
                target=f"< {TARGET_S:g} s together",
                met=seconds < TARGET_S,
                note=note,
            )
        ],
    )


if __name__ == "__main__":
    main()
