"""Benchmark pertstore.consumers.tasks against the reference tools, side by side in one run.

Synthetic sparse counts of the paper's size (200,000 cells x 8,000 genes, 2,000
perturbations, 56 batches; ``--scale`` shrinks cells, genes and perturbations).
Each measurement runs in a fresh subprocess (BLAS pinned to one thread) so its
peak RSS is its own; medians over ``--repeats`` runs.

- LFC: ``sc.get.aggregate`` two-stage means (per (perturbation, batch), then over
  batches; small-batch variant) vs :func:`lfc` (in memory and from a backed file).
- DEG: ``sc.tl.rank_genes_groups(method='t-test', reference='control')`` on
  ``--deg-subset`` perturbations, time extrapolated linearly to all of them
  (printed as such), vs :func:`deg` on all perturbations.
- Bootstrap: a naive hierarchical bootstrap materialising ``[trials, cells, genes]``
  per perturbation on ``--boot-subset`` perturbations, extrapolated, vs
  :func:`experimental_error` on all perturbations.
- sci-Plex task (``--only sciplex``, no reference): a whole LFC task (targets, folds, experimental
  error) built by ``store.tasks.build(..., preset="sciplex", backed=True)`` from the backed file, whose
  cells are shaped like sci-Plex 3 as well (``drug`` with ``Vehicle`` controls, four doses in nM,
  plates as batches, three cell lines; genes named after protein-coding genes); wall time and peak RSS.

Usage: ``python benchmarks/bench_tasks.py [--scale 0.1] [--repeats 3] [--only lfc deg boot] [--quick]
[--rows FILE]`` (``--rows``: the measurements as rows for ``benchmarks/run_all.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _memory import peak_rss_gib  # benchmarks/ is on sys.path when a benchmark runs
from _rows import row, speed_row, write_rows

THREAD_ENV = {
    k: "1"
    for k in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMBA_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
    )
}


def make_data(
    path: Path,
    *,
    scale: float,
    density: float,
    seed: int = 0,
    cells: int | None = None,
    block: int = 100_000,
    batches: int = 56,
    sciplex: bool = False,
) -> dict:
    """Synthetic sparse counts written block by block (memory bounded by ``block`` cells, so 1M cells fit).

    obs has ``perturbation`` and ``batch`` (the reference's columns); with ``sciplex`` the cells are shaped
    like sci-Plex 3 instead: ``drug`` (``Vehicle`` for the controls), ``dose`` (10, 100, 1,000 or 10,000 nM;
    0 for Vehicle), ``plate`` (the batch) and ``cell_line`` (three). Genes are named after protein-coding genes.
    """
    import anndata as ad
    import h5py
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    from anndata.io import sparse_dataset

    rng = np.random.default_rng(seed)
    n_cells, n_genes, n_perts, n_batches = int(200_000 * scale), int(8_000 * scale), int(2_000 * scale), batches
    n_cells = cells or n_cells
    labels = np.array([f"P{i:04d}" for i in range(n_perts)] + ["control"])
    weights = np.r_[np.full(n_perts, 1.0), max(1.0, 0.05 * n_perts)]  # ~5% controls
    pert = rng.choice(labels.size, size=n_cells, p=weights / weights.sum())
    batch = rng.integers(0, n_batches, size=n_cells)
    gene_p = rng.gamma(0.6, 1.0, size=n_genes)
    gene_p /= gene_p.sum()

    def counts(rows: int) -> sp.csr_matrix:
        per_row = rng.binomial(n_genes, density, size=rows)
        indptr = np.r_[0, np.cumsum(per_row)]
        indices = rng.choice(n_genes, size=indptr[-1], p=gene_p).astype(np.int32)
        data = rng.geometric(0.5, size=indptr[-1]).astype(np.float32)
        x = sp.csr_matrix((data, indices, indptr), shape=(rows, n_genes))
        x.sum_duplicates()
        return x

    if sciplex:
        is_ctrl = labels[pert] == "control"
        columns = {
            "drug": np.where(is_ctrl, "Vehicle", labels[pert]),
            "dose": np.where(is_ctrl, 0.0, rng.choice([10.0, 100.0, 1000.0, 10000.0], size=n_cells)),
            "plate": [f"plate{b:02d}" for b in batch],
            "cell_line": rng.choice(["A549", "K562", "MCF7"], size=n_cells),
        }
    else:
        columns = {"perturbation": labels[pert], "batch": [f"b{b:02d}" for b in batch]}
    obs = pd.DataFrame(columns, index=[f"c{i}" for i in range(n_cells)])
    obs = obs.astype({c: "category" for c in obs.columns if c != "dose"})
    genes = coding_symbols(n_genes)
    first = min(block, n_cells)
    nnz = 0
    x = counts(first)
    nnz += x.nnz
    ad.AnnData(X=x, obs=obs.iloc[:first], var=pd.DataFrame(index=genes)).write_h5ad(path)
    if first < n_cells:
        with h5py.File(path, "r+") as f:
            stored = sparse_dataset(f["X"])
            for start in range(first, n_cells, block):
                x = counts(min(block, n_cells - start))
                nnz += x.nnz
                stored.append(x)
            del f["obs"]
            ad.io.write_elem(f, "obs", obs)
    return {"cells": n_cells, "genes": n_genes, "perturbations": n_perts, "batches": n_batches, "nnz": int(nnz)}


def coding_symbols(n: int) -> list[str]:
    """``n`` distinct protein-coding gene symbols (the vendored org.Hs.eg.db table), sorted."""
    from pertstore.catalog import default_gene_table

    table = default_gene_table()
    symbols = sorted(set(table.loc[table["gene_type"] == "protein-coding", "symbol"].dropna()))
    if n > len(symbols):
        raise ValueError(f"{n} genes asked for, {len(symbols)} protein-coding symbols known")
    return symbols[:n]


# ---- workers (one per subprocess) --------------------------------------------------------------


def normalised(path: str):
    import anndata as ad
    import scanpy as sc

    a = ad.read_h5ad(path)
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    return a


def ref_lfc(path: str, **_: object) -> dict:
    import numpy as np
    import scanpy as sc

    a = normalised(path)
    first = sc.get.aggregate(a, by=["perturbation", "batch"], func="mean")
    first.X = first.layers["mean"]
    is_ctrl = (first.obs["perturbation"] == "control").to_numpy()
    global_ctrl = np.asarray(first.X[is_ctrl]).mean(axis=0)
    pert = first[~is_ctrl].copy()
    pert.obs["perturbation"] = pert.obs["perturbation"].cat.remove_unused_categories()
    second = sc.get.aggregate(pert, by="perturbation", func="mean")
    return {"n": int(second.n_obs), "checksum": float(np.abs(second.layers["mean"] - global_ctrl).sum())}


def our_lfc(path: str, *, backed: bool = False, **_: object) -> dict:
    import numpy as np
    from pertstore.consumers.tasks import lfc, read_perturbation_data

    r = lfc(read_perturbation_data(path, backed=backed), variant="small")
    return {"n": int(r.values.shape[0]), "checksum": float(np.abs(r.values).sum())}


def ref_deg(path: str, *, subset: int, **_: object) -> dict:
    import scanpy as sc

    a = normalised(path)
    groups = sorted(set(a.obs["perturbation"]) - {"control"})[:subset]
    sc.tl.rank_genes_groups(a, "perturbation", groups=groups, reference="control", method="t-test", n_genes=a.n_vars)
    return {"n": len(groups)}


def our_deg(path: str, **_: object) -> dict:
    from pertstore.consumers.tasks import deg, read_perturbation_data

    r = deg(read_perturbation_data(path), variant="small")
    return {"n": int(r.values.shape[0]), "deg_fraction": float((r.values != 0).mean())}


def ref_boot(path: str, *, subset: int, trials: int, **_: object) -> dict:
    """Naive hierarchical bootstrap of the perturbed side: materialise [trials, cells, genes] per perturbation.

    Controls are left out (the reference shares them across perturbations), which favours the reference.
    """
    import numpy as np

    a = normalised(path)
    rng = np.random.default_rng(0)
    pert, batch = a.obs["perturbation"].to_numpy(), a.obs["batch"].to_numpy()
    batches = np.unique(batch)
    means = []
    for lab in sorted(set(pert) - {"control"})[:subset]:
        rows = np.flatnonzero(pert == lab)
        dense = a.X[rows].toarray()
        where = {b: np.flatnonzero(batch[rows] == b) for b in batches}
        draws = []
        for _ in range(trials):
            drawn = rng.choice(batches, size=batches.size)
            draws.append(np.concatenate([rng.choice(where[b], where[b].size) for b in drawn]))
        width = max(d.size for d in draws)
        idx = np.stack([np.pad(d, (0, width - d.size), constant_values=-1) for d in draws])
        cube = np.where((idx >= 0)[:, :, None], dense[idx], 0.0)  # [trials, cells, genes]
        means.append(cube.sum(axis=1) / (idx >= 0).sum(axis=1, keepdims=True))
    return {"n": len(means)}


def our_boot(path: str, *, trials: int, **_: object) -> dict:
    import numpy as np
    from pertstore.consumers.tasks import experimental_error, lfc, read_perturbation_data

    data = read_perturbation_data(path)
    e = experimental_error(data, lfc(data, variant="small"), trials=trials)
    return {"n": int(e.trials.shape[0]), "limit": float(np.nanmean(e.per_pert[:, 0]))}  # mean 0.9 quantile of L2


_STORE: list = []


def our_sciplex_task(path: str, *, trials: int, **_: object) -> dict:
    """A whole LFC task with the ``sciplex`` preset from the backed file, the user's way (``store.tasks.build``)."""
    import numpy as np

    from pertstore import Store

    if not _STORE:  # made during the untimed warm-up run
        _STORE.append(Store.init(Path(path).parent / f"store-{os.getpid()}"))  # the run's temporary directory
    task, _ = _STORE[0].tasks.build(
        path,
        name=f"sciplex-{Path(path).stem}",
        kind="lfc",
        preset="sciplex",
        backed=True,
        build_options={"trials": trials},
    )
    return {
        "n": len(task.pert_ids),
        "genes": len(task.gene_ids),
        "contexts": len(set(task.contexts)),
        "checksum": float(np.abs(task.targets).sum()),
    }


WORKERS = {f.__name__: f for f in (ref_lfc, our_lfc, ref_deg, our_deg, ref_boot, our_boot, our_sciplex_task)}


def worker(name: str, path: str, kwargs: dict, warm: str) -> None:
    import anndata  # noqa: F401  (imports out of the timed region)
    import pertstore.consumers.tasks  # noqa: F401
    import scanpy  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        WORKERS[name](warm, **kwargs)  # JIT compilation and imports, untimed
        base = peak_rss_gib()
        t0 = time.perf_counter()
        out = WORKERS[name](path, **kwargs)
        seconds = time.perf_counter() - t0
    peak = peak_rss_gib()
    print(json.dumps({"seconds": seconds, "peak_mb": peak * 1024, "extra_mb": (peak - base) * 1024, **out}))


def measure(name: str, path: Path, kwargs: dict, repeats: int, warm: Path) -> dict:
    import statistics

    runs = []
    for _ in range(repeats):
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            name,
            "--file",
            str(path),
            "--kwargs",
            json.dumps(kwargs),
            "--warm",
            str(warm),
        ]
        out = subprocess.run(cmd, env={**os.environ, **THREAD_ENV}, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {
        **runs[0],
        "seconds": statistics.median(r["seconds"] for r in runs),
        "extra_mb": statistics.median(r["extra_mb"] for r in runs),
    }


def pair(
    ref: str,
    ref_kwargs: dict,
    ours: str,
    ours_kwargs: dict,
    path: Path,
    repeats: int,
    warm: Path,
    ref_repeats: int | None = None,
) -> tuple[dict, dict]:
    """Reference and ours measured alternately (so that load from other processes hits both alike); medians."""
    import statistics

    runs: dict[str, list[dict]] = {ref: [], ours: []}
    for i in range(repeats):
        if i < (ref_repeats or repeats):
            runs[ref].append(measure(ref, path, ref_kwargs, 1, warm))
        runs[ours].append(measure(ours, path, ours_kwargs, 1, warm))
    return tuple(
        {
            **r[0],
            "seconds": statistics.median(x["seconds"] for x in r),
            "extra_mb": statistics.median(x["extra_mb"] for x in r),
        }
        for r in runs.values()
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--density", type=float, default=0.1, help="fraction of non-zero counts")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--deg-subset", type=int, default=100, help="perturbations given to rank_genes_groups")
    ap.add_argument("--boot-subset", type=int, default=10, help="perturbations for the naive bootstrap")
    ap.add_argument("--cells", type=int, default=None, help="cells (genes and perturbations follow --scale)")
    ap.add_argument(
        "--only",
        nargs="+",
        choices=["lfc", "backed", "deg", "boot", "backed-only", "sciplex"],
        default=["lfc", "backed", "deg", "boot"],
        help="steps to run; backed-only: ours from the backed file, no reference (the 1M-cell run); "
        "sciplex: a whole LFC task with the sciplex preset from the backed file (no reference)",
    )
    ap.add_argument("--max-gib", type=float, default=8.0, help="the sciplex step's peak RSS target")
    ap.add_argument("--rows", default=None, help="append the measurements as JSON rows to this file")
    ap.add_argument("--quick", action="store_true", help="a small run: --scale 0.02 --repeats 1 --trials 20")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    ap.add_argument("--kwargs", default="{}", help=argparse.SUPPRESS)
    ap.add_argument("--warm", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.scale, args.repeats, args.trials = 0.02, 1, 20
    if args.worker:
        worker(args.worker, args.file, json.loads(args.kwargs), args.warm)
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        sciplex = args.only == ["sciplex"]
        if "sciplex" in args.only and not sciplex:
            ap.error("--only sciplex runs alone (its cells are shaped like sci-Plex, not like the reference's)")
        path = Path(tmp) / "cells.h5ad"
        shape = make_data(path, scale=args.scale, density=args.density, cells=args.cells, sciplex=sciplex)
        warm = Path(tmp) / "warm.h5ad"  # 4 plates: controls in every plate and cell line
        make_data(warm, scale=0.005, density=args.density, seed=1, batches=4, sciplex=sciplex)
        print(f"data: {shape} (scale {args.scale}), repeats {args.repeats}, BLAS 1 thread")
        n = shape["perturbations"]
        deg_k, boot_k = min(args.deg_subset, n), min(args.boot_subset, n)
        rows = []
        if "lfc" in args.only:
            rows.append(("LFC", *pair("ref_lfc", {}, "our_lfc", {}, path, args.repeats, warm), 1.0))
        if "backed" in args.only:
            rows.append(
                (
                    "LFC (ours from backed file)",
                    *pair("ref_lfc", {}, "our_lfc", {"backed": True}, path, args.repeats, warm),
                    1.0,
                )
            )
        if "deg" in args.only:
            rows.append(
                (
                    f"DEG (reference on {deg_k} perts, time x{n / deg_k:.1f})",
                    *pair("ref_deg", {"subset": deg_k}, "our_deg", {}, path, args.repeats, warm),
                    n / deg_k,
                )
            )
        if "boot" in args.only:
            rows.append(
                (
                    f"bootstrap {args.trials} trials (reference on {boot_k} perts, time x{n / boot_k:.1f})",
                    *pair(
                        "ref_boot",
                        {"subset": boot_k, "trials": args.trials},
                        "our_boot",
                        {"trials": args.trials},
                        path,
                        args.repeats,
                        warm,
                        ref_repeats=1,
                    ),
                    n / boot_k,
                )
            )
        extra = []
        if "backed-only" in args.only:
            ours = measure("our_lfc", path, {"backed": True}, args.repeats, warm)
            print(
                f"LFC from the backed file, {shape['cells']:,} cells: {ours['seconds']:.1f} s, "
                f"peak RSS {ours['peak_mb'] / 1024:.2f} GiB ({ours['extra_mb'] / 1024:.2f} GiB above imports + warm-up)"
            )
        if "sciplex" in args.only:
            ours = measure("our_sciplex_task", path, {"trials": args.trials}, args.repeats, warm)
            gib = ours["peak_mb"] / 1024
            print(
                f"sciplex-preset LFC task from the backed file, {shape['cells']:,} cells ({shape['nnz'] / 1e6:.1f} M "
                f"non-zeros; {ours['n']} perturbations at 10,000 nM x {ours['genes']} genes in {ours['contexts']} "
                f"cell lines, {args.trials} trials): {ours['seconds']:.1f} s, peak RSS {gib:.2f} GiB"
            )
            extra.append(
                row(
                    f"sciplex-preset LFC task, backed, {shape['cells']:,} cells x {shape['genes']:,} genes",
                    "",
                    None,
                    ours["seconds"],
                    target=f"peak RSS <= {args.max_gib:g} GB",
                    met=gib * 2**30 <= args.max_gib * 1e9,
                    note=f"peak RSS {gib:.2f} GiB",
                )
            )
    size = f"{shape['cells']:,} cells x {shape['genes']:,} genes"
    targets = {
        "LFC": ("scanpy sc.get.aggregate", 5.0, 0.25),
        "LFC (ours": ("scanpy sc.get.aggregate", 5.0, 0.25),
        "DEG": ("scanpy rank_genes_groups t-test", 5.0, None),
        "boots": ("naive [trials, cells, genes] bootstrap", 1.0, None),
    }
    out = []
    for step, ref, ours, factor in rows:
        name, min_ratio, max_mem = next(v for k, v in targets.items() if step.startswith(k))
        out.append(
            speed_row(
                f"{step}, {size}",
                name,
                ref["seconds"] * factor,
                ours["seconds"],
                min_ratio=min_ratio,
                ref_mb=ref["extra_mb"],
                ours_mb=ours["extra_mb"],
                max_mem=max_mem,
            )
        )
    write_rows(args.rows, out + extra)
    print(f"{'step':<62} {'ref s':>9} {'ours s':>8} {'speed-up':>9} {'ref MB':>8} {'ours MB':>8} {'mem ratio':>9}")
    for step, ref, ours, factor in rows:
        ref_s = ref["seconds"] * factor
        print(
            f"{step:<62} {ref_s:9.2f} {ours['seconds']:8.2f} {ref_s / ours['seconds']:8.1f}x "
            f"{ref['extra_mb']:8.0f} {ours['extra_mb']:8.0f} {ours['extra_mb'] / ref['extra_mb']:9.2f}"
        )
    print(
        "MB = peak RSS growth during the timed call (reading the file included) over the RSS after imports "
        "and a warm-up run; extrapolated reference times are "
        "linear in perturbations; reference peak memory is for its subset only."
    )


if __name__ == "__main__":
    main()
