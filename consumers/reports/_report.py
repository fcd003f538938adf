"""The benchmark report: the paper's figures (as its notebooks draw them), tables and paired tests, as PNG/SVG
and one self-contained HTML page.

Reference notebooks (``results/figures/`` of the paper's code):

- ``fig_1_essential_lfc_knn_boxplot``: per context, one box per entry of one evaluator (the controls, the
  sets, the idealised baseline, the experimental error), whiskers at the minimum and maximum
  (``whis=(0, 100)``), the folds as points, dashed lines at the medians over folds of the train mean, the
  experimental error and the best model (positive controls and fusion left out of "best"); the printed
  "fraction achieved" is the gap closed from those medians.
- ``fig_2_essential_lfc_knn_rank``: the same entries ranked within each (context, fold) (``rank()``:
  ascending, ties averaged), boxes without fliers ordered by median rank, worst first.
- ``fig_3_embedding_clustermap``: StandardScaler, PCA(10) per set on the entities common to all sets,
  ``CCA(min dims)`` per pair, ``CCA.score`` (R^2 of predicting one set's components from the other's),
  clustered with ``RdBu_r`` from -1 to 1.

The paper's Figure 5 (fusion against the best single embedding) has no notebook in the reference: its view here
(:func:`fusion_vs_best`, :func:`fusion_plot`) puts both on Figure 1's gap-closed scale.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from pertstore.consumers.reports._dose import dose_table, plot_dose_curves
from pertstore.consumers.reports._generative import generative_figures

CONTROL_SETS = ("train_mean", "no_change", "idealised", "experimental_error")
NEGATIVE, POSITIVE, EMBEDDING, FUSION = "Negative Control", "Positive Control", "Embedding", "Fusion"
#: The reference's ``genes_model_type_palette`` (``results/metadata/save_figure_index.py``).
PALETTE = {NEGATIVE: "#729ECE", POSITIVE: "#FF9E4A", EMBEDDING: "#67BF5C", FUSION: "#ED97CA"}
LOWER_IS_BETTER = {"l2": True, "f1": False}
"""The primary metric of each task kind: L2 for LFC tasks, macro F1 for DEG tasks."""


def _primary(results: pd.DataFrame, producers: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per (task, context, fold, set, evaluator) with its primary metric (folds >= 0 only), a figure
    label and the model type of the figures' hue.

    A task evaluated under several task versions is reported per version (``task@version``), never mixed.
    """
    prim = results[results.metric.isin(list(LOWER_IS_BETTER)) & (results.fold >= 0)].copy()
    versions = prim.groupby("task").task_version.transform("nunique")
    prim["task"] = np.where(versions > 1, prim.task + "@" + prim.task_version.astype(str), prim.task)
    prim["label"] = prim["set"] + np.where(prim.evaluator == "none", "", " / " + prim.evaluator)
    prim["type"] = [_model_type(s, e, producers or {}) for s, e in zip(prim.set, prim.evaluator)]
    return prim


def is_fusion(evaluator: str) -> bool:
    """Whether an evaluator is one of the fusion model's (``fusion``, ``fusion-full``, ``fusion-tuned``, ...)."""
    return str(evaluator).startswith("fusion")


def _model_type(set_name: str, evaluator: str, producers: dict[str, str]) -> str:
    if is_fusion(evaluator):
        return FUSION
    if set_name in ("idealised", "experimental_error"):
        return POSITIVE
    if set_name in ("train_mean", "no_change") or producers.get(set_name) == "random":
        return NEGATIVE
    return EMBEDDING


