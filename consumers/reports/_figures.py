"""The report's figures (PNG and SVG, as the paper's notebooks draw them): Figures 1, 2 and 5 and the dose curves."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd
from pertstore.consumers.reports._dose import dose_table, plot_dose_curves
from pertstore.consumers.reports._tables import (
    EMBEDDING,
    FUSION,
    NEGATIVE,
    POSITIVE,
    _lower,
    _primary,
    best_model,
    families,
    ranks,
)


def plot_label(label: str, width: int = 48) -> str:
    """A label short enough for a figure's axis: a long fusion's set list is cut after two sets."""
    if len(label) <= width or not label.startswith("fusion("):
        return label
    sets, _, evaluator = label[len("fusion(") :].partition(")")
    names = sets.split(",")
    if len(names) <= 2:
        return label
    return f"fusion({', '.join(names[:2])}, ... {len(names)} sets){evaluator}"


#: The reference's ``genes_model_type_palette`` (``results/metadata/save_figure_index.py``).
PALETTE = {NEGATIVE: "#729ECE", POSITIVE: "#FF9E4A", EMBEDDING: "#67BF5C", FUSION: "#ED97CA"}


def dose_figures(results: pd.DataFrame, store, out: Path) -> list[tuple[str, str]]:
    """The error-against-dose figure of every task whose contexts are doses (``recipe["dose_contexts"]``)."""
    import json

    tasks = store.catalog.tasks.recipes()
    used = set(zip(results.task, results.task_version))
    doses = {}
    for name, version, recipe in tasks.itertuples(index=False):
        contexts = json.loads(recipe).get("dose_contexts") if (name, version) in used else None
        if contexts:
            doses[name] = contexts
    table = dose_table(results, doses)
    figures = []
    for task in sorted(set(table.task)):
        _pyplot()
        table[table.task == task].to_csv(out / f"dose_{task}.csv", index=False)
        figures.append(
            (
                f"{task}: error against dose (a line per set; dashed: the train mean of each dose)",
                _fig_to_files(plot_dose_curves(table, task), out, f"fig_dose_{task}"),
            )
        )
    return figures


def _fig_to_files(fig, out: Path, name: str) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    (out / f"{name}.png").write_bytes(buf.getvalue())
    fig.savefig(out / f"{name}.svg", bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _file_name(*parts: str) -> str:
    return "_".join(parts).replace("/", "_").replace("@", "_").replace(" ", "_")


def _entry(rows: pd.DataFrame) -> pd.Series:
    """Axis labels inside one evaluator's figure: the set names (the figure's title names the evaluator)."""
    return rows.set.map(plot_label)


def _order(rows: pd.DataFrame) -> list[str]:
    """Box order: negative controls, sets (worst to best median), positive controls, fusion."""
    med = rows.groupby("entry").value.median().sort_values(ascending=not _lower(rows))
    kind = rows.groupby("entry").type.first()
    rank = {NEGATIVE: 0, EMBEDDING: 1, POSITIVE: 2, FUSION: 3}
    return sorted(med.index, key=lambda e: (rank[kind[e]], list(med.index).index(e)))


def boxplots(results: pd.DataFrame, out: Path, producers: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """Figure 1 (``fig_1.ipynb``): per task and evaluator, one panel per context, a box per entry with whiskers at
    min and max, the folds as points and dashed lines at the medians of train mean, experimental error and best."""
    plt = _pyplot()
    import seaborn as sns

    figures = []
    for task, ev, fam in families(_primary(results, producers)):
        fam = fam.assign(entry=_entry(fam))
        contexts = sorted(fam.context.unique())
        order = _order(fam)
        cols = min(4, len(contexts))
        nrows = -(-len(contexts) // cols)
        fig, axes = plt.subplots(
            nrows, cols, figsize=(2 + 4.5 * cols, nrows * (0.32 * len(order) + 1.5)), squeeze=False, sharey=True
        )
        for ax in axes.flat[len(contexts) :]:
            ax.set_visible(False)
        for i, (ax, context) in enumerate(zip(axes.flat, contexts)):
            g = fam[fam.context == context]
            hues = [h for h in PALETTE if h in set(g.type)]
            sns.boxplot(
                data=g,
                y="entry",
                x="value",
                order=order,
                hue="type",
                hue_order=hues,
                ax=ax,
                whis=(0, 100),
                width=0.65,
                palette=PALETTE,
            )
            sns.stripplot(data=g, y="entry", x="value", order=order, color="black", alpha=0.5, ax=ax)
            lines = [("train_mean", NEGATIVE), ("experimental_error", POSITIVE)]
            best = best_model(g)
            if best is not None:
                lines.append((best, g[g.label == best].type.iloc[0]))
            for label, kind in lines:
                level = g[g.label == label].value.median()
                if np.isfinite(level):
                    ax.axvline(level, color=PALETTE[kind], linestyle="--", linewidth=1, zorder=99, alpha=0.75)
            ax.grid(axis="y")
            ax.set(ylabel=None, title=context or task, xlabel="Macro F1" if g.metric.iloc[0] == "f1" else "L2")
            if i > 0 and ax.get_legend() is not None:
                ax.get_legend().remove()
            elif ax.get_legend() is not None:
                ax.legend(title=None, fontsize=8)
        fig.suptitle(f"{task} - {ev}")
        title = (
            f"{task} / {ev}: {fam.metric.iloc[0]} per fold (lines: medians of train mean, experimental error, "
            "best model)"
        )
        figures.append((title, _fig_to_files(fig, out, _file_name("fig1", task, ev))))
    return figures


def rank_plot(results: pd.DataFrame, out: Path, producers: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """Figure 2 (``fig_2.ipynb``): per task and evaluator, each entry's ranks over (context, fold)."""
    plt = _pyplot()
    import seaborn as sns
    from matplotlib import ticker

    ranked = ranks(results, producers)
    figures = []
    if ranked.empty:
        return figures
    for (task, ev), fam in ranked.groupby(["task", "evaluator_family"], sort=True):
        fam = fam.assign(entry=_entry(fam))
        order = fam.groupby("entry")["rank"].median().sort_values(ascending=False).index.tolist()
        hues = [h for h in PALETTE if h in set(fam.type)]
        fig, ax = plt.subplots(figsize=(8, 0.32 * len(order) + 1.5))
        sns.boxplot(
            data=fam,
            y="entry",
            x="rank",
            order=order,
            hue="type",
            hue_order=hues,
            ax=ax,
            width=0.75,
            palette=PALETTE,
            showfliers=False,
        )
        sns.stripplot(data=fam, y="entry", x="rank", order=order, ax=ax, s=3, alpha=0.5, color="black", jitter=0.05)
        ax.xaxis.set_minor_locator(ticker.AutoMinorLocator())
        ax.set(ylabel="", xlabel=f"Rank of {fam.metric.iloc[0].upper()} (1 = best)", title=f"{task} - {ev}")
        ax.grid(axis="y")
        sns.despine(fig)
        figures.append(
            (f"{task} / {ev}: ranks per (context, fold)", _fig_to_files(fig, out, _file_name("fig2_ranks", task, ev)))
        )
    return figures


