"""Fingerprint throughput: the ``fingerprint`` producer as a job on 1 and 2 Dask workers vs a plain RDKit loop.

All Drug Repurposing Hub structures (``$PERTSTORE_DATA_DIR/molecules/repurposing_hub.tsv.gz``,
registered once, time not counted) get the paper's seven fingerprints (maccs, rdkit, ecfp2, ecfp4,
secfp, avalon, erg). The reference is one Python process looping over the molecules and calling
RDKit directly with the same standardisation. The job runs the seven recipes on a ``LocalCluster``
started beforehand (start-up not counted), including planning, part files, assembly, publication
and the catalog. The loop and the two jobs take turns, repeat by repeat, so a noisy neighbour
hits all three alike. Bits are checked identical. Medians of ``--repeats`` runs; BLAS pinned to
one thread.

    python benchmarks/bench_fingerprints.py [--repeats 3] [--limit N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from pertstore.catalog import read_repurposing_hub  # noqa: E402
from pertstore.producers.chem.fingerprints import VARIANTS, FingerprintParams, fingerprint, standardise  # noqa: E402

from pertstore import Store  # noqa: E402
from pertstore._config import get_settings  # noqa: E402
from pertstore._dask import dask_client  # noqa: E402

RECIPES = "recipes:\n" + "".join(
    f"  - {{producer: fingerprint, source: fp-{v}, params: {{variant: {v}}}}}\n" for v in VARIANTS
)


def reference_loop(smiles: list[str]) -> dict[str, np.ndarray]:
    """Plain RDKit in one process: standardise each molecule once, then every fingerprint."""
    params = {v: FingerprintParams(variant=v) for v in VARIANTS}
    rows = {v: [] for v in VARIANTS}
    for s in smiles:
        mol = standardise(s)
        if mol is None or mol.GetNumAtoms() == 0:
            continue
        for v in VARIANTS:
            rows[v].append(fingerprint(mol, params[v]))
    return {v: np.array(r) for v, r in rows.items()}


def timed_reference(smiles: list[str]) -> tuple[float, dict[str, np.ndarray]]:
    """:func:`reference_loop` and its time, run in a child process of its own (see ``main``)."""
    t0 = time.perf_counter()
    out = reference_loop(smiles)
    return time.perf_counter() - t0, out


def job_seconds(template: Path, work: Path, scheduler: str) -> tuple[float, Path]:
    root = work / f"store-{time.monotonic_ns()}"
    shutil.copytree(template, root)
    with Store.open(root) as store:
        t0 = time.perf_counter()
        state = store.jobs.submit(RECIPES, scheduler=scheduler, max_failed_fraction=0.05)
        seconds = time.perf_counter() - t0
        assert state.state == "done", state
    return seconds, root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--limit", type=int, default=None, help="only the first N structures")
    args = ap.parse_args()
    data = Path(get_settings().data_dir or "../shared/data")
    hub = read_repurposing_hub(data / "molecules" / "repurposing_hub.tsv.gz")
    if args.limit:
        hub = hub.head(args.limit)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        template = work / "template"
        with Store.init(template) as s:
            s.register_molecules(hub)
            registry = s.catalog.query(
                "SELECT entity_id, description AS smiles FROM entities WHERE kind = 'molecule' ORDER BY entity_id"
            )
        smiles = registry.smiles.tolist()
        ref_times: list[float] = []
        timings: dict[int, list[float]] = {1: [], 2: []}
        with ExitStack() as stack:
            # both clusters up front (idle workers cost nothing): runs interleave
            clients = {workers: stack.enter_context(dask_client(n_workers=workers)) for workers in (1, 2)}
            # the loop runs in a fresh process: this one hosts the schedulers, whose threads share its GIL
            loop = stack.enter_context(ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")))
            for _ in range(args.repeats):
                seconds, reference = loop.submit(timed_reference, smiles).result()
                ref_times.append(seconds)
                for workers, client in clients.items():
                    client.restart()  # no molecule or registry cached by an earlier run
                    seconds, root = job_seconds(template, work, client.scheduler.address)
                    timings[workers].append(seconds)
                    with Store.open(root) as store:
                        for v in VARIANTS:
                            got = store.get(f"fp-{v}")
                            rows = pd.Index(got.entity.values).get_indexer(registry.entity_id)
                            np.testing.assert_array_equal(got.values[rows[rows >= 0]], reference[v])
                    shutil.rmtree(root)
    ref = statistics.median(ref_times)
    one, two = statistics.median(timings[1]), statistics.median(timings[2])
    n = len(smiles)
    print(f"{n:,} Repurposing Hub molecules x {len(VARIANTS)} fingerprints; medians of {args.repeats}; bits identical")
    print(f"  plain RDKit loop, 1 process : {ref:7.2f} s  {n / ref:8.0f} molecules/s")
    print(
        f"  job, 1 Dask worker          : {one:7.2f} s  {n / one:8.0f} molecules/s  {ref / one:5.2f}x the loop (target >= 1x)"
    )
    print(
        f"  job, 2 Dask workers         : {two:7.2f} s  {n / two:8.0f} molecules/s  {ref / two:5.2f}x the loop (target >= 1.7x)"
    )


if __name__ == "__main__":
    main()