def families(prim: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """The (task, evaluator) groups the figures draw, as the reference draws one figure per head type: that
    evaluator's rows, the controls without a model (train mean, no change, experimental error) and the
    task's fusion rows (every fusion variant). Tasks are never mixed, so LFC regressors and DEG classifiers are
    never ranked together."""
    out = []
    for task, g in prim.groupby("task", sort=True):
        fused = g.evaluator.map(is_fusion)
        models = sorted(set(g.evaluator[~fused]) - {"none"}) or (["fusion"] if fused.any() else [])
        for ev in models:
            out.append((task, ev, g[g.evaluator.isin([ev, "none"]) | fused]))
    return out


def _lower(rows: pd.DataFrame) -> bool:
    return LOWER_IS_BETTER[rows.metric.iloc[0]]


def best_model(rows: pd.DataFrame) -> str | None:
    """The reference's "best model" of one context: the label with the best median over folds, positive
    controls and fusion left out (``fig_1.ipynb``; controls such as the train mean stay candidates)."""
    candidates = rows[~rows.type.isin([POSITIVE, FUSION])]
    if candidates.empty:
        return None
    medians = candidates.groupby("label").value.median()
    return str(medians.idxmin() if _lower(rows) else medians.idxmax())


def gap_closed(results: pd.DataFrame, producers: dict[str, str] | None = None) -> pd.DataFrame:
    """Per (task, evaluator family, context) and label, the median over folds of the primary metric and the gap
    closed ``(median train_mean - median) / (median train_mean - median experimental_error)`` ("fraction
    achieved" in ``fig_1.ipynb``); ``best`` marks the figure's best model, ``type`` the figures' model type
    (``producers``: set -> producer, so random sets count as negative controls). NaN without both controls."""
    rows = []
    for task, ev, fam in families(_primary(results, producers)):
        for context, g in fam.groupby("context", sort=True):
            med = g.groupby("label").value.median()
            base, floor = med.get("train_mean", np.nan), med.get("experimental_error", np.nan)
            best = best_model(g)
            span = base - floor
            for label, value in med.items():
                if label in ("train_mean", "experimental_error"):
                    continue
                one = g[g.label == label].iloc[0]
                rows.append(
                    {
                        "task": task,
                        "evaluator_family": ev,
                        "context": context,
                        "set": one.set,
                        "evaluator": one.evaluator,
                        "metric": one.metric,
                        "median": value,
                        "train_mean": base,
                        "experimental_error": floor,
                        "gap_closed": (base - value) / span if span else np.nan,
                        "best": label == best,
                        "type": one.type,
                    }
                )
    return pd.DataFrame(
        rows,
        columns=[
            "task",
            "evaluator_family",
            "context",
            "set",
            "evaluator",
            "metric",
            "median",
            "train_mean",
            "experimental_error",
            "gap_closed",
            "best",
            "type",
        ],
    )


FUSION_COLUMNS = [
    "task",
    "evaluator_family",
    "context",
    "metric",
    "fusion",
    "fusion_evaluator",
    "fusion_median",
    "best_set",
    "best_median",
    "train_mean",
    "experimental_error",
    "gap_closed_fusion",
    "gap_closed_best",
    "gain",
    "remaining_gap_closed",
    "fusion_better",
]


def fusion_vs_best(gaps: pd.DataFrame) -> pd.DataFrame:
    """The paper's Figure 5 view from :func:`gap_closed`'s rows: per (task, evaluator family, context) and fusion
    run, the fusion's median over folds against the best single set's, where the best single set is the best
    median among the family's embedding sets (controls, random sets, the idealised baseline and fusion are never
    candidates, so unlike Figure 1's "best model" it is never the train mean).

    ``gap_closed_fusion`` / ``gap_closed_best``: each one's gap closed (train mean 0, experimental error 1);
    ``gain`` = their difference (the share of the train-mean-to-limit range fusion adds; negative when fusion is
    worse); ``remaining_gap_closed`` = ``gain / (1 - gap_closed_best)`` = ``(fusion - best) / (experimental error
    - best)``: the share of the gap the best set left that fusion closes (NaN when the best set already reaches
    the limit)."""
    rows = []
    for (task, family, context), g in gaps.groupby(["task", "evaluator_family", "context"], sort=True):
        singles = g[g.type == EMBEDDING]
        if singles.empty:
            continue
        lower = LOWER_IS_BETTER[g.metric.iloc[0]]
        best = singles.loc[singles["median"].idxmin() if lower else singles["median"].idxmax()]
        for one in g[g.type == FUSION].itertuples():
            gain = one.gap_closed - best.gap_closed
            rest = 1 - best.gap_closed
            rows.append(
                {
                    "task": task,
                    "evaluator_family": family,
                    "context": context,
                    "metric": one.metric,
                    "fusion": one.set,
                    "fusion_evaluator": one.evaluator,
                    "fusion_median": one.median,
                    "best_set": best.set,
                    "best_median": best["median"],
                    "train_mean": one.train_mean,
                    "experimental_error": one.experimental_error,
                    "gap_closed_fusion": one.gap_closed,
                    "gap_closed_best": best.gap_closed,
                    "gain": gain,
                    "remaining_gap_closed": gain / rest if rest > 0 else np.nan,
                    "fusion_better": bool(one.median < best["median"] if lower else one.median > best["median"]),
                }
            )
    return pd.DataFrame(rows, columns=FUSION_COLUMNS)


def ranks(results: pd.DataFrame, producers: dict[str, str] | None = None) -> pd.DataFrame:
    """Ranks of ``fig_2.ipynb``: within each (task, evaluator family, context, fold), every entry's primary metric
    ranked with pandas' ``rank()`` (1 = best: ascending for L2, descending for F1; ties averaged)."""
    parts = []
    for _task, ev, fam in families(_primary(results, producers)):
        fam = fam.assign(evaluator_family=ev)
        fam["rank"] = fam.groupby(["context", "fold"]).value.rank(ascending=_lower(fam))
        parts.append(fam)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean, median, std and count over folds of every metric per (task, context, set, evaluator), with the mean
    coverage and, where stored, the covered test perturbations summed over folds."""
    extra = {c: (c, "sum") for c in ("n_test_covered", "n_test") if c in results}
    return (
        results[results.fold >= 0]
        .groupby(["task", "context", "set", "evaluator", "metric"])
        .agg(
            mean=("value", "mean"),
            median=("value", "median"),
            std=("value", "std"),
            count=("value", "count"),
            coverage=("coverage", "mean"),
            **extra,
        )
        .reset_index()
    )


def paired_tests(results: pd.DataFrame, errors: pd.DataFrame | None = None, *, alpha: float = 0.05) -> pd.DataFrame:
    """Two-sided Wilcoxon signed-rank tests of every model against the task's best negative control (train mean
    or no change, by median over folds), Benjamini-Hochberg adjusted across all comparisons of the table.

    Pairs are perturbations (the per-perturbation scores in ``bench_errors``: a column named as the primary
    metric, ``l2`` for LFC, ``f1`` for DEG) within a context, matched on (task version, fold, perturbation). Where no
    per-perturbation scores are stored (fusion DEG runs), pairs are the (context, fold) values of
    the task and ``paired_over`` says so: five folds alone can never reach p < 0.05 (the smallest two-sided
    p of 5 pairs is 1/16), only several contexts can. Rows stored twice for one key (a rerun) are averaged.
    """
    from scipy.stats import false_discovery_control, wilcoxon

    rows = []
    for task, g in _primary(results).groupby("task", sort=True):
        metric = g.metric.iloc[0]
        lower = LOWER_IS_BETTER[metric]
        scores, paired_over = _paired_scores(g, errors, metric)
        for context, u in g.groupby("context", sort=True) if paired_over == "perturbations" else [("all", g)]:
            med = u[u.set.isin(["train_mean", "no_change"]) & (u.evaluator == "none")].groupby("set").value.median()
            if med.empty:
                continue
            control = str(med.idxmin() if lower else med.idxmax())
            ref = scores.get((context, control, "none"), pd.Series(dtype=float))
            for set_name, ev in u[~u.set.isin(CONTROL_SETS)][["set", "evaluator"]].drop_duplicates().values:
                mine = scores.get((context, set_name, ev), pd.Series(dtype=float))
                paired = pd.concat([mine.rename("model"), ref.rename("control")], axis=1, join="inner").dropna()
                diff = (paired.model - paired.control).to_numpy()
                median = float(np.median(diff)) if len(diff) else np.nan
                rows.append(
                    {
                        "task": task,
                        "context": context,
                        "set": set_name,
                        "evaluator": ev,
                        "control": control,
                        "metric": metric,
                        "paired_over": paired_over,
                        "n_pairs": len(diff),
                        "median_difference": median,
                        "better": bool(median < 0 if lower else median > 0),
                        "p_value": float(wilcoxon(diff).pvalue) if np.any(diff != 0) else np.nan,
                    }
                )
    out = pd.DataFrame(
        rows,
        columns=[
            "task",
            "context",
            "set",
            "evaluator",
            "control",
            "metric",
            "paired_over",
            "n_pairs",
            "median_difference",
            "better",
            "p_value",
        ],
    )
    out["q_value"] = np.nan
    tested = out.p_value.notna()
    if tested.any():
        out.loc[tested, "q_value"] = false_discovery_control(out.loc[tested, "p_value"].to_numpy(), method="bh")
    out["significant"] = out.q_value < alpha
    return out


def _paired_scores(rows: pd.DataFrame, errors: pd.DataFrame | None, metric: str) -> tuple[dict, str]:
    """The paired values of one task per (context, set, evaluator): per-perturbation scores indexed by (task
    version, fold, perturbation) where ``errors`` hold them, else per-fold values indexed by (context, fold)
    under the context "all". Values stored twice for one key are averaged."""
    per = pd.DataFrame()
    if errors is not None and metric in errors:
        per = errors[
            (errors.task == rows.task.iloc[0].split("@")[0])
            & errors.task_version.isin(rows.task_version.unique())
            & errors[metric].notna()
        ]
    if per.empty:
        values = rows.groupby(["set", "evaluator", "context", "fold"]).value.mean()
        return {("all", *k): v.droplevel([0, 1]) for k, v in values.groupby(level=[0, 1])}, "folds x contexts"
    values = per.groupby(["context", "set", "evaluator", "task_version", "fold", "pert_id"])[metric].mean()
    return {k: v.droplevel([0, 1, 2]) for k, v in values.groupby(level=[0, 1, 2])}, "perturbations"


def plot_label(label: str, width: int = 48) -> str:
    """A label short enough for a figure's axis: a long fusion's set list is cut after two sets."""
    if len(label) <= width or not label.startswith("fusion("):
        return label
    sets, _, evaluator = label[len("fusion(") :].partition(")")
    names = sets.split(",")
    if len(names) <= 2:
        return label
    return f"fusion({', '.join(names[:2])}, ... {len(names)} sets){evaluator}"


def coverage_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per task, context, set and evaluator: test perturbations (summed over folds) and how many were covered."""
    runs = results[~results.set.isin(CONTROL_SETS)]
    if "n_test" not in runs.columns or runs.empty:
        return pd.DataFrame(columns=["task", "context", "set", "evaluator", "n_test", "n_test_covered", "coverage"])
    runs = runs.drop_duplicates(["task", "context", "set", "evaluator", "fold"])
    counts = runs[["n_test", "n_test_covered"]].astype(float).fillna(0)
    table = counts.groupby([runs.task, runs.context, runs.set, runs.evaluator]).sum().reset_index()
    table["coverage"] = table.n_test_covered / table.n_test.where(table.n_test > 0)
    table = table.astype({"n_test": np.int64, "n_test_covered": np.int64})
    return table.sort_values(["task", "context", "coverage"])


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


