"""Fusion training throughput and peak memory on CPU (synthetic data, said so).

2,000 perturbations x 30 sources (dims 128..1,024, 20% of source values missing) x 6,640 genes,
two contexts, the paper's simple fusion (d=100, 5 heads). Reports perturbations per second over a
few epochs and the peak resident memory of the process.

    python benchmarks/bench_fusion.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import resource
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pertstore.consumers.fusion import FusionConfig, FusionInputs, FusionPredictor  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--perts", type=int, default=2000)
    ap.add_argument("--sources", type=int, default=30)
    ap.add_argument("--genes", type=int, default=6640)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="500 perturbations, 10 sources, 2 epochs")
    args = ap.parse_args()
    if args.quick:
        args.perts, args.sources, args.epochs = 500, 10, 2
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rng = np.random.default_rng(0)
    dims = [int(d) for d in rng.choice([128, 256, 512, 768, 1024], size=args.sources)]
    values = [rng.normal(size=(args.perts, d)).astype(np.float32) for d in dims]
    present = rng.random((args.perts, args.sources)) > 0.2
    present[:, 0] = True
    y = rng.normal(size=(args.perts, args.genes)).astype(np.float32)
    x = FusionInputs([f"s{i}" for i in range(args.sources)], values, present, rng.integers(0, 2, args.perts), ["a", "b"])
    cfg = FusionConfig(depth=args.depth, max_epochs=args.epochs, patience=args.epochs + 1)
    t0 = time.perf_counter()
    model = FusionPredictor(cfg).fit(x, y)
    seconds = time.perf_counter() - t0
    n_train = int(round(args.perts * (1 - cfg.val_fraction)))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"fusion d={cfg.d_model}, depth {cfg.depth}, {args.perts} perturbations x {args.sources} sources "
          f"x {args.genes} genes, {len(model.history)} epochs, {torch.get_num_threads()} thread(s)")
    print(f"  training: {seconds:.1f} s, {n_train * len(model.history) / seconds:.0f} perturbations/s")
    print(f"  peak RSS: {rss:.0f} MiB (inputs {sum(v.nbytes for v in values) / 2**20:.0f} MiB, "
          f"targets {y.nbytes / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
