"""Job throughput with 1 vs 2 Dask workers, and the fixed cost of a job.

A CPU-bound chunked producer (the built-in ``checksum`` producer with extra hashing rounds) runs
over 20,000 registered genes on a ``LocalCluster`` started beforehand, so cluster start-up is not
counted. The overhead figure is a job of the same shape whose chunks do no work: everything it
spends (planning, scheduling, part files, assembly, publication, catalog) is overhead, reported
as a share of a 60 s job. Medians of ``--repeats`` runs; BLAS pinned to one thread.

    python benchmarks/bench_jobs.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

from pertstore import Store  # noqa: E402
from pertstore._dask import dask_client  # noqa: E402


def _recipes(n: int, work: int, tag: str) -> str:
    return f"""
recipes:
  - producer: checksum
    source: "bench-{tag}"
    params: {{limit: {n}, work: {work}, dim: 16}}
"""


def _job_seconds(template: Path, workdir: Path, recipes: str, scheduler: str) -> float:
    root = workdir / f"store-{time.monotonic_ns()}"
    shutil.copytree(template, root)
    with Store.open(root) as store:
        t0 = time.perf_counter()
        state = store.jobs.submit(recipes, scheduler=scheduler, max_failed_fraction=0.0)
        seconds = time.perf_counter() - t0
        assert state.state == "done", state
    shutil.rmtree(root)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entities", type=int, default=20_000)
    ap.add_argument("--work", type=int, default=400, help="hashing rounds per entity (CPU cost)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="5,000 entities, 2 repeats")
    args = ap.parse_args()
    if args.quick:
        args.entities, args.repeats = 5_000, 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        template = work / "template"
        with Store.init(template) as s:
            s.register_genes()
        timings: dict[str, list[float]] = {"1 worker": [], "2 workers": [], "empty chunks": []}
        for workers in (1, 2):
            with dask_client(n_workers=workers) as client:
                label = f"{workers} worker" + ("s" if workers > 1 else "")
                for r in range(args.repeats):
                    timings[label].append(
                        _job_seconds(
                            template,
                            work,
                            _recipes(args.entities, args.work, f"{workers}-{r}"),
                            client.scheduler.address,
                        )
                    )
                if workers == 2:
                    for r in range(args.repeats):
                        timings["empty chunks"].append(
                            _job_seconds(template, work, _recipes(args.entities, 0, f"e-{r}"), client.scheduler.address)
                        )
    med = {k: statistics.median(v) for k, v in timings.items()}
    n = args.entities
    print(f"checksum producer, {n} entities, {args.work} hashing rounds each; medians of {args.repeats} runs")
    for label in ("1 worker", "2 workers"):
        print(f"  {label:<12} {med[label]:7.2f} s   {n / med[label]:9.0f} entities/s")
    print(f"  speed-up with 2 workers: {med['1 worker'] / med['2 workers']:.2f}x (target >= 1.7x)")
    print(
        f"  job of empty chunks: {med['empty chunks']:.2f} s = {100 * med['empty chunks'] / 60:.1f}% of a 60 s job "
        "(target < 5%)"
    )


if __name__ == "__main__":
    main()