def _cca_score(xa: np.ndarray, xb: np.ndarray) -> float:
    import warnings

    from sklearn.cross_decomposition import CCA
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():  # components reaching max_iter are kept, as in the reference
        warnings.simplefilter("ignore", ConvergenceWarning)
        return float(CCA(n_components=min(xa.shape[1], xb.shape[1])).fit(xa, xb).score(xa, xb))


def cca_scores(blocks: dict[str, np.ndarray], *, n_components: int = 10, n_jobs: int = 1) -> pd.DataFrame:
    """The CCA similarity of ``fig_3.ipynb`` on aligned blocks (same entities, same row order): per set
    ``PCA(n_components)`` of the standardised block, then for every pair (names sorted, ``i <= j``)
    ``CCA(min dims).fit(a, b).score(a, b)``, mirrored to ``[j, i]`` as the reference does. ``n_jobs``: joblib
    processes for the pairs (about 0.2 s each on 6,000 entities)."""
    from joblib import Parallel, delayed
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    reduced = {}
    for name, x in blocks.items():
        k = min(n_components, x.shape[0], x.shape[1])
        reduced[name] = PCA(n_components=k).fit_transform(StandardScaler().fit_transform(x))
    names = sorted(reduced)
    pairs = [(i, j) for i in range(len(names)) for j in range(i, len(names))]
    scores = Parallel(n_jobs=n_jobs)(delayed(_cca_score)(reduced[names[i]], reduced[names[j]]) for i, j in pairs)
    sim = np.zeros((len(names), len(names)))
    for (i, j), score in zip(pairs, scores):
        sim[i, j] = sim[j, i] = score
    return pd.DataFrame(sim, index=names, columns=names)


