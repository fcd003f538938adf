"""Cross-context models and LoRA fine-tuning: training time, time per epoch and peak memory, and their scaling.

Each measurement runs in its own process (peak RSS is that model's). Synthetic data shaped like the shared
Norman / McFaline-Figueroa task: ``C`` contexts x ``P`` perturbations x ``G`` genes of LFC rows with a
low-rank structure and 64-dim embeddings; one few-shot split (a fifth of one context's perturbations held
out). Fine-tuning: a random dense (AIDO.Cell-style) checkpoint (d 32, 2 layers) over ``G`` genes and
``N`` control cells, one learning rate, ``--epochs`` epochs.

    python benchmarks/bench_crosscontext.py [--contexts 2 4 8] [--cells 64 256] [--epochs 3]
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

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

sys.path.insert(0, str(Path(__file__).parent))
CROSS = ("context_mean", "knn", "mlp", "onehot")
TUNED = ("isko", "indexing")


def _cross(model: str, contexts: int, perts: int, genes: int) -> dict:
    import numpy as np
    from pertstore.consumers.crosscontext import MLPSettings, SplitData, cross_context_splits
    from pertstore.consumers.crosscontext._models import context_mean, cross_knn, mlp

    rng = np.random.default_rng(0)
    latent = rng.normal(size=(perts, 8))
    shift = rng.normal(size=(contexts, 8, genes))
    ctx = np.repeat([f"c{i}" for i in range(contexts)], perts)
    labels = np.tile([f"p{i}" for i in range(perts)], contexts)
    y = np.vstack([latent @ shift[i] for i in range(contexts)]) + 0.1 * rng.normal(size=(contexts * perts, genes))
    x = np.tile(latent @ rng.normal(size=(8, 64)), (contexts, 1))
    folds = np.tile(np.arange(perts) % 5, contexts)
    split = next(cross_context_splits(ctx, folds, "fewshot", held_out=["c0"], only_folds=[0]))
    data = SplitData(y, ctx, labels, split.train, split.test, "c0", x, np.ones(len(y), bool))
    t0 = time.perf_counter()
    epochs = 1
    if model == "context_mean":
        context_mean(data)
    elif model == "knn":
        cross_knn(data)
    else:
        _, chosen = mlp(data, MLPSettings(), onehot=model == "onehot")
        epochs = chosen["iterations"]
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "epochs": epochs, "per_epoch": seconds / epochs}


def _tuned(mode: str, cells: int, genes: int, epochs: int) -> dict:
    import numpy as np
    import torch
    from pertstore.consumers.finetune import FineTuner, FinetuneSettings, cell_model
    from pertstore.consumers.finetune._model import _train
    from pertstore.producers.expression.checkpoints import DenseCellConfig, DenseCellModel

    torch.manual_seed(0)
    names = [f"G{i}" for i in range(genes)]
    path = Path(tempfile.mkdtemp()) / "dense"
    DenseCellModel(DenseCellConfig(gene_names=names, d_model=32, nhead=2, d_hid=64, nlayers=2)).save_pretrained(path)
    rng = np.random.default_rng(0)
    x = np.log1p(rng.poisson(5, size=(cells, genes))).astype(np.float32)
    n = min(genes, 64)
    y = rng.normal(size=(n, genes))
    settings = FinetuneSettings(mode=mode, epochs=epochs, batch_cells=min(cells, 32))
    model = FineTuner(cell_model(str(path), x, settings), genes, settings)
    t0 = time.perf_counter()
    _train(model, np.arange(n), y, 1e-3, settings)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "epochs": epochs, "per_epoch": seconds / epochs}


def _child(args) -> None:
    from _memory import peak_rss_gib

    if args.one[0] in CROSS:
        out = _cross(args.one[0], *map(int, args.one[1:4]))
    else:
        out = _tuned(args.one[0], *map(int, args.one[1:4]))
    print(json.dumps({**out, "peak_gib": peak_rss_gib()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--perts", type=int, default=200)
    parser.add_argument("--genes", type=int, default=500)
    parser.add_argument("--cells", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--ft-genes", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return _child(args)
    jobs = [(m, c, args.perts, args.genes, f"{c} contexts") for m in CROSS for c in args.contexts]
    jobs += [(m, n, args.ft_genes, args.epochs, f"{n} cells") for m in TUNED for n in args.cells]
    print(f"{'model':<14}{'size':<14}{'seconds':>9}{'epochs':>8}{'s/epoch':>9}{'peak GiB':>10}")
    for model, a, b, c, size in jobs:
        done = subprocess.run(
            [sys.executable, __file__, "--one", model, str(a), str(b), str(c)], capture_output=True, text=True
        )
        if done.returncode:
            print(f"{model:<14}{size:<14} failed: {done.stderr[-500:]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{model:<14}{size:<14}{r['seconds']:>9.2f}{r['epochs']:>8}{r['per_epoch']:>9.3f}{r['peak_gib']:>10.2f}")


if __name__ == "__main__":
    main()
