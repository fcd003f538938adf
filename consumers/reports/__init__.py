"""Benchmark reports: the paper's figures, gap closed, ranks, paired significance tests, one HTML page."""

from pertstore.consumers.reports._cca import cca_scores, cca_similarity
from pertstore.consumers.reports._crosscontext import cross_context_table
from pertstore.consumers.reports._figures import boxplots, fusion_plot, rank_plot
from pertstore.consumers.reports._generative import generative_vs_knn
from pertstore.consumers.reports._report import write_report
from pertstore.consumers.reports._tables import fusion_vs_best, gap_closed, paired_tests, ranks, summary_table

__all__ = [
    "boxplots",
    "cca_scores",
    "cca_similarity",
    "cross_context_table",
    "fusion_plot",
    "fusion_vs_best",
    "gap_closed",
    "generative_vs_knn",
    "paired_tests",
    "rank_plot",
    "ranks",
    "summary_table",
    "write_report",
]
