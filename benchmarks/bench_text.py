"""Text-encoder throughput: all-MiniLM-L6-v2 on the RefSeq gene summaries, PyTorch vs ONNX Runtime.

The GenePT-style and drug-text producers spend their time in the transformer. This embeds the
first ``--n`` summaries of ``$PERTSTORE_DATA_DIR/genes/refseq_gene_summaries_human.tsv.gz`` with
the packaged model through :func:`encode_texts` under PyTorch (batch 64, the old default, and 16)
and ONNX Runtime (batch 16, the default), alternating the runs, and reports median seconds of
``--repeats`` runs, the speed-up and the largest difference from PyTorch's embeddings. One thread.

    python benchmarks/bench_text.py [--n 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from pertstore.producers.text import _sentence  # noqa: E402

from pertstore._config import get_settings  # noqa: E402

CONFIGS = [("torch, batch 64", "torch", 64), ("torch, batch 16", "torch", 16), ("onnx, batch 16", "onnx", 16)]


def encoder(runtime: str):
    _sentence.load_encoder.cache_clear()
    os.environ["PERTSTORE_TEXT_RUNTIME"] = runtime
    return _sentence.load_encoder(str(_sentence.default_model_dir()))  # export/loading not timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = get_settings().data_dir
    if not data:
        raise SystemExit("set PERTSTORE_DATA_DIR to the data directory (the Makefile uses ../shared/data)")
    table = pd.read_csv(f"{data}/genes/refseq_gene_summaries_human.tsv.gz", sep="\t")
    texts = table.summary.astype(str).tolist()[: args.n]
    seconds = {name: [] for name, _, _ in CONFIGS}
    values = {}
    for _ in range(args.repeats):
        for name, runtime, batch in CONFIGS:
            encoder(runtime)
            t0 = time.perf_counter()
            values[name] = _sentence.encode_texts(texts, batch_size=batch)
            seconds[name].append(time.perf_counter() - t0)
    base = statistics.median(seconds[CONFIGS[0][0]])
    print(f"{len(texts)} RefSeq summaries, all-MiniLM-L6-v2, one thread, medians of {args.repeats}")
    for name, _, _ in CONFIGS:
        med = statistics.median(seconds[name])
        diff = np.abs(values[name] - values[CONFIGS[0][0]]).max()
        print(f"  {name:16s} {med:7.2f} s  {base / med:5.2f}x  {len(texts) / med:6.1f} texts/s  max |diff| {diff:.1e}")


if __name__ == "__main__":
    main()
