"""Ingestion: defaults, input detection, combinatorial labels, resolution, and errors that name the culprit."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import scipy.sparse as sp
from pertstore.consumers.tasks import lfc, read_perturbation_data
from task_helpers import synthetic

from pertstore.errors import InvalidInputError


def test_papalexi_defaults(papalexi):
    data = read_perturbation_data(papalexi, context="THP-1")
    assert data.input == "counts"
    assert data.columns == {
        "pert_col": "target",
        "control_col": "is_control",
        "control_label": None,
        "batch_col": "batch",
        "context_col": None,
        "context": "THP-1",
    }
    assert data.contexts == ["THP-1"] and len(data.perturbations) == 25 and len(data.sha256) == 64
    assert int(data.cells["is_control"].sum()) == 1912


def test_combinatorial_labels_excluded_by_default_kept_on_request(norman):
    single = read_perturbation_data(norman)
    assert len(single.excluded) == 15 and "KLF1+MAP2K6" in single.excluded
    assert not single.perturbations["combinatorial"].any()
    both = read_perturbation_data(norman, combinatorial=True)
    assert both.perturbations["combinatorial"].sum() == 15 and not both.excluded


@dataclass
class FakeResolution:
    ids: list
    unresolved: list = field(default_factory=list)
    ambiguous: dict = field(default_factory=dict)


def test_labels_resolve_through_the_injected_resolver(write_h5ad):
    cells = {("A", "b1", lab): 5 for lab in ("control", "P1", "P2", "P1+P2", "ZZZ")}
    table = {"P1": "ENSG1", "P2": "ENSG2"}

    def resolve(labels):
        return FakeResolution(ids=[table.get(x) for x in labels], unresolved=[x for x in labels if x not in table])

    data = read_perturbation_data(write_h5ad(synthetic(cells=cells)), resolve=resolve, combinatorial=True)
    got = dict(zip(data.perturbations["label"], data.perturbations["entity_id"], strict=True))
    assert got == {"P1": "ENSG1", "P2": "ENSG2", "P1+P2": "ENSG1+ENSG2", "ZZZ": None}
    assert data.unresolved == ["ZZZ"] and any("ZZZ" in n for n in data.notes)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"pert_col": "guide_name"}, "'guide_name'"),
        ({"batch_col": "lane"}, "'lane'"),
        ({"context_col": "line"}, "'line'"),
        ({"control_label": "NTC"}, "'NTC'"),
        ({"perturbations": ["P1", "P9"]}, "'P9'"),
    ],
)
def test_bad_arguments_name_the_column_or_label(write_h5ad, kwargs, needle):
    with pytest.raises(InvalidInputError, match=needle):
        read_perturbation_data(write_h5ad(synthetic()), **kwargs)


def test_no_controls_in_a_context_names_it(write_h5ad):
    cells = {("A", "b1", "control"): 5, ("A", "b1", "P1"): 5, ("B", "b1", "P1"): 5}
    with pytest.raises(InvalidInputError, match=r"no control cells .*\['B'\] of column 'cell_line'"):
        read_perturbation_data(write_h5ad(synthetic(cells=cells)))


def test_perturbation_left_without_cells_after_excluding_combinations(write_h5ad):
    cells = {("A", "b1", "control"): 5, ("A", "b1", "P1+P2"): 5, ("A", "b1", "P3"): 5}
    with pytest.raises(InvalidInputError, match=r"'P1\+P2'.*no cells after filtering"):
        read_perturbation_data(write_h5ad(synthetic(cells=cells)), perturbations=["P1+P2"])


def test_nan_in_an_obs_column_names_the_column_and_a_cell(write_h5ad):
    a = synthetic()
    a.obs["batch"] = a.obs["batch"].astype(object)
    a.obs.iloc[7, a.obs.columns.get_loc("batch")] = np.nan
    with pytest.raises(InvalidInputError, match="'batch' has 1 missing value.*'c7'"):
        read_perturbation_data(write_h5ad(a))


def test_non_integer_counts_where_counts_are_required(write_h5ad):
    a = synthetic()
    x = a.X.astype(np.float64).tolil()
    x[100, 3] = 2.5
    a.X = sp.csr_matrix(x)
    data = read_perturbation_data(write_h5ad(a), input="counts")
    with pytest.raises(InvalidInputError, match="non-integer value 2.5 at cell 'c100', gene 'G3'"):
        lfc(data)


def test_nan_in_x_names_the_cell_and_gene(write_h5ad):
    a = synthetic()
    x = a.X.astype(np.float64).tolil()
    x[50, 2] = np.nan
    a.X = sp.csr_matrix(x)
    with pytest.raises(InvalidInputError, match="non-finite value nan at cell 'c50', gene 'G2'"):
        lfc(read_perturbation_data(write_h5ad(a), input="log1p"))


def test_values_neither_counts_nor_log(write_h5ad):
    a = synthetic()
    a.X = a.X.astype(np.float64) * 100.5
    with pytest.raises(InvalidInputError, match="neither raw counts nor log1p"):
        read_perturbation_data(write_h5ad(a))
