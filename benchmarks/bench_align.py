"""Aligned fetch: pertstore vs the reference practice (whole h5ad per embedding) and numpy in memory.

Synthetic data (random float32 values, random gene subsets): 30 sets of about 20,000 genes with
dims from 128 to 2,304, each written once as an uncompressed h5ad (the paper's published format)
and once into a pertstore store. Timings are side by side in one run, BLAS pinned to one thread,
medians of several repeats. Cold runs happen in a fresh Python process per repeat (after an
attempt to drop the OS page cache, which needs privileges containers often lack).

    python benchmarks/bench_align.py [--n-sets 30] [--repeats 5] [--workdir benchmarks/_work]
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
    os.environ.setdefault(var, "1")

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _rows import row, write_rows  # noqa: E402
from pertstore.store import Recipe  # noqa: E402

from pertstore import Store  # noqa: E402

COLD = r"""
import json, sys, time
t0 = time.perf_counter()
from pertstore import Store
t1 = time.perf_counter()
store = Store.open(sys.argv[1])
ids = json.loads(open(sys.argv[2]).read())
ds = store.align(json.loads(sys.argv[3]), ids)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "fetch_s": t2 - t1, "checksum": float(sum(float(ds[s].values[0, 0]) for s in ds.coords["source"].values))}))
"""

REFERENCE = r"""
import json, sys, time
import anndata as ad
t0 = time.perf_counter()
ids = json.loads(open(sys.argv[2]).read())
for path in json.loads(sys.argv[1]):
    a = ad.read_h5ad(path)
    rows = a.obs_names.get_indexer(ids)
    x = a.X[rows[rows >= 0]]
print(json.dumps({"fetch_s": time.perf_counter() - t0}))
"""


def build(work: Path, n_sets: int, n_genes: int = 20_000) -> tuple[Store, list[str], list[Path], list[str]]:
    store = Store.init(work / "store")
    if store.catalog.n_entities("gene") == 0:
        store.register_genes()
    universe = store.catalog.query(
        "SELECT entity_id FROM entities WHERE kind='gene' AND entity_id LIKE 'ENSG%' ORDER BY entity_id LIMIT 24000"
    ).entity_id.to_numpy()
    dims = np.linspace(128, 2304, n_sets).astype(int)
    h5ads, sources = [], []
    for i, dim in enumerate(dims):
        rng = np.random.default_rng(i)
        ids = np.sort(rng.choice(universe, n_genes, replace=False))
        source = f"set{i:02d}"
        path = work / f"{source}.h5ad"
        h5ads.append(path)
        sources.append(source)
        recipe = Recipe(source=source, producer="synthetic", kind="gene", params={"seed": i, "dim": int(dim)})
        if path.exists() and store.has(recipe):
            continue
        values = rng.random((n_genes, dim), dtype=np.float32)
        if not path.exists():
            ad.AnnData(X=values, obs=pd.DataFrame(index=ids)).write_h5ad(path)
        store.write_set(recipe, list(ids), values)
        print(f"  built {source}: {n_genes} x {dim}", flush=True)
    return store, list(universe), h5ads, sources


def drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def run_json(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-sets", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=Path(__file__).parent / "_work")
    ap.add_argument("--rows", default=None, help="append the measurements as JSON rows to this file")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"building {args.n_sets} synthetic sets in {args.workdir} (reused when present)")
    store, universe, h5ads, sources = build(args.workdir, args.n_sets)
    in_memory = {s: ad.read_h5ad(p) for s, p in zip(sources, h5ads)}
    rng = np.random.default_rng(42)
    results = {}
    for n in (2000, 50):
        query = list(rng.choice(universe, n, replace=False))
        ids_file = args.workdir / f"ids_{n}.json"
        ids_file.write_text(json.dumps(query))

        def numpy_fetch() -> None:
            for a in in_memory.values():
                rows = a.obs_names.get_indexer(query)
                _ = a.X[rows[rows >= 0]]

        def warm_fetch() -> None:
            store.align(sources, query)

        for _ in range(2):  # as a long-lived server would have: chunks decoded, ids and aliases indexed
            warm_fetch()
        store.settle()
        timings = {"numpy in memory": [], "pertstore warm": [], "reference (h5ad)": [], "pertstore cold": []}
        for _ in range(args.repeats):
            t = time.perf_counter()
            numpy_fetch()
            timings["numpy in memory"].append(time.perf_counter() - t)
            t = time.perf_counter()
            warm_fetch()
            timings["pertstore warm"].append(time.perf_counter() - t)
        store.catalog.close()  # the catalog has one writing process: let the cold processes open it
        dropped = False
        for _ in range(args.repeats):
            dropped = drop_caches()
            timings["reference (h5ad)"].append(
                run_json(REFERENCE, json.dumps([str(p) for p in h5ads]), str(ids_file))["fetch_s"]
            )
            dropped = drop_caches()
            timings["pertstore cold"].append(
                run_json(COLD, str(store.uri), str(ids_file), json.dumps(sources))["fetch_s"]
            )
        med = {k: statistics.median(v) for k, v in timings.items()}
        results[n] = med
        print(f"\n{n} random genes x {len(sources)} sets (median of {args.repeats}; OS cache dropped: {dropped})")
        for k, v in med.items():
            print(f"  {k:<18} {v * 1000:9.1f} ms")
        print(
            f"  warm: {med['reference (h5ad)'] / med['pertstore warm']:.1f}x faster than the reference "
            f"(target >= 20x), {med['pertstore warm'] / med['numpy in memory']:.2f}x numpy's time (target <= 2x)"
        )
        print(
            f"  cold: {med['reference (h5ad)'] / med['pertstore cold']:.1f}x faster than the reference "
            f"(target: >= 1x for 2,000 ids, >= 10x for 50)"
        )
    store.close()
    out = []
    for n, med in results.items():
        what, ref = f"aligned fetch, {n:,} ids x {len(sources)} sets", med["reference (h5ad)"]
        cold_target = 1.0 if n >= 2000 else 10.0
        out += [
            row(
                f"{what}, cold (fresh process)",
                "anndata.read_h5ad per set",
                ref,
                med["pertstore cold"],
                target=f">= {cold_target:g}x",
                met=ref / med["pertstore cold"] >= cold_target,
                note=f"OS cache dropped: {dropped}",
            ),
            row(
                f"{what}, warm",
                "anndata.read_h5ad per set",
                ref,
                med["pertstore warm"],
                target=">= 20x",
                met=ref / med["pertstore warm"] >= 20,
            ),
        ]
        if n >= 2000:
            ratio = med["pertstore warm"] / med["numpy in memory"]
            out.append(
                row(
                    f"{what}, warm vs numpy in memory",
                    "numpy fancy indexing in memory",
                    med["numpy in memory"],
                    med["pertstore warm"],
                    ratio=ratio,
                    target="<= 1.2x numpy's time",
                    met=ratio <= 1.2,
                    note="ratio = our time / numpy's time",
                )
            )
    write_rows(args.rows, out)


if __name__ == "__main__":
    main()
