"""Error against dose for tasks whose contexts are doses (``recipe["dose_contexts"]``, e.g. the LJP task)."""

from __future__ import annotations

import pandas as pd

#: Primary metric per task kind and whether lower is better.
PRIMARY = {"l2": True, "f1": False}


def dose_table(results: pd.DataFrame, dose_contexts: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Mean over folds of the primary metric per (task, set, evaluator, dose).

    Parameters
    ----------
    results
        Result rows (``bench results``).
    dose_contexts
        Per task, its ``recipe["dose_contexts"]``: context -> dose.

    Returns
    -------
    ``task, dose, set, evaluator, metric, value, n_folds``, for the tasks with doses.
    """
    frames = []
    for task, doses in dose_contexts.items():
        rows = results[(results.task == task) & results.metric.isin(list(PRIMARY)) & results.context.isin(doses)]
        if rows.empty:
            continue
        mean = rows.groupby(["context", "set", "evaluator", "metric"]).value.agg(["mean", "count"]).reset_index()
        mean["dose"] = mean["context"].map(doses)
        frames.append(mean.rename(columns={"mean": "value", "count": "n_folds"}).assign(task=task))
    columns = ["task", "dose", "set", "evaluator", "metric", "value", "n_folds"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def plot_dose_curves(table: pd.DataFrame, task: str):
    """One line per set and evaluator of the primary metric against dose (log scale); the train mean
    (the context mean of each dose) dashed, the experimental error dotted where the task has one."""
    import matplotlib.pyplot as plt

    rows = table[table.task == task]
    metric = rows.metric.iloc[0]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for (name, evaluator), g in rows.groupby(["set", "evaluator"]):
        g = g.sort_values("dose")
        label = name if evaluator == "none" else f"{name} / {evaluator}"
        style = {
            "train_mean": dict(color="black", linestyle="--", linewidth=2),
            "experimental_error": dict(color="grey", linestyle=":", linewidth=2),
        }.get(name, {"marker": "o"})
        if name in ("no_change", "idealised"):
            continue
        ax.plot(g["dose"], g["value"], label=label, **style)
    ax.set_xscale("log")
    ax.set_xlabel("dose")
    ax.set_ylabel(f"{metric.upper()} ({'lower' if PRIMARY[metric] else 'higher'} is better; mean over folds)")
    ax.set_title(f"{task}: error against dose")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig
