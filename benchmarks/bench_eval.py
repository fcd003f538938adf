"""One kNN evaluation against the reference scikit-learn pipeline, side by side (synthetic data, said so).

Reference: ``GridSearchCV(Pipeline(StandardScaler, PCA(100, svd_solver="full"), KNeighborsRegressor))``
with the paper's inner 5-fold CV (shuffled, seed 42) over k in 20..100 scored by mean L2, then a
prediction of the held-out fold. Ours: :class:`pertstore.consumers.evaluators.KNN` (PCA once per
inner fold, one neighbour search at the largest k, prefix means). The same for Lasso. Each side runs
in its own subprocess so peak memory is measured separately; BLAS pinned to one thread; medians.

    python benchmarks/bench_eval.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from _rows import speed_row, write_rows

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")


def _worker(which: str, n: int, d: int, genes: int, model: str) -> None:
    import resource
    import time

    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (np.tanh(x @ rng.normal(size=(d, genes)).astype(np.float32) / 16) + 0.1 * rng.normal(size=(n, genes))).astype(
        np.float32
    )
    n_test = n // 5
    train, test = np.arange(n - n_test), np.arange(n - n_test, n)
    from pertstore.consumers.evaluators import evaluator
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Lasso
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if which == "reference":
        est, grid = (
            (KNeighborsRegressor(algorithm="brute"), {"kneighborsregressor__n_neighbors": [20, 40, 60, 80, 100]})
            if model == "knn"
            else (Lasso(), {"lasso__alpha": [1e-3, 1e-2, 1e-1, 1.0]})
        )
        gs = GridSearchCV(
            make_pipeline(StandardScaler(), PCA(100, svd_solver="full"), est),
            grid,
            cv=KFold(5, shuffle=True, random_state=42),
            scoring=make_scorer(lambda a, b: -np.linalg.norm(a - b, axis=1).mean()),
        ).fit(x[train], y[train])
        pred, chosen = gs.predict(x[test]), list(gs.best_params_.values())[0]
    else:
        pred, params = evaluator(model).fit_predict(x[train], y[train], x[test])
        chosen = list(params.values())[0]
    seconds = time.perf_counter() - t0
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    np.save(os.environ["BENCH_PRED"], np.asarray(pred, dtype=np.float64))
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "chosen": chosen}))


def _run(which: str, args, model: str, pred_path: str) -> dict:
    env = {**os.environ, "BENCH_PRED": pred_path}
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            which,
            "--n",
            str(args.n),
            "--d",
            str(args.d),
            "--genes",
            str(args.genes),
            "--model",
            model,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2054)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--genes", type=int, default=6640)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1,000 perturbations x 2,000 genes, 3 repeats")
    ap.add_argument(
        "--lasso-genes", type=int, default=200, help="genes for the Lasso comparison (it fits one model per gene)"
    )
    ap.add_argument("--rows", default=None, help="append the measurements as JSON rows to this file")
    ap.add_argument("--models", nargs="+", choices=("knn", "lasso"), default=["knn", "lasso"])
    ap.add_argument("--worker")
    ap.add_argument("--model", default="knn")
    args = ap.parse_args()
    if args.worker:
        return _worker(args.worker, args.n, args.d, args.genes, args.model)
    if args.quick:
        args.n, args.genes, args.repeats = 1000, 2000, 3
    import tempfile

    import numpy as np

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            genes = args.genes if model == "knn" else args.lasso_genes
            run_args = argparse.Namespace(**{**vars(args), "genes": genes})
            res = {"reference": [], "pertstore": []}
            for _ in range(args.repeats):
                for which in ("reference", "pertstore"):
                    res[which].append(_run(which, run_args, model, f"{tmp}/{which}.npy"))
            same = np.array_equal(np.load(f"{tmp}/reference.npy"), np.load(f"{tmp}/pertstore.npy"))
            maxdiff = float(np.abs(np.load(f"{tmp}/reference.npy") - np.load(f"{tmp}/pertstore.npy")).max())
            t = {k: statistics.median(r["seconds"] for r in v) for k, v in res.items()}
            m = {k: statistics.median(r["peak_mb"] for r in v) for k, v in res.items()}
            print(f"{model}: {args.n} perturbations x {genes} genes, {args.d}-dim set; medians of {args.repeats}")
            print(
                f"  reference {t['reference']:.2f} s, peak +{m['reference']:.0f} MB; pertstore {t['pertstore']:.2f} s, "
                f"peak +{m['pertstore']:.0f} MB"
            )
            print(
                f"  speed-up {t['reference'] / t['pertstore']:.1f}x, memory ratio {m['pertstore'] / max(m['reference'], 1):.2f}; "
                f"same choice: {res['reference'][0]['chosen'] == res['pertstore'][0]['chosen']}, "
                f"identical predictions: {same} (max difference {maxdiff:.2e})"
            )
            same_choice = res["reference"][0]["chosen"] == res["pertstore"][0]["chosen"]
            out.append(
                speed_row(
                    f"{model} evaluation, {args.n:,} perts x {genes:,} genes, {args.d} dims",
                    "sklearn GridSearchCV pipeline",
                    t["reference"],
                    t["pertstore"],
                    min_ratio=10.0 if model == "knn" else 1.0,
                    ref_mb=m["reference"],
                    ours_mb=m["pertstore"],
                    max_mem=0.25 if model == "knn" else None,
                    note=f"same choice: {same_choice}, max prediction difference {maxdiff:.1e}",
                )
            )
    write_rows(args.rows, out)


if __name__ == "__main__":
    main()