def fusion_plot(table: pd.DataFrame, out: Path) -> list[tuple[str, str]]:
    """Figure 5 (the paper's fusion figure): per (task, context, evaluator family), the gap closed of the best
    single set and of each fusion run as bars, 0 at the train mean and 1 at the experimental error (dashed);
    a bar left of 0 is worse than the train mean, a fusion bar shorter than the best set's is worse than it."""
    plt = _pyplot()
    drawn = table[table.gap_closed_fusion.notna() & table.gap_closed_best.notna()]
    if drawn.empty:
        return []
    groups = list(drawn.groupby(["task", "context", "evaluator_family"], sort=True))
    fig, ax = plt.subplots(figsize=(9, 0.3 * sum(1 + len(g) for _, g in groups) + 1.5))
    y, ticks, labels = 0.0, [], []
    for (task, context, family), g in groups:
        bars = [
            (
                f"best single: {g.best_set.iloc[0]} / {family}",
                g.gap_closed_best.iloc[0],
                EMBEDDING,
                g.best_median.iloc[0],
            )
        ]
        bars += [
            (f"{plot_label(r.fusion)} / {r.fusion_evaluator}", r.gap_closed_fusion, FUSION, r.fusion_median)
            for r in g.itertuples()
        ]
        for text, gap, kind, median in bars:
            ax.barh(y, gap, color=PALETTE[kind], height=0.8)
            ax.annotate(
                f"{gap:+.3f} ({g.metric.iloc[0]} {median:.4g})",
                (max(gap, 0), y),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                ha="left",
                fontsize=7,
            )
            ticks.append(y)
            labels.append(f"{task} / {context or '-'}: {text}" if kind == EMBEDDING else text)
            y += 1
        y += 0.6
    ax.axvline(0, color=PALETTE[NEGATIVE], linestyle="--", linewidth=1, label="train mean (0)")
    ax.axvline(1, color=PALETTE[POSITIVE], linestyle="--", linewidth=1, label="experimental error (1)")
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("gap closed: (median train mean - median) / (median train mean - median experimental error)")
    ax.set_title("Fusion vs the best single set (medians over folds)")
    ax.legend(fontsize=8, loc="lower right")
    return [
        (
            "Fusion vs the best single set per task and context: gap closed (Figure 5 view; fusion_vs_best.csv)",
            _fig_to_files(fig, out, "fig5_fusion_vs_best"),
        )
    ]
