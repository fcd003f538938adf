"""The report's numbers: primary metric per fold, gap closed, fusion vs the best set, ranks, paired tests, coverage."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pertstore.consumers.evaluators import WARN_COVERAGE

CONTROL_SETS = ("train_mean", "no_change", "idealised", "experimental_error")
NEGATIVE, POSITIVE, EMBEDDING, FUSION = "Negative Control", "Positive Control", "Embedding", "Fusion"
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
    task's fusion and fine-tuning (``ft-*``, the paper's Figure 4) rows. Tasks are never mixed, so LFC
    regressors and DEG classifiers are never ranked together."""
    out = []
    for task, g in prim.groupby("task", sort=True):
        fused = g.evaluator.map(is_fusion)
        tuned = g.evaluator.astype(str).str.startswith("ft-")  # fine-tuned cell models beside each (Figure 4)
        models = sorted(set(g.evaluator[~fused & ~tuned]) - {"none"}) or (["fusion"] if fused.any() else [])
        for ev in models:
            out.append((task, ev, g[g.evaluator.isin([ev, "none"]) | fused | tuned]))
    return out


def _lower(rows: pd.DataFrame) -> bool:
    return LOWER_IS_BETTER[rows.metric.iloc[0]]


def best_model(rows: pd.DataFrame) -> str | None:
    """The reference's "best model" of one context: the label with the best median over folds, positive
    controls and fusion left out (``fig_1.ipynb``; controls such as the train mean stay candidates), and sets
    covering less than ``WARN_COVERAGE`` of the test perturbations on average (mostly the train mean, their
    rank would be the train mean's plus chance)."""
    candidates = rows[
        ~rows.type.isin([POSITIVE, FUSION]) & (rows.groupby("label").coverage.transform("mean") >= WARN_COVERAGE)
    ]
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
                        "coverage": g[g.label == label].coverage.mean(),
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
            "coverage",
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
    median among the family's embedding sets covering at least ``WARN_COVERAGE`` of the test perturbations
    (controls, random sets, the idealised baseline and fusion are never candidates, so unlike Figure 1's "best
    model" it is never the train mean).

    ``gap_closed_fusion`` / ``gap_closed_best``: each one's gap closed (train mean 0, experimental error 1);
    ``gain`` = their difference (the share of the train-mean-to-limit range fusion adds; negative when fusion is
    worse); ``remaining_gap_closed`` = ``gain / (1 - gap_closed_best)`` = ``(fusion - best) / (experimental error
    - best)``: the share of the gap the best set left that fusion closes (NaN when the best set already reaches
    the limit)."""
    rows = []
    for (task, family, context), g in gaps.groupby(["task", "evaluator_family", "context"], sort=True):
        singles = g[(g.type == EMBEDDING) & (g.coverage >= WARN_COVERAGE)]
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
