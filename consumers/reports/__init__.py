"""Benchmark reports: tables, the paper's figures, significance tests, one HTML page."""

from pertstore.consumers.reports._report import (
    boxplots,
    cca_similarity,
    gap_closed,
    rank_plot,
    summary_table,
    wilcoxon_vs_best_control,
    write_report,
)

__all__ = ["boxplots", "cca_similarity", "gap_closed", "rank_plot", "summary_table", "wilcoxon_vs_best_control",
           "write_report"]
