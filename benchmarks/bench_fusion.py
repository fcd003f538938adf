"""Fusion vs the best single set on a real task: L2 on the same folds, wall time and memory per epoch.

Real data, tasks built as the demo builds them (``pertstore._demo.DEMO_TASKS``): the Papalexi THP-1 CRISPR KO
task (25 perturbations x 299 genes; sets string-spectral from the STRING v12 network, genept from RefSeq
summaries with the bundled MiniLM, control-pca of THP-1 control cells) or the CMap shRNA knockdown L1000 task
(``--task cmap-knockdown-lfc``: 85 perturbations x 976 genes, one plate; sets string-spectral, genept, go-vae
and string-node2vec with the demo's settings). For each set, kNN (the paper's evaluator) per fold; then the
fusion model over all sets on the same folds, once per seed; reports the median over seeds of the mean L2 over
folds, the report's Figure 5 numbers (gap closed of fusion and of the best single set, medians over folds,
``consumers/reports``), the seconds per epoch and the process's peak resident memory.

    python benchmarks/bench_fusion.py [--store benchmarks/_work/fusion/store] [--task cmap-knockdown-lfc] [--seeds 3]
        [--variant simple] [--option max_epochs=20 ...] [--tuned]
    python benchmarks/bench_fusion.py --scale 2000 9 6640 [--variant full]   # time per epoch, synthetic

The store is built there when it lacks the task or a set (minutes: genept embeds ~20k summaries).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402
import yaml  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _memory import peak_rss_gib  # noqa: E402

#: The sets fused on each task (at least three real gene sets covering its perturbations).
TASK_SETS = {
    "papalexi-lfc": ["string-spectral", "genept", "control-pca"],
    "cmap-knockdown-lfc": ["string-spectral", "genept", "go-vae", "string-node2vec"],
}


def _recipes(data: Path, sets: list[str]) -> dict:
    """The sets' recipes (string-node2vec and go-vae with ``recipes/demo.yaml``'s fast settings)."""
    network = str(data / "network/string_v12_human_notextmining.tsv.gz")
    recipes = {
        "string-spectral": {
            "producer": "string-spectral",
            "params": {"dims": 128},
            "max_failed": 0.2,
            "inputs": {"network": network},
        },
        "string-node2vec": {
            "producer": "string-node2vec",
            "inputs": {"network": network},
            "params": {
                "dims": 128,
                "walk_length": 20,
                "context_size": 10,
                "walks_per_node": 10,
                "p": 1.0,
                "q": 1.0,
                "num_negative_samples": 1,
            },
        },
        "go-vae": {
            "producer": "go-vae",
            "params": {"latent": 128, "epochs": 5},
            "max_failed": 0.2,
            "inputs": {
                "annotations": str(data / "genes/go_annotations_human.tsv.gz"),
                "terms": str(data / "genes/go_terms.tsv.gz"),
            },
        },
        "genept": {
            "producer": "genept",
            "max_failed": 0.5,
            "inputs": {"summaries": str(data / "genes/refseq_gene_summaries_human.tsv.gz")},
        },
        "control-pca": {
            "producer": "control-pca",
            "params": {"dims": 64},
            "contexts": ["THP-1"],
            "max_failed": 0.2,
            "inputs": {"cells": str(data / "perturb/papalexi2021_thp1_crispr_ko.h5ad")},
        },
    }
    return {"recipes": [{"source": name, **recipes[name]} for name in sets]}


def build(store: Path, data: Path, task_name: str) -> None:
    """Create the store, compute the task's sets and build the task as the demo does (each step skipped when
    done)."""
    from pertstore.consumers.tasks import list_tasks

    from pertstore import Store
    from pertstore._demo import DEMO_TASKS

    cli = [sys.executable, "-m", "pertstore.cli"]
    if not (store / "catalog.duckdb").exists():
        subprocess.run([*cli, "init", str(store)], check=True)
    recipes = store.parent / "bench_fusion_recipes.yaml"
    recipes.write_text(yaml.safe_dump(_recipes(data, TASK_SETS[task_name])))
    subprocess.run([*cli, "jobs", "submit", str(recipes), "--store", str(store)], check=True)
    with Store.open(store) as s:
        if task_name not in set(list_tasks(s)["name"]):
            _, rel, kind, options = next(t for t in DEMO_TASKS if t[0] == task_name)
            s.tasks.build(data / rel, name=task_name, kind=kind, **options)


def scale(n: int, n_sources: int, genes: int, variant: str) -> None:
    """Seconds per epoch and peak memory on synthetic inputs (random values, 20% of sources missing)."""
    import torch
    from pertstore.consumers.fusion import FusionConfig, FusionInputs, FusionPredictor

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    rng = np.random.default_rng(0)
    dims = [int(d) for d in rng.choice([128, 256, 512, 768, 1024], size=n_sources)]
    present = rng.random((n, n_sources)) > 0.2
    present[:, 0] = True
    x = FusionInputs(
        [f"s{i}" for i in range(n_sources)],
        [rng.normal(size=(n, d)).astype(np.float32) for d in dims],
        present,
        rng.integers(0, 4, n),
        ["a", "b", "c", "d"],
    )
    y = rng.normal(size=(n, genes)).astype(np.float32)
    before = peak_rss_gib()
    Path("/proc/self/clear_refs").write_text("5")
    model = FusionPredictor(FusionConfig.preset(variant, "lfc", max_epochs=3)).fit(x, y)
    print(
        f"synthetic {n} perturbations x {n_sources} sources (dims 128-1,024) x {genes} genes, {variant}: "
        f"{np.median([h['seconds'] for h in model.history]):.2f} s per epoch (median of 3), peak RSS while "
        f"training {peak_rss_gib():.2f} GiB (inputs loaded: {before:.2f} GiB), {torch.get_num_threads()} thread(s)"
    )


def _figure_5(l2, fold_l2: list[float], folds: list[int], sets: list[str], context: str) -> None:
    """The report's Figure 5 numbers (``consumers/reports``: medians over folds, gap closed) for the fusion run of
    the median seed against the kNN runs and the controls."""
    import pandas as pd
    from pertstore.consumers.reports import fusion_vs_best, gap_closed

    label = "fusion(" + ",".join(sets) + ")"
    fused = pd.DataFrame(
        {
            "task": l2.task.iloc[0],
            "task_version": l2.task_version.iloc[0],
            "context": context,
            "fold": folds,
            "set": label,
            "evaluator": "fusion",
            "metric": "l2",
            "value": fold_l2,
        }
    )
    for r in fusion_vs_best(gap_closed(pd.concat([l2, fused], ignore_index=True))).itertuples():
        print(
            f"Figure 5 (medians over folds, median seed): fusion {r.fusion_median:.4f} (gap closed "
            f"{r.gap_closed_fusion:+.3f}) vs best single set {r.best_set} / kNN {r.best_median:.4f} "
            f"({r.gap_closed_best:+.3f}); train mean {r.train_mean:.4f}, experimental error "
            f"{r.experimental_error:.4f}; gain {r.gain:+.3f}, remaining gap closed {r.remaining_gap_closed:+.3f}"
        )


def main() -> None:
    from pertstore._config import get_settings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=Path(__file__).parent / "_work" / "fusion" / "store")
    ap.add_argument("--data", type=Path, default=get_settings().data_dir, help="default: PERTSTORE_DATA_DIR")
    ap.add_argument("--task", default="papalexi-lfc", choices=sorted(TASK_SETS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--variant", default="simple")
    ap.add_argument("--option", "-o", action="append", default=[], help="fusion setting KEY=VALUE")
    ap.add_argument(
        "--tuned",
        action="store_true",
        help="start from the best configuration of the stored study "
        "(`pertstore fusion tune --task task_name --set ...` first)",
    )
    ap.add_argument(
        "--scale",
        type=int,
        nargs=3,
        metavar=("PERTS", "SOURCES", "GENES"),
        help="instead: seconds and memory per epoch on synthetic data of this size (said so)",
    )
    args = ap.parse_args()
    if args.scale:
        return scale(*args.scale, args.variant)
    if args.data is None:
        ap.error("the real tasks need the data directory: set PERTSTORE_DATA_DIR or pass --data")
    build(args.store, args.data, args.task)
    task_name, sets = args.task, TASK_SETS[args.task]

    import torch
    from pertstore.consumers.evaluators import Plan, run_plan
    from pertstore.consumers.evaluators._metrics import regression_metrics
    from pertstore.consumers.fusion import FusionPredictor, plan_config, task_inputs
    from pertstore.consumers.tasks import load_task

    from pertstore import Store

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    options = {k: yaml.safe_load(v) for k, _, v in (o.partition("=") for o in args.option)}
    with Store.open(args.store) as s:
        task = load_task(s, task_name)
        contexts = sorted(set(task.contexts))
        knn = run_plan(s, Plan(task=task_name, sets=sets, evaluators=["knn"]))  # stored; a rerun reads the catalog
        from pertstore.consumers.evaluators import results

        rows = results(s, task_name)
        l2 = rows[(rows.metric == "l2") & rows.evaluator.isin(["knn", "none"]) & (rows.fold >= 0)]
        per_set = l2.groupby("set").value.mean()
        data = task_inputs(s, task, sets, contexts)
        base, origin = plan_config(s, task_name, "lfc", sets, {**options, "variant": args.variant, "tuned": args.tuned})
    del knn
    folds = sorted(set(data.folds.tolist()) - {-1})
    print(
        f"task {task_name}: {len(task.pert_ids)} perturbations x {len(task.gene_ids)} genes, {len(folds)} folds; "
        f"sets {', '.join(sets)} (coverage: "
        + ", ".join(f"{n} {int(data.x.present[:, i].sum())}" for i, n in enumerate(data.x.sources))
        + ")"
    )
    for name, value in per_set.sort_values().items():
        print(f"  kNN / control {name:>18}: mean L2 over folds {value:.4f}")
    best_set = per_set[[n for n in sets if n in per_set.index]].idxmin()
    fusion_l2, per_fold, seconds, epochs = [], [], [], []
    before = peak_rss_gib()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM): what follows is fusion's
    for seed in range(args.seeds):
        fold_l2 = []
        for fold in folds:
            config = base.model_copy(update={"seed": seed})
            train = (data.folds != fold) & data.covered
            test = data.folds == fold
            model = FusionPredictor(config).fit(
                data.x.subset(data.position[train]), data.y[train], groups=data.groups[train]
            )
            pred = np.tile(data.y[data.folds != fold].mean(axis=0), (int(test.sum()), 1))
            has = data.covered[test]
            pred[has] = model.predict(data.x.subset(data.position[test][has]))
            fold_l2.append(regression_metrics(data.y[test], pred)["l2"])
            seconds += [h["seconds"] for h in model.history]
            epochs.append(len(model.history))
        fusion_l2.append(float(np.mean(fold_l2)))
        per_fold.append(fold_l2)
        print(
            f"  fusion seed {seed}: mean L2 over folds {fusion_l2[-1]:.4f} (per fold "
            + ", ".join(f"{v:.3f}" for v in fold_l2)
            + ")"
        )
    median = float(np.median(fusion_l2))
    best = float(per_set[best_set])
    print(
        f"fusion ({origin}, {options or 'reference defaults'}; depth {base.depth}, lr {base.lr:.3g}, "
        f"{base.context_injection}): median over {args.seeds} seeds {median:.4f}; "
        f"best single set {best_set} (kNN) {best:.4f}; train mean {per_set.get('train_mean', float('nan')):.4f}; "
        f"fusion - best = {median - best:+.4f} ({(median - best) / best:+.1%})"
    )
    if len(contexts) == 1:
        _figure_5(l2, per_fold[int(np.argsort(fusion_l2)[len(fusion_l2) // 2])], folds, sets, contexts[0])
    print(
        f"epochs per fit: median {int(np.median(epochs))} (max {max(epochs)}); wall time per epoch: median "
        f"{np.median(seconds):.3f} s; peak RSS while training {peak_rss_gib():.2f} GiB (before: {before:.2f} GiB, "
        "store and kNN runs); "
        f"{torch.get_num_threads()} thread(s)"
    )


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f} s")
