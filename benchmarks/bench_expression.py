"""Issue 7's expression targets, on SYNTHETIC counts (Poisson draws; no real data is used here).

1. Control-cell PCA out of core (``control-pca``'s streaming PCA over a backed h5ad) against
   in-memory scikit-learn PCA (scanpy normalise + log1p, then ``PCA(128).fit_transform(X.T)``),
   on 100,000 cells x 8,000 genes: wall time, peak RSS and agreement of the components.
   Target: within 2x of sklearn's time at under a quarter of its peak memory.
2. Foundation-model streaming (``scfm``'s ``stream_gene_sums``, tiny random scGPT-style model) on
   10,000 and 100,000 cells: peak RSS must not grow with the number of cells.

Each measurement runs in its own process (peak RSS = the process's VmHWM); BLAS and torch are pinned to
one thread; medians of ``--repeats`` runs.

    python benchmarks/bench_expression.py [--pca-cells 100000] [--pca-genes 8000] [--fm-cells 10000,100000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path

from _memory import peak_rss_gib  # benchmarks/ is on sys.path when a benchmark runs

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402


def synthetic_counts(path: Path, n_cells: int, n_genes: int, seed: int = 0) -> None:
    """Poisson counts from 10 latent programmes over log-normal gene means, as an h5ad (synthetic)."""
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(seed)
    gene_mean = rng.lognormal(-2.5, 1.5, n_genes)
    programmes = rng.standard_normal((10, n_genes)) * np.geomspace(0.8, 0.2, 10)[:, None]
    blocks = []
    for start in range(0, n_cells, 5000):
        n = min(5000, n_cells - start)
        rate = np.exp(rng.standard_normal((n, 10)) @ programmes) * gene_mean * rng.lognormal(0, 0.3, (n, 1))
        blocks.append(sp.csr_matrix(rng.poisson(rate).astype(np.float32)))
    x = sp.vstack(blocks, format="csr")
    genes = pd.DataFrame(index=[f"G{i}" for i in range(n_genes)])
    ad.AnnData(x, obs=pd.DataFrame(index=[f"c{i}" for i in range(n_cells)]), var=genes).write_h5ad(path)


def _pca_streamed(path: str, dims: int, cache_mb: int, out: mp.Queue) -> None:
    from pertstore.producers.expression._cells import CellSelection, open_control_cells
    from pertstore.producers.expression._pca import gene_pca

    t0 = time.perf_counter()
    cells = open_control_cells(path, CellSelection(control_column=None))
    scores = gene_pca(lambda: cells.blocks(1024), cells.n_genes, dims, cache_bytes=cache_mb * 2**20).scores
    out.put((time.perf_counter() - t0, peak_rss_gib(), scores))


def _pca_sklearn(path: str, dims: int, _cache_mb: int, out: mp.Queue) -> None:
    import scanpy as sc
    from sklearn.decomposition import PCA

    t0 = time.perf_counter()
    adata = sc.read_h5ad(path)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    scores = PCA(dims, random_state=0).fit_transform(adata.X.T.toarray())
    out.put((time.perf_counter() - t0, peak_rss_gib(), scores))


def _fm_stream(path: str, model_dir: str, out: mp.Queue) -> None:
    import torch
    from pertstore.producers.expression._cells import CellSelection, open_control_cells
    from pertstore.producers.expression._fm_adapters import load_adapter
    from pertstore.producers.expression._fm_stream import column_map, stream_gene_sums

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    adapter = load_adapter("scgpt", model_dir, "cpu")
    cells = open_control_cells(path, CellSelection(control_column=None))
    to_model = column_map(cells.n_genes, [(j, j) for j in range(cells.n_genes)], len(adapter.genes))
    sums = stream_gene_sums(cells, adapter, to_model, layer=-1, batch_cells=64, device="cpu")
    out.put((time.perf_counter() - t0, peak_rss_gib(), int(sums.counts.sum())))


def _in_process(target, *args):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, out))
    proc.start()
    result = out.get()
    proc.join()
    return result


def _tiny_scgpt(root: Path, n_genes: int) -> Path:
    import json

    import torch
    from pertstore.producers.expression._fm_models import ScGPTConfig, ScGPTModel

    vocab = {t: i for i, t in enumerate(["<pad>", "<cls>", "<eoc>"] + [f"G{i}" for i in range(n_genes)])}
    torch.manual_seed(0)
    model = ScGPTModel(ScGPTConfig(vocab_size=len(vocab), d_model=32, nhead=2, d_hid=64, nlayers=2, dropout=0.0))
    model.save_pretrained(root)
    (root / "vocab.json").write_text(json.dumps(vocab))
    return root


def _component_agreement(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Smallest |correlation| between matched components among the first ``k``."""
    return min(abs(np.corrcoef(a[:, j], b[:, j])[0, 1]) for j in range(k))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pca-cells", type=int, default=100_000)
    ap.add_argument("--pca-genes", type=int, default=8_000)
    ap.add_argument("--fm-cells", default="10000,100000")
    ap.add_argument("--fm-genes", type=int, default=2_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip", default="", help="comma-separated: pca, fm")
    args = ap.parse_args()
    skip = set(args.skip.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "pca" not in skip:
            path = tmp / "pca.h5ad"
            synthetic_counts(path, args.pca_cells, args.pca_genes)
            ways = {
                "sklearn in memory": (_pca_sklearn, 0),
                "streamed, cache 2 GiB (default)": (_pca_streamed, 2048),
                "streamed, no cache (re-read every pass)": (_pca_streamed, 0),
            }
            runs = {name: [] for name in ways}
            for _ in range(args.repeats):
                for name, (target, cache_mb) in ways.items():
                    runs[name].append(_in_process(target, str(path), 128, cache_mb))
            print(
                f"PCA of {args.pca_cells} cells x {args.pca_genes} genes (synthetic), 128 dims, medians of "
                f"{args.repeats}:",
                flush=True,
            )
            t_ref, m_ref = (statistics.median(r[i] for r in runs["sklearn in memory"]) for i in (0, 1))
            for name, rows in runs.items():
                t, m = (statistics.median(r[i] for r in rows) for i in (0, 1))
                agree = _component_agreement(rows[-1][2], runs["sklearn in memory"][-1][2], 10)
                print(
                    f"  {name:40s} {t:7.1f} s ({t / t_ref:4.2f}x)  peak RSS {m:5.2f} GiB ({m / m_ref:4.2f}x)  "
                    f"min |corr| with sklearn, components 1-10: {agree:.4f}",
                    flush=True,
                )
        if "fm" not in skip:
            model = _tiny_scgpt(tmp / "scgpt", args.fm_genes)
            for n in (int(c) for c in args.fm_cells.split(",")):
                path = tmp / f"fm{n}.h5ad"
                synthetic_counts(path, n, args.fm_genes, seed=1)
                runs = [_in_process(_fm_stream, str(path), str(model)) for _ in range(args.repeats)]
                print(
                    f"scfm stream, tiny scGPT-style model, {n} cells x {args.fm_genes} genes (synthetic), medians "
                    f"of {args.repeats}: {statistics.median(r[0] for r in runs):.1f} s, peak RSS "
                    f"{statistics.median(r[1] for r in runs):.3f} GiB, {runs[0][2]} gene states averaged",
                    flush=True,
                )
                path.unlink()


if __name__ == "__main__":
    main()
