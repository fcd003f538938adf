"""Link prediction on held-out edges of the real STRING v12 graph, per graph producer, on CPU.

Graph: experiments + coexpression + database recombined with STRING's rule, score > 400. The
edges are split 90:10 (seed 0); every model sees the training edges only. AUC: the held-out edges
against the same sampled non-edges (torch-geometric ``negative_sampling``, seed 0), scored by the
dot product and by the cosine of the two genes' embeddings. Spectral: the training graph's largest
component (held-out edges with an endpoint outside it are scored 0). Each model runs in its own
process, which reports its wall and CPU time, seconds per epoch (after set-up: WaveGC's eigenpairs)
and peak resident memory. BLAS and torch
pinned to one thread. Needs PERTSTORE_DATA_DIR.

    python benchmarks/bench_graph_quality.py [--models spectral,node2vec,gcn,gin,wavegc] [--epochs N]
        [--eig-ratio R]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

from _memory import peak_rss_gib  # benchmarks/ is on sys.path when a benchmark runs

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402
from pertstore.producers.graph._common import GeneGraph  # noqa: E402
from pertstore.producers.graph._linkpred import EdgeSplit, link_auc, split_edges  # noqa: E402
from pertstore.producers.graph._seeding import seeded  # noqa: E402
from pertstore.producers.graph._string import read_string  # noqa: E402

from pertstore._config import get_settings  # noqa: E402

MODELS = ("spectral", "node2vec", "gcn", "gin", "wavegc")


def _graph() -> GeneGraph:
    data = get_settings().data_dir
    if not data:
        raise SystemExit("set PERTSTORE_DATA_DIR to the data directory")
    return GeneGraph.from_edges(read_string(os.path.join(data, "network", "string_v12_human_notextmining.tsv.gz")))


def _train_adjacency(split: EdgeSplit, n: int) -> sp.csr_matrix:
    rows, cols = split.train.numpy()
    a = sp.coo_matrix((split.train_weight.numpy().astype(np.float64), (rows, cols)), shape=(n, n))
    return (a + a.T).tocsr()


def _embed(
    model: str, split: EdgeSplit, n: int, epochs: int | None, eig_ratio: float | None
) -> tuple[np.ndarray, int, float]:
    """The model's embedding of all ``n`` nodes from the training edges, the epochs it ran, its set-up seconds."""
    cap = {} if epochs is None else {"epochs": epochs}
    if model == "spectral":
        from pertstore.producers.graph.spectral import largest_component, spectral_embedding

        adj = _train_adjacency(split, n)
        keep = largest_component(adj)
        emb = np.zeros((n, 128))
        emb[keep] = spectral_embedding(adj[keep][:, keep], 128)
        return emb, 0, 0.0
    if model == "node2vec":
        from pertstore.producers.graph.node2vec import Node2VecParams, train_node2vec

        params = Node2VecParams(**cap)
        return train_node2vec(_train_adjacency(split, n), params), params.epochs, 0.0
    if model in ("gcn", "gin"):
        from pertstore.producers.graph.gnn import GNNParams, train_gnn

        # full_graph would pass messages over the held-out edges this benchmark scores: train edges only here
        result = train_gnn(split, n, GNNParams(layer=model, full_graph=False, **cap))
        return result.embedding, len(result.history), 0.0
    from pertstore.producers.graph.wavegc import WaveGCParams, train_wavegc, training_eigenpairs

    params = WaveGCParams(**cap, **({} if eig_ratio is None else {"eig_ratio": eig_ratio}))
    t0 = time.perf_counter()
    eigenpairs = training_eigenpairs(split, n, params)
    setup = time.perf_counter() - t0
    result = train_wavegc(split, n, params, eigenpairs)
    return result.embedding, len(result.history), setup


def _run(model: str, epochs: int | None, eig_ratio: float | None, out: mp.Queue) -> None:
    torch.set_num_threads(1)
    graph = _graph()
    split = split_edges(graph, 0.1, seed=0)
    with seeded(0):
        from torch_geometric.utils import negative_sampling

        both = torch.cat([split.train, split.val], 1)
        neg = negative_sampling(
            torch.cat([both, both.flip(0)], 1), num_nodes=graph.n, num_neg_samples=split.val.shape[1]
        )
    t0, c0 = time.perf_counter(), time.process_time()
    emb, ran, setup = _embed(model, split, graph.n, epochs, eig_ratio)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    z = torch.from_numpy(np.asarray(emb, dtype=np.float64))
    unit = z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)
    out.put(
        {
            "model": model,
            "n": graph.n,
            "edges": len(graph.rows),
            "auc_dot": link_auc(z, split.val, neg),
            "auc_cos": link_auc(unit, split.val, neg),
            "wall": wall,
            "cpu": cpu,
            "setup": setup,
            "epochs": ran,
            "rss_gb": peak_rss_gib(),
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--epochs", type=int, default=None, help="cap on epochs (default: each producer's own)")
    ap.add_argument(
        "--eig-ratio",
        type=float,
        default=None,
        help="WaveGC's share of Laplacian eigenpairs (default: the producer's 0.05)",
    )
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    for model in args.models.split(","):
        out = ctx.Queue()
        proc = ctx.Process(target=_run, args=(model, args.epochs, args.eig_ratio, out))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            print(f"{model:9s} failed (exit code {proc.exitcode})", flush=True)
            continue
        r = out.get()
        per_epoch = (
            (
                f"{(r['wall'] - r['setup']) / r['epochs']:6.2f} s/epoch x {r['epochs']:3d} after "
                f"{r['setup']:.1f} s set-up"
            )
            if r["epochs"]
            else ""
        )
        print(
            f"{model:9s} AUC dot {r['auc_dot']:.3f} cos {r['auc_cos']:.3f} | {r['wall']:7.1f} s "
            f"(CPU {r['cpu']:7.1f} s) {per_epoch} | "
            f"peak RSS {r['rss_gb']:.2f} GiB  ({r['n']} genes, {r['edges']} edges)",
            flush=True,
        )


if __name__ == "__main__":
    main()
