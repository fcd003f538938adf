"""The DEG evaluator against a per-gene scikit-learn loop, side by side in one run (synthetic data, said so).

Ours: :class:`pertstore.consumers.evaluators.VectorLogistic` (every gene in one torch model, C in
1, 1e3, 1e5, 1e7 by unshuffled inner 5-fold CV on the present-class macro F1). Baseline: the same
protocol with one ``sklearn.linear_model.LogisticRegression(C, class_weight="balanced")`` per gene
and C (the inner folds' StandardScaler -> PCA computed once per fold for both). BLAS and torch pinned
to one thread; medians of ``--repeats`` runs.

    python benchmarks/bench_deg.py [--genes 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np
import torch
from _rows import speed_row, write_rows  # benchmarks/ is on sys.path when a benchmark runs
from pertstore.consumers.evaluators._metrics import deg_f1_per_gene, deg_gene_scores
from pertstore.consumers.evaluators._models import LOGISTIC_C, VectorLogistic, project
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold


def per_gene_sklearn(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """The baseline: per gene, C by the same inner CV, one scikit-learn model per (gene, C, fold)."""
    splits = list(KFold(5).split(x_train))
    folds = [(project(x_train[tr], [x_train[va]]), tr, va) for tr, va in splits]
    a, (b,) = project(x_train, [x_test])
    proba = np.zeros((len(x_test), y_train.shape[1], 3))

    def fit(features, labels, c):
        if len(np.unique(labels)) == 1:
            return labels[0]
        return LogisticRegression(C=c, class_weight="balanced", max_iter=100).fit(features, labels)

    def predict(model, features):
        out = np.zeros((len(features), 3))
        if isinstance(model, LogisticRegression):
            out[:, model.classes_ + 1] = model.predict_proba(features)
        else:
            out[:, int(model) + 1] = 1.0
        return out

    for g in range(y_train.shape[1]):
        scores = [
            np.mean(
                [
                    deg_f1_per_gene(y_train[va, g : g + 1], predict(fit(fa, y_train[tr, g], c), fb)[:, None])
                    for (fa, (fb,)), tr, va in folds
                ]
            )
            for c in LOGISTIC_C
        ]
        proba[:, g] = predict(fit(a, y_train[:, g], LOGISTIC_C[int(np.argmax(scores))]), b)
    return proba


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--perts", type=int, default=200)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--genes", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", default=None, help="append the measurement as a JSON row to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.perts, args.dim))
    z = x @ rng.normal(size=(args.dim, args.genes)) / np.sqrt(args.dim)
    z += 0.5 * rng.normal(size=z.shape)
    y = np.where(z > 1.0, 1, np.where(z < -1.0, -1, 0))
    n_test = args.perts // 5
    xt, yt, xs, ys = x[:-n_test], y[:-n_test], x[-n_test:], y[-n_test:]
    times = {"vectorised": [], "sklearn per gene": []}
    f1 = {}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ours, _ = VectorLogistic().fit_predict(xt, yt, xs)
        times["vectorised"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        theirs = per_gene_sklearn(xt, yt, xs)
        times["sklearn per gene"].append(time.perf_counter() - t0)
        f1 = {
            "vectorised": deg_gene_scores(ys, ours)["f1"].mean(),
            "sklearn per gene": deg_gene_scores(ys, theirs)["f1"].mean(),
        }
    print(
        f"synthetic: {args.perts} perturbations ({n_test} test), {args.dim} dims, {args.genes} genes, "
        f"{args.repeats} runs, one thread"
    )
    for name, t in times.items():
        print(
            f"{name:>17}: median {statistics.median(t):7.2f} s  (runs {', '.join(f'{v:.2f}' for v in t)})  "
            f"test macro F1 {f1[name]:.3f}"
        )
    print(f"speed-up: {statistics.median(times['sklearn per gene']) / statistics.median(times['vectorised']):.1f}x")
    write_rows(
        args.rows,
        [
            speed_row(
                f"DEG logistic evaluator, {args.perts} perts x {args.genes} genes, {args.dim} dims",
                "sklearn LogisticRegression per gene",
                statistics.median(times["sklearn per gene"]),
                statistics.median(times["vectorised"]),
                min_ratio=5.0,
                note=f"test macro F1 {f1['vectorised']:.3f} vs {f1['sklearn per gene']:.3f}",
            )
        ],
    )


if __name__ == "__main__":
    main()
