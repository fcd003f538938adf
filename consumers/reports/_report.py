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

import html
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from pertstore.consumers.reports._cca import cca_similarity
from pertstore.consumers.reports._crosscontext import cross_context_figures
from pertstore.consumers.reports._figures import boxplots, dose_figures, fusion_plot, rank_plot
from pertstore.consumers.reports._generative import generative_figures
from pertstore.consumers.reports._tables import (
    _missing_floors,
    coverage_table,
    evaluated_versions,
    fusion_vs_best,
    gap_closed,
    paired_tests,
    ranks,
    summary_table,
)


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
    figures += cross_context_figures(results, out)  # Figures S12/S13: cross-context models per metric
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
