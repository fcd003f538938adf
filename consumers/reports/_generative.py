"""The paper's Figure S14 view: each generative method beside kNN on the same embedding, per task and context.

Flow matching, DDPM and the Schrodinger bridge are conditioned on a store set, so each is paired with
kNN on that set, fold by fold; GEARS uses its own gene graph (set ``gears-go``), so it is placed beside
kNN on every set of its task and context. Only folds both models ran are compared.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pandas as pd

GENERATIVE = ("flow", "diffusion", "schrodinger", "gears")
"""The generative evaluators (``bench run --evaluator``)."""
GEARS_SET = "gears-go"
KEYS = ["task", "context", "fold"]


def generative_vs_knn(results: pd.DataFrame) -> pd.DataFrame:
    """Mean L2 over shared folds of each generative method and of kNN on the same set.

    Returns ``task, context, set, evaluator, value, knn, difference, train_mean, n_folds`` (``difference``
    = method - kNN: positive when the method is worse); empty without generative or kNN rows.
    """
    l2 = results[(results.metric == "l2") & (results.fold >= 0)]
    knn = l2[l2.evaluator == "knn"][[*KEYS, "set", "value"]].rename(columns={"value": "knn"})
    gen = l2[l2.evaluator.isin(GENERATIVE)][[*KEYS, "set", "evaluator", "value"]]
    columns = ["task", "context", "set", "evaluator", "value", "knn", "difference", "train_mean", "n_folds"]
    if gen.empty or knn.empty:
        return pd.DataFrame(columns=columns)
    on_set = gen[gen.set != GEARS_SET].merge(knn, on=[*KEYS, "set"])
    gears = gen[gen.set == GEARS_SET].drop(columns="set").merge(knn, on=KEYS)  # beside kNN on every set
    paired = pd.concat([on_set, gears], ignore_index=True)
    mean = l2[l2.set == "train_mean"][[*KEYS, "value"]].rename(columns={"value": "train_mean"})
    paired = paired.merge(mean, on=KEYS, how="left")
    table = (
        paired.groupby(["task", "context", "set", "evaluator"], sort=True)
        .agg(
            value=("value", "mean"), knn=("knn", "mean"), train_mean=("train_mean", "mean"), n_folds=("fold", "nunique")
        )
        .reset_index()
    )
    table["difference"] = table["value"] - table["knn"]
    return table[columns]


def generative_figures(results: pd.DataFrame, out: Path) -> list[tuple[str, str]]:
    """``generative_vs_knn.csv`` and one bar figure per (task, context); ``(title, base64 PNG)`` each."""
    table = generative_vs_knn(results)
    if table.empty:
        return []
    table.to_csv(out / "generative_vs_knn.csv", index=False)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    for (task, context), rows in table.groupby(["task", "context"], sort=True):
        sets = sorted(set(rows.set))
        methods = ["knn", *[m for m in GENERATIVE if m in set(rows.evaluator)]]
        width = 0.8 / len(methods)
        fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(sets) + 2), 3.2))
        for i, method in enumerate(methods):
            if method == "knn":
                values = rows.groupby("set").knn.mean().reindex(sets)
            else:
                values = rows[rows.evaluator == method].set_index("set").value.reindex(sets)
            ax.bar([j + i * width for j in range(len(sets))], values.to_numpy(), width, label=method)
        if rows.train_mean.notna().any():
            ax.axhline(rows.train_mean.mean(), color="grey", ls="--", lw=1, label="train mean")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(sets))], sets, rotation=20, ha="right")
        ax.set_ylabel("L2 (mean over folds, lower is better)")
        ax.set_title(f"{task} / {context}")
        ax.legend(fontsize=7, ncols=2)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        name = f"fig_s14_{task}_{context}".replace("/", "_").replace(" ", "_")
        (out / f"{name}.png").write_bytes(buf.getvalue())
        plt.close(fig)
        title = f"{task} / {context}: generative methods beside kNN on the same set (Figure S14; generative_vs_knn.csv)"
        figures.append((title, base64.b64encode(buf.getvalue()).decode()))
    return figures
