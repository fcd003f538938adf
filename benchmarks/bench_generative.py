"""Generative baselines beside kNN on the same embedding and folds (the paper's Figure S14 view), with costs.

Real data: the Norman 2019 K562 CRISPRa cells of the data directory (PerturBench's development subset:
18 single perturbations x 500 genes after the norman preset, 100 control cells in 8 gem groups), the
task built with `pertstore tasks build --preset norman`, and the string-spectral set (STRING v12). For
kNN, each generative method and GEARS (its own GO graph, no set): mean L2 over the 5 folds, training
seconds per epoch (GEARS: training seconds only), prediction seconds per perturbation and the process's peak resident memory while the method ran. Short runs: the CPU
defaults of GenerativeConfig (or ``--option epochs=...``), not the paper's sizes.

    python benchmarks/bench_generative.py [--store benchmarks/_work/generative/store] [--methods flow diffusion gears]
        [--option epochs=10 ...] [--gears-option epochs=1 ...]

The store is built there when it lacks the task or the set (about a minute).
"""

from __future__ import annotations

import argparse
import json
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

TASK, SET, CELLS = "norman-lfc", "string-spectral", "perturb/norman2019_mcfaline2023_devel.h5ad"


def build(store: Path, data: Path) -> None:
    """Create the store, compute the set and build the task (each step skipped when done)."""
    cli = [sys.executable, "-m", "pertstore.cli"]
    if not (store / "catalog.duckdb").exists():
        subprocess.run([*cli, "init", str(store)], check=True)
    recipes = store.parent / "bench_generative_recipes.yaml"
    recipes.write_text(
        yaml.safe_dump(
            {
                "recipes": [
                    {
                        "producer": "string-spectral",
                        "source": SET,
                        "params": {"dims": 128},
                        "max_failed": 0.2,
                        "inputs": {"network": str(data / "network/string_v12_human_notextmining.tsv.gz")},
                    }
                ]
            }
        )
    )
    subprocess.run([*cli, "jobs", "submit", str(recipes), "--store", str(store)], check=True)
    from pertstore.consumers.tasks import list_tasks

    from pertstore import Store

    with Store.open(store) as s:
        if TASK not in set(list_tasks(s)["name"]):
            s.tasks.build(
                data / CELLS,
                name=TASK,
                preset="norman",
                batch_from_barcode=True,
                obs_filter={"dataset": ["norman19"]},
                build_options={"trials": 0},
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from pertstore._config import get_settings

    ap.add_argument("--store", type=Path, default=Path(__file__).parent / "_work" / "generative" / "store")
    ap.add_argument("--data", type=Path, default=get_settings().data_dir, help="default: PERTSTORE_DATA_DIR")
    ap.add_argument("--methods", nargs="+", default=["flow", "diffusion", "schrodinger"])
    ap.add_argument("--option", "-o", action="append", default=[], help="generative setting KEY=VALUE")
    ap.add_argument("--gears-option", action="append", default=[], help="GEARS setting KEY=VALUE (--methods gears)")
    args = ap.parse_args()
    if args.data is None:
        ap.error("give --data or set PERTSTORE_DATA_DIR (the folder holding perturb/)")
    build(args.store, args.data)

    import torch
    from pertstore.consumers.evaluators import Plan, results, run_plan
    from pertstore.consumers.generative import GenerativeConfig
    from pertstore.consumers.generative._gears import GearsConfig

    from pertstore import Store

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    options = {k: yaml.safe_load(v) for k, _, v in (o.partition("=") for o in args.option)}
    config = GenerativeConfig(**options)
    gears_options = {k: yaml.safe_load(v) for k, _, v in (o.partition("=") for o in args.gears_option)}
    configs = {m: config.model_dump() for m in args.methods} | {"gears": GearsConfig(**gears_options).model_dump()}
    with Store.open(args.store) as s:
        t0 = time.perf_counter()
        run_plan(s, Plan(task=TASK, sets=[SET], evaluators=["knn"]))
        print(f"task {TASK}, set {SET}; kNN and controls: {time.perf_counter() - t0:.1f} s for 5 folds")
        peaks = {}
        for method in args.methods:
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to what is resident now
            run_plan(
                s,
                Plan(
                    task=TASK,
                    sets=[SET],
                    evaluators=[method],
                    controls=False,
                    cells=str(args.data / CELLS),
                    generative=options,
                    gears=gears_options,
                ),
            )
            peaks[method] = peak_rss_gib()
        rows = results(s, TASK)
    l2 = rows[rows.metric == "l2"]
    print(f"generative settings: {config.model_dump()}")
    if "gears" in args.methods:
        print(f"GEARS settings: {configs['gears']}")
    print(
        f"{'set / evaluator':<34} {'L2 (mean of folds)':>18} {'s/epoch':>8} {'train s':>8} {'pred s/pert':>11} "
        f"{'peak GiB':>9}"
    )
    for (source, ev), group in l2.groupby(["set", "evaluator"]):
        if ev in args.methods:
            chosen = [json.loads(c) for c in group.chosen]
            if any(c.get("config") != configs[ev] for c in chosen):
                continue  # runs stored with other settings
            cost = (
                f"{np.mean([c.get('seconds_per_epoch', np.nan) for c in chosen]):>8.2f} "
                f"{np.mean([c['train_seconds'] for c in chosen]):>8.1f} "
                f"{np.mean([c['predict_seconds_per_perturbation'] for c in chosen]):>11.2f} "
                f"{peaks.get(ev, float('nan')):>9.2f}"
            )
        else:
            cost = f"{'':>8} {group.seconds.mean():>8.2f} {'':>11} {'':>9}"
        print(f"{source + ' / ' + ev:<34} {group.value.mean():>18.4f} {cost}")
    print(f"{torch.get_num_threads()} torch thread(s)")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f} s")
