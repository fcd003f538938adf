"""The paper's Figures S12/S13 view: cross-context models side by side, one panel per metric.

Cross-context rows (``bench run --setting zeroshot|fewshot``) have evaluator ``xc-<setting>``, the held-out
cell line as context and the model in ``set``: an embedding set (the MLP on it), ``state(<set>)``,
``onehot``, ``context_mean`` or ``cross_knn``. The reference's tables (``fig_A12_A13_cross_context``) give
each model's mean of MAE, overlap at N and the L1 discrimination score over the held-out cell lines;
here each value is first averaged over the folds of a held-out context, then over contexts (the dots).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pandas as pd

METRICS = {
    "mae": ("MAE (lower is better)", False),
    "overlap_at_n": ("overlap at N of the top genes (higher is better)", True),
    "discrimination_l1": ("discrimination score, L1 (higher is better)", True),
}
"""The S12/S13 metrics: label and whether higher is better."""
PREFIX = "xc-"


def model_label(source: str) -> str:
    """How a cross-context model is named in the figures."""
    if source.startswith("state(") and source.endswith(")"):
        return f"STATE on {source[len('state(') : -1]}"
    return {"onehot": "MLP on one-hot codes", "context_mean": "context mean", "cross_knn": "cross-context kNN"}.get(
        source, f"MLP on {source}"
    )


def _per_context(results: pd.DataFrame) -> pd.DataFrame:
    """Cross-context rows of the S12/S13 metrics averaged over folds: one ``value`` (and ``folds``) per
    (task, evaluator, set, metric, held-out context)."""
    rows = results[results.evaluator.astype(str).str.startswith(PREFIX) & results.metric.isin(list(METRICS))]
    keys = ["task", "evaluator", "set", "metric", "context"]
    return rows.groupby(keys, sort=True).agg(value=("value", "mean"), folds=("fold", "nunique")).reset_index()


def cross_context_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per (task, setting, model, metric): the mean and standard deviation over held-out contexts of the
    per-context means over folds, and the number of contexts and folds.

    Returns ``task, setting, model, set, metric, mean, std, n_contexts, n_folds``; empty without
    cross-context rows.
    """
    columns = ["task", "setting", "model", "set", "metric", "mean", "std", "n_contexts", "n_folds"]
    per_context = _per_context(results)
    if per_context.empty:
        return pd.DataFrame(columns=columns)
    table = (
        per_context.groupby(["task", "evaluator", "set", "metric"], sort=True)
        .agg(mean=("value", "mean"), std=("value", "std"), n_contexts=("value", "size"), n_folds=("folds", "sum"))
        .reset_index()
    )
    table["setting"] = table.evaluator.str[len(PREFIX) :]
    table["model"] = table.set.map(model_label)
    return table[columns]


def cross_context_figures(results: pd.DataFrame, out: Path) -> list[tuple[str, str]]:
    """``cross_context.csv`` and one figure per (task, setting): a panel per metric, a bar per model
    (mean over held-out contexts), a dot per context. ``(title, base64 PNG)`` each."""
    table = cross_context_table(results)
    if table.empty:
        return []
    table.to_csv(out / "cross_context.csv", index=False)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dots = _per_context(results)
    figures = []
    for (task, setting), group in table.groupby(["task", "setting"], sort=True):
        models = sorted(set(group.set), key=lambda s: (s.startswith("state("), s in ("onehot", "context_mean"), s))
        metrics = [m for m in METRICS if m in set(group.metric)]
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 0.45 * len(models) + 1.6), sharey=True)
        axes = [axes] if len(metrics) == 1 else list(axes)
        for ax, metric in zip(axes, metrics):
            values = group[group.metric == metric].set_index("set").reindex(models)
            ax.barh(range(len(models)), values["mean"].to_numpy(), 0.6, color="#8fb3d9", xerr=values["std"].fillna(0))
            points = dots[(dots.task == task) & (dots.evaluator == PREFIX + setting) & (dots.metric == metric)]
            for i, model in enumerate(models):
                ys = points[points.set == model].value
                ax.scatter(ys, [i] * len(ys), s=12, color="#1f3b73", zorder=3)
            ax.set_title(METRICS[metric][0], fontsize=9)
        axes[0].set_yticks(range(len(models)), [model_label(m) for m in models])
        axes[0].invert_yaxis()
        fig.suptitle(
            f"{task}: {setting} (held-out cell lines; a dot per cell line, bars: their mean)", fontsize=10, y=1.0
        )
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        name = f"fig_s12_s13_{task}_{setting}".replace("/", "_").replace(" ", "_")
        (out / f"{name}.png").write_bytes(buf.getvalue())
        title = f"{task} / {setting}: cross-context models side by side (Figures S12/S13; cross_context.csv)"
        figures.append((title, base64.b64encode(buf.getvalue()).decode()))
    return figures
