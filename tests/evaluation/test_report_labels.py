"""Figure labels: a fusion over many sets is shortened on the axis, other labels are kept."""

from __future__ import annotations

from pertstore.consumers.reports._figures import plot_label


def test_long_fusion_labels_are_cut_after_two_sets_and_keep_the_count_and_evaluator():
    many = "fusion(control-pca,genept,go-vae,random-gene-128,string-gin,string-node2vec,string-spectral) / fusion"
    assert plot_label(many) == "fusion(control-pca, genept, ... 7 sets) / fusion"
    assert plot_label("fusion(genept,string-spectral) / fusion") == "fusion(genept,string-spectral) / fusion"
    assert plot_label("string-spectral / knn") == "string-spectral / knn"
