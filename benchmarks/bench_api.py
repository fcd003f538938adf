"""Bulk aligned fetch over HTTP: Arrow vs JSON vs the in-process Python call, side by side in one run.

Synthetic data (random float32 values from the ``random`` producer) in a fresh store: 10 sets over
the ~20,000 protein-coding genes, dims 64 to 1,024. 2,000 gene ids are fetched from all 10 sets
(a 2,000 x 3,904 answer) by ``pertstore serve`` on loopback (one process, BLAS pinned to one
thread), as Arrow IPC decoded into numpy (``pertstore.client.Client.align``) and as JSON parsed by
``httpx``; the in-process ``Store.align`` is the baseline. Warm server, medians of several repeats.

    python benchmarks/bench_api.py [--repeats 7] [--workdir benchmarks/_work_api]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from _rows import row, write_rows  # noqa: E402
from servers import api_server  # noqa: E402

from pertstore import Store  # noqa: E402
from pertstore.client import Client  # noqa: E402

DIMS = [64, 128, 128, 256, 256, 384, 512, 512, 640, 1024]


def build(root: Path) -> list[str]:
    """The store with 10 random sets; returns 2,000 protein-coding gene ids."""
    with Store.init(root) as store:
        if store.catalog.n_entities("gene") == 0:
            store.register_genes()
        for i, dim in enumerate(DIMS):
            store.produce(
                "random", source=f"set{i:02d}", params={"dim": dim, "seed": i, "kind_of_ids": "protein-coding"}
            )
        ids = store.get("set00").entity.values
    return [str(i) for i in np.random.default_rng(0).choice(ids, 2000, replace=False)]


def timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "_work_api")
    parser.add_argument("--rows", default=None, help="append the measurements as JSON rows to this file")
    args = parser.parse_args()
    root = args.workdir / "store"
    if not (root / "catalog.duckdb").exists():
        shutil.rmtree(args.workdir, ignore_errors=True)
        ids = build(root)
    else:
        with Store.open(root) as s:
            all_ids = s.get("set00").entity.values
        ids = [str(i) for i in np.random.default_rng(0).choice(all_ids, 2000, replace=False)]
    sources = [f"set{i:02d}" for i in range(len(DIMS))]

    with Store.open(root, read_only=True, catalog=args.workdir / "inprocess.duckdb") as store:
        t_local, ds = timed(lambda: store.align(sources, ids), args.repeats)
        expected = np.hstack([ds[s].values for s in sources])

    with api_server(str(root)) as url, Client(url) as client, httpx.Client(base_url=url, timeout=300) as http:
        body = {"sources": sources, "ids": ids}
        t_arrow, got = timed(lambda: client.align(sources, ids), args.repeats)
        t_json, doc = timed(lambda: http.post("/v1/align", json=body).json(), args.repeats)
        t_npy, npy = timed(
            lambda: http.post("/v1/align", json=body, headers={"Accept": "application/x-npy"}).content, args.repeats
        )
    np.testing.assert_array_equal(np.hstack([got[s].values for s in sources]), expected)
    json_block = np.hstack([np.asarray(doc["embeddings"][s], dtype=np.float32) for s in sources])
    np.testing.assert_array_equal(json_block, expected)

    mb = expected.nbytes / 2**20
    print(
        f"answer: {len(ids):,} ids x {expected.shape[1]:,} dims from {len(sources)} sets = {mb:.1f} MiB float32; "
        f"median of {args.repeats}"
    )
    print(f"in-process Store.align : {t_local * 1e3:8.1f} ms")
    print(
        f"HTTP Arrow (client)    : {t_arrow * 1e3:8.1f} ms  ({mb / t_arrow:7.1f} MiB/s)  {t_arrow / t_local:5.2f}x in-process"
    )
    print(f"HTTP .npy (raw bytes)  : {t_npy * 1e3:8.1f} ms  ({mb / t_npy:7.1f} MiB/s)")
    print(f"HTTP JSON (parsed)     : {t_json * 1e3:8.1f} ms  ({mb / t_json:7.1f} MiB/s)")
    print(
        f"Arrow throughput = {t_json / t_arrow:.1f}x JSON (target >= 10x); "
        f"Arrow time = {t_arrow / t_local:.2f}x in-process (target <= 3x)"
    )
    size = f"{len(ids):,} ids x {len(sources)} sets ({mb:.1f} MiB)"
    write_rows(
        args.rows,
        [
            row(
                f"HTTP aligned fetch, Arrow vs JSON, {size}",
                "JSON over HTTP",
                t_json,
                t_arrow,
                target=">= 10x",
                met=t_json / t_arrow >= 10,
            ),
            row(
                f"HTTP aligned fetch, Arrow vs in-process, {size}",
                "in-process Store.align",
                t_local,
                t_arrow,
                ratio=t_arrow / t_local,
                target="<= 3x in-process time",
                met=t_arrow / t_local <= 3,
                note="ratio = Arrow time / in-process time",
            ),
        ],
    )


if __name__ == "__main__":
    main()