def cca_similarity(
    store, versions: dict[str, str], out: Path, *, n_jobs: int = -1
) -> tuple[list[tuple[str, str]], list[str]]:
    """Figure 3 (``fig_3.ipynb``): for the sets of each entity kind, the CCA score matrix on the entities common
    to all of them, clustered. ``versions`` maps each set to the version read. Returns figures and notes."""
    import seaborn as sns
    from matplotlib.patches import Patch

    _pyplot()
    figures, notes = [], []
    listed = store.catalog.list_sets()
    info = {(r.source, r.version): r for r in listed.itertuples()}
    by_kind: dict[str, list[str]] = {}
    for name, version in sorted(versions.items()):
        if (name, version) not in info:
            notes.append(f"CCA: {name} version {version} is no longer in the store; left out")
            continue
        by_kind.setdefault(info[(name, version)].kind, []).append(name)
    for kind, names in sorted(by_kind.items()):
        if len(names) < 2:
            continue
        opened = {n: store.open_set(n, version=versions[n]) for n in names}
        common = sorted(set.intersection(*(set(s.ids) for s in opened.values())))
        if len(common) < 2:
            notes.append(f"CCA ({kind}): the sets {', '.join(names)} share {len(common)} entities; no clustermap")
            continue
        blocks = {n: s.rows(s.positions(common)).astype(np.float64) for n, s in opened.items()}
        sim = cca_scores(blocks, n_jobs=n_jobs if len(names) > 8 else 1)  # processes pay off from ~45 pairs
        sim.to_csv(out / f"cca_{kind}.csv")
        producer = pd.Series({n: info[(n, versions[n])].producer for n in sim.index})
        colours = dict(zip(sorted(set(producer)), sns.color_palette("tab10", len(set(producer)))))
        row_colors = producer.map(colours).rename("producer")
        grid = sns.clustermap(
            sim,
            cmap="RdBu_r",
            center=0,
            vmin=-1,
            vmax=1,
            linewidths=0.5,
            linecolor="white",
            cbar_pos=(1, 0.5, 0.03, 0.15),
            cbar_kws={"label": "CCA Score"},
            figsize=(4 + 0.45 * len(names),) * 2,
            dendrogram_ratio=(0.1, 0.1),
            row_colors=row_colors,
            col_colors=row_colors,
        )
        grid.fig.legend(
            handles=[Patch(facecolor=c, label=p) for p, c in colours.items()],
            loc="upper left",
            bbox_to_anchor=(1, 0.8),
            title="producer",
        )
        grid.ax_col_dendrogram.set_title(f"CCA score of {kind} sets on their {len(common):,} common entities")
        figures.append(
            (
                f"CCA similarity ({kind} sets, {len(common):,} common entities)",
                _fig_to_files(grid.fig, out, _file_name("fig3_cca", kind)),
            )
        )
    return figures, notes


