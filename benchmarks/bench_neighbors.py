"""Nearest neighbours: top-20 of 2,000 query genes in a 20,000 x 1,280 set, pertstore vs a numpy brute force.

Synthetic data (say so when quoting): 20,000 float32 rows in 500 Gaussian clusters (centres N(0, 1),
rows = centre + N(0, 0.7)), 2,000 query rows drawn from the set, cosine similarity, the query's own
row left out. BLAS and torch pinned to one thread; each method runs in a fresh process of its own
(time: median of 3 runs; memory: peak resident memory above what the process held with the data
loaded). Methods:

- ``numpy``: the brute force a user writes: unit rows, ``Q @ X.T``, ``argsort`` per row, first 20.
- ``exact``: pertstore's search (:class:`pertstore.store._neighbors.ExactIndex`: torch matmul in
  64 MiB blocks + ``topk``); the one-off preparation (unit rows) is reported apart.
- ``store``: ``Store.neighbors`` on the set published in a store (ids resolved, symbols joined), warm.
- ``index``: pertstore's approximate HNSW graph (:class:`pertstore.store._neighbors.GraphIndex`,
  usearch); the one-off build (kept in the store by ``Store.neighbors(method="index")``) is reported apart.

    python benchmarks/bench_neighbors.py [--workdir benchmarks/_work/neighbors]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _memory import peak_rss_gib  # noqa: E402

N, DIM, N_QUERIES, K, REPEATS = 20_000, 1_280, 2_000, 20, 3


def make_data(work: Path) -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(500, DIM)).astype(np.float32)
    x = centres[rng.integers(0, 500, N)] + 0.7 * rng.normal(size=(N, DIM)).astype(np.float32)
    np.save(work / "x.npy", x.astype(np.float32))
    np.save(work / "queries.npy", np.sort(rng.choice(N, N_QUERIES, replace=False)))


def rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def numpy_brute(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = xn[q] @ xn.T
    s[np.arange(len(q)), q] = -np.inf
    return np.argsort(-s, axis=1)[:, :K]


def child(method: str, work: Path) -> dict:
    """Run one method ``REPEATS`` times in this process; its timings, memory and answers."""
    import torch

    torch.set_num_threads(1)
    x, q = np.load(work / "x.npy"), np.load(work / "queries.npy")
    extra: dict = {}
    if method == "numpy":

        def run():
            return numpy_brute(x, q)
    elif method == "exact":
        from pertstore.store._neighbors import ExactIndex

        t = time.perf_counter()
        index = ExactIndex(x, "cosine")
        extra["prepare_s"] = time.perf_counter() - t

        def run():
            return index.search(x[q], K, exclude=q)[0]
    elif method == "index":
        from pertstore.store._neighbors import GraphIndex

        t = time.perf_counter()
        graph = GraphIndex.build(x, "cosine", threads=1)
        extra["prepare_s"] = time.perf_counter() - t

        def run():
            return graph.search(x[q], K, exclude=q, threads=1)[0]
    elif method == "store":
        from pertstore import Store

        store = Store.open(work / "store")
        ids = json.loads((work / "ids.json").read_text())
        query_ids = [ids[i] for i in q]
        position = {e: i for i, e in enumerate(ids)}
        store.neighbors("bench", query_ids[:1], k=K)  # warm: the set decoded, the matrix prepared

        def run():
            df = store.neighbors("bench", query_ids, k=K)
            return np.array([position[e] for e in df.entity_id]).reshape(len(q), K)
    else:
        raise SystemExit(f"unknown method {method}")
    base = rss_gib()
    times, found = [], None
    for _ in range(REPEATS):
        t = time.perf_counter()
        found = run()
        times.append(time.perf_counter() - t)
    np.save(work / f"found-{method}.npy", found)
    return {
        "method": method,
        "median_s": statistics.median(times),
        "times_s": times,
        "extra_peak_gib": max(0.0, peak_rss_gib() - base),
        **extra,
    }


def build_store(work: Path) -> None:
    from pertstore.store import Recipe

    from pertstore import Store

    store = Store.init(work / "store")
    ids = store.catalog.query(
        f"SELECT entity_id FROM entities WHERE kind = 'gene' AND entity_id LIKE 'ENSG%' ORDER BY entity_id LIMIT {N}"
    ).entity_id.tolist()
    store.write_set(
        Recipe(source="bench", producer="import", kind="gene", params={"synthetic": True}), ids, np.load(work / "x.npy")
    )
    (work / "ids.json").write_text(json.dumps(ids))
    store.close()


def recall(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(found, truth)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path(__file__).parent / "_work" / "neighbors")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = args.workdir
    if args.child:
        print(json.dumps(child(args.child, work)))
        return
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "x.npy").exists():
        make_data(work)
    if not (work / "ids.json").exists():
        build_store(work)
    rows = []
    for method in ("numpy", "exact", "index", "store"):
        out = subprocess.run(
            [sys.executable, __file__, "--workdir", str(work), "--child", method],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    truth = np.load(work / "found-numpy.npy")
    base = rows[0]["median_s"]
    print(
        f"top-{K} of {N_QUERIES:,} queries in a synthetic {N:,} x {DIM:,} set (cosine), one thread, median of {REPEATS}"
    )
    print(f"{'method':<8} {'time s':>8} {'vs numpy':>9} {'recall@10':>10} {'extra GiB':>10}")
    for r in rows:
        found = np.load(work / f"found-{r['method']}.npy")
        note = f"  (prepare {r['prepare_s']:.2f} s, once per set)" if "prepare_s" in r else ""
        print(
            f"{r['method']:<8} {r['median_s']:>8.2f} {base / r['median_s']:>8.1f}x {recall(found, truth):>10.3f} "
            f"{r['extra_peak_gib']:>10.2f}{note}"
        )


if __name__ == "__main__":
    main()
