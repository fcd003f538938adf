"""The benchmark report: tables and the paper's figures, as PNG/SVG and one self-contained HTML page."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import pandas as pd

CONTROL_SETS = ("train_mean", "no_change", "idealised", "experimental_error")


def _primary(results: pd.DataFrame) -> pd.DataFrame:
    """One row per run with its primary metric: L2 for LFC tasks, F1 for DEG tasks."""
    prim = results[results.metric.isin(["l2", "f1"])].copy()
    prim["label"] = prim["set"] + np.where(prim.evaluator == "none", "", " / " + prim.evaluator)
    return prim


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over folds of every metric per (task, context, set, evaluator), with gap closed."""
    table = (results.groupby(["task", "context", "set", "evaluator", "metric"]).value
             .agg(["mean", "std", "count"]).reset_index())
    return table


def gap_closed(results: pd.DataFrame) -> pd.DataFrame:
    """(L2_train_mean - L2) / (L2_train_mean - L2_experimental_error) per set and context (LFC tasks)."""
    l2 = results[results.metric == "l2"].groupby(["task", "context", "set", "evaluator"]).value.mean().reset_index()
    rows = []
    for (task, context), g in l2.groupby(["task", "context"]):
        base = g[g.set == "train_mean"].value
        floor = g[g.set == "experimental_error"].value
        if base.empty or floor.empty or float(base.iloc[0]) == float(floor.iloc[0]):
            continue
        for r in g.itertuples():
            if r.set in ("train_mean", "experimental_error"):
                continue
            rows.append({"task": task, "context": context, "set": r.set, "evaluator": r.evaluator,
                         "l2": r.value, "gap_closed": (base.iloc[0] - r.value) / (base.iloc[0] - floor.iloc[0])})
    return pd.DataFrame(rows, columns=["task", "context", "set", "evaluator", "l2", "gap_closed"])


def wilcoxon_vs_best_control(results: pd.DataFrame) -> pd.DataFrame:
    """Paired Wilcoxon signed-rank tests across folds of each set against the best control."""
    from scipy.stats import wilcoxon

    prim = _primary(results)
    prim = prim[prim.fold >= 0]
    rows = []
    for (task, context, metric), g in prim.groupby(["task", "context", "metric"]):
        better_low = metric == "l2"
        controls = g[g.set.isin(["train_mean", "no_change"])]
        if controls.empty:
            continue
        means = controls.groupby("label").value.mean()
        best = means.idxmin() if better_low else means.idxmax()
        ref = controls[controls.label == best].set_index("fold").value
        for label, s in g[~g.set.isin(CONTROL_SETS)].groupby("label"):
            paired = pd.concat([s.set_index("fold").value, ref], axis=1, join="inner").dropna()
            diff = paired.iloc[:, 0] - paired.iloc[:, 1]
            p = float(wilcoxon(diff).pvalue) if len(diff) >= 2 and (diff != 0).any() else float("nan")
            rows.append({"task": task, "context": context, "set": label, "control": best, "n_folds": len(diff),
                         "mean_difference": float(diff.mean()), "p_value": p})
    return pd.DataFrame(rows)


def plot_label(label: str, width: int = 48) -> str:
    """A label short enough for a figure's axis: a long fusion's set list is cut after two sets."""
    if len(label) <= width or not label.startswith("fusion("):
        return label
    sets, _, evaluator = label[len("fusion("):].partition(")")
    names = sets.split(",")
    return f"fusion({', '.join(names[:2])}, ... {len(names)} sets){evaluator}"


def _fig_to_files(fig, out: Path, name: str) -> str:
    fig.savefig(out / f"{name}.png", dpi=120, bbox_inches="tight")
    fig.savefig(out / f"{name}.svg", bbox_inches="tight")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def boxplots(results: pd.DataFrame, out: Path) -> list[tuple[str, str]]:
    """Figure 1: one box per set and evaluator, a point per fold, per task and context."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    figures = []
    prim = _primary(results)
    for (task, context), g in prim.groupby(["task", "context"]):
        folds = g[g.fold >= 0].assign(label=lambda d: d.label.map(plot_label))
        order = folds.groupby("label").value.mean().sort_values(ascending=g.metric.iloc[0] == "l2").index
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(order) + 1.5))
        sns.boxplot(data=folds, y="label", x="value", order=order, ax=ax, color="#cfe2f3", fliersize=0)
        sns.stripplot(data=folds, y="label", x="value", order=order, ax=ax, color="#1f4e79", size=3)
        floor = g[g.set == "experimental_error"].value
        if not floor.empty:
            ax.axvline(float(floor.iloc[0]), color="#c0392b", ls="--", label="experimental error")
            ax.legend(loc="lower right", fontsize=8)
        ax.set(title=f"{task} - {context}", xlabel=g.metric.iloc[0].upper(), ylabel="")
        name = f"fig1_{task}_{context}".replace("/", "_")
        figures.append((f"{task} / {context}: {g.metric.iloc[0]} per fold", _fig_to_files(fig, out, name)))
    return figures


def rank_plot(results: pd.DataFrame, out: Path) -> list[tuple[str, str]]:
    """Figure 2: distribution of each set's rank across (task, context, fold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    prim = _primary(results)
    prim = prim[(prim.fold >= 0) & ~prim.set.isin(["experimental_error"])]
    if prim.empty:
        return []
    prim["rank"] = prim.groupby(["task", "context", "fold", "metric"]).value.rank(
        ascending=True, method="average").where(prim.metric == "l2",
                                                prim.groupby(["task", "context", "fold", "metric"]).value.rank(ascending=False))
    prim["label"] = prim.label.map(plot_label)
    order = prim.groupby("label")["rank"].median().sort_values().index
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(order) + 1.5))
    sns.boxplot(data=prim, y="label", x="rank", order=order, ax=ax, color="#d9ead3")
    ax.set(title="rank across tasks, contexts and folds (1 = best)", xlabel="rank", ylabel="")
    return [("ranks", _fig_to_files(fig, out, "fig2_ranks"))]