def evaluated_versions(results: pd.DataFrame, sources: set[str]) -> dict[str, str]:
    """The version of each store set the results evaluated; a contextual set is represented by its set of
    the first context (alphabetically) it was evaluated in (the reference's clustermap uses K-562's)."""
    rows = results[results.set.isin(sources) & (results.set_version.fillna("") != "")]
    first = rows.sort_values(["context", "set_version"]).groupby("set").set_version.first()
    return {str(k): str(v) for k, v in first.items()}


def _missing_floors(results: pd.DataFrame) -> list[str]:
    """A note per (task, context) without per-fold experimental error rows: no floor line, no gap closed."""
    prim = _primary(results)
    has = set(map(tuple, prim[prim.set == "experimental_error"][["task", "context"]].drop_duplicates().values))
    return [
        f"{task} / {context or '-'}: no per-fold experimental error stored; its figures have no floor line "
        "and its gap closed is undefined"
        for task, context in sorted(set(map(tuple, prim[["task", "context"]].drop_duplicates().values)) - has)
    ]


def _errors(store, results: pd.DataFrame) -> pd.DataFrame:
    return store.catalog.results.errors(sorted(set(results.task)))


def write_report(
    results: pd.DataFrame,
    out: str | Path,
    *,
    store=None,
    errors: pd.DataFrame | None = None,
    on_note: Callable[[str], None] | None = None,
) -> Path:
    """Write tables, figures and ``report.html`` into ``out``; returns the HTML path.

    ``errors`` (per-perturbation scores, ``bench_errors``) default to the store's; with neither, the paired
    tests pair over (context, fold) and say so. Notes (what a figure or table lacks, and why) head the page
    and go to ``on_note``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if errors is None and store is not None:
        errors = _errors(store, results)
    producers = {}
    if store is not None:
        producers = dict(store.catalog.list_sets()[["source", "producer"]].drop_duplicates().itertuples(index=False))
    results.to_csv(out / "results.csv", index=False)
    table = summary_table(results)
    table.to_csv(out / "summary.csv", index=False)
    gaps = gap_closed(results, producers)
    gaps.to_csv(out / "gap_closed.csv", index=False)
    fused = fusion_vs_best(gaps)
    if not fused.empty:
        fused.to_csv(out / "fusion_vs_best.csv", index=False)
    tests = paired_tests(results, errors)
    tests.to_csv(out / "wilcoxon.csv", index=False)
    ranked = ranks(results, producers)
    if not ranked.empty:
        ranked.drop(columns=["label"]).to_csv(out / "ranks.csv", index=False)
    figures = boxplots(results, out, producers) + rank_plot(results, out, producers) + fusion_plot(fused, out)
    if store is not None:
        figures += dose_figures(results, store, out)
    figures += generative_figures(results, out)  # Figure S14: generative methods beside kNN
    covered = coverage_table(results)
    covered.to_csv(out / "coverage.csv", index=False)
    notes = _missing_floors(results)
    if store is not None:  # sets of the store (not controls, not fusion models)
        cca, cca_notes = cca_similarity(store, evaluated_versions(results, set(store.sources()["source"])), out)
        notes += cca_notes
        figures += cca
    for note in notes if on_note else []:
        on_note(note)
    parts = [
        "<html><head><meta charset='utf-8'><title>pertstore benchmark report</title>",
        (
            "<style>body{font-family:sans-serif;max-width:1400px;margin:auto}table{border-collapse:collapse;"
            "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}</style></head><body>"
        ),
        "<h1>pertstore benchmark report</h1>",
        f"<p>{len(results)} result rows; tasks: {html.escape(', '.join(sorted(set(results.task))))}</p>",
    ]
    parts += [f"<p><b>note:</b> {html.escape(n)}</p>" for n in notes]
    for title, b64 in figures:
        parts.append(f"<h2>{html.escape(title)}</h2><img src='data:image/png;base64,{b64}'/>")
    best = gaps[gaps.best]
    parts.append(
        "<h2>Gap closed by the best model (medians over folds; train mean = 0, experimental error = 1)"
        "</h2>" + best.to_html(index=False, float_format="%.4g")
    )
    if not fused.empty:
        parts.append(
            "<h2>Fusion vs the best single set (medians over folds; gain = gap closed by fusion - gap closed "
            "by the best set, negative when fusion is worse)</h2>" + fused.to_html(index=False, float_format="%.4g")
        )
    parts.append(
        "<h2>Paired Wilcoxon signed-rank tests vs the best negative control (Benjamini-Hochberg q)</h2>"
        + tests.to_html(index=False, float_format="%.3g")
    )
    parts.append("<h2>Gap closed, every model</h2>" + gaps.to_html(index=False, float_format="%.4g"))
    parts.append(
        "<h2>Coverage: test perturbations with an embedding (the others got the train mean)</h2>"
        + covered.to_html(index=False, float_format="%.3g")
    )
    main = table[table.metric.isin(["l2", "f1", "pearson", "auroc"])]
    parts.append("<h2>Results over folds</h2>" + main.to_html(index=False, float_format="%.4g"))
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts))
    return path