def cca_similarity(store, sets: list[str], out: Path, *, n_components: int = 5, max_rows: int = 2000,
                   seed: int = 0) -> list[tuple[str, str]]:
    """Figure 3: mean canonical correlation between every pair of sets on their shared entities."""
    if len(sets) < 2:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns
    from sklearn.cross_decomposition import CCA
    from sklearn.decomposition import PCA

    # a contextual source is represented by its set of the first context
    opened = {s: store.open_set(s, version=str(store.ls(s).sort_values("context").version.iloc[0])) for s in sets}
    sim = pd.DataFrame(np.eye(len(sets)), index=sets, columns=sets)
    rng = np.random.default_rng(seed)
    for i, a in enumerate(sets):
        for b in sets[i + 1:]:
            shared = np.intersect1d(opened[a].ids, opened[b].ids)
            if len(shared) < 3 * n_components:
                sim.loc[a, b] = sim.loc[b, a] = np.nan
                continue
            shared = rng.choice(shared, min(max_rows, len(shared)), replace=False)
            xa = opened[a].rows(opened[a].positions(shared))
            xb = opened[b].rows(opened[b].positions(shared))
            k = min(n_components, xa.shape[1], xb.shape[1])
            xa = PCA(min(20, xa.shape[1], len(shared) - 1)).fit_transform(xa)
            xb = PCA(min(20, xb.shape[1], len(shared) - 1)).fit_transform(xb)
            u, v = CCA(k, max_iter=1000).fit(xa, xb).transform(xa, xb)
            corr = [abs(np.corrcoef(u[:, j], v[:, j])[0, 1]) for j in range(k)]
            sim.loc[a, b] = sim.loc[b, a] = float(np.mean(corr))
    sim.to_csv(out / "cca_similarity.csv")
    grid = sns.clustermap(sim.fillna(0), cmap="viridis", vmin=0, vmax=1, figsize=(2 + 0.5 * len(sets),) * 2)
    grid.fig.suptitle("CCA similarity of sets (shared entities)")
    return [("CCA similarity", _fig_to_files(grid.fig, out, "fig3_cca"))]


def write_report(results: pd.DataFrame, out: str | Path, *, store=None) -> Path:
    """Write tables, figures and ``report.html`` into ``out``; returns the HTML path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results.to_csv(out / "results.csv", index=False)
    table = summary_table(results)
    table.to_csv(out / "summary.csv", index=False)
    gaps = gap_closed(results)
    gaps.to_csv(out / "gap_closed.csv", index=False)
    tests = wilcoxon_vs_best_control(results)
    tests.to_csv(out / "wilcoxon.csv", index=False)
    figures = boxplots(results, out) + rank_plot(results, out)
    if store is not None:  # sets of the store (not controls, not fusion models)
        known = set(store.sources()["source"])
        figures += cca_similarity(store, sorted(set(results.set) & known), out)
    parts = ["<html><head><meta charset='utf-8'><title>pertstore benchmark report</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>",
             "<h1>pertstore benchmark report</h1>",
             f"<p>{len(results)} result rows; tasks: {html.escape(', '.join(sorted(set(results.task))))}</p>"]
    for title, b64 in figures:
        parts.append(f"<h2>{html.escape(title)}</h2><img src='data:image/png;base64,{b64}'/>")
    parts.append("<h2>Gap closed (train mean = 0, experimental error = 1)</h2>" + gaps.to_html(index=False, float_format="%.3f"))
    parts.append("<h2>Paired Wilcoxon tests across folds vs the best control</h2>" + tests.to_html(index=False, float_format="%.3g"))
    main = table[table.metric.isin(["l2", "f1", "pearson"])]
    parts.append("<h2>Results (mean over folds)</h2>" + main.to_html(index=False, float_format="%.4f"))
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts))
    return path
