"""Task presets: the paper's four datasets, built exactly as its preprocessing scripts build them.

Each preset fixes the columns, control label, LFC/DEG variant, dose selection, QC filter,
exclusions, minimum cells, gene universe and bootstrap settings of one dataset family, after the
reference's ``benchmark/benchmark/preprocessing/{pseudobulk,differentially_expressed_genes}/*.py``
and ``experimental_error/*.py``. Every field can be overridden; the settings used are recorded in
the task's recipe and printed in its report. ``docs/tasks.md`` maps each field to its script.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pertstore.errors import InvalidInputError

#: Options of :func:`read_perturbation_data` a preset sets.
READ_FIELDS = (
    "pert_col",
    "control_col",
    "control_label",
    "batch_col",
    "context_col",
    "context",
    "dose_col",
    "dose",
    "dose_as_context",
    "obs_filter",
    "exclude",
    "exclude_contexts",
    "batch_from_barcode",
    "genes",
    "normalise_kept",
    "input",
    "alias_cols",
)


@dataclass(frozen=True)
class Preset:
    """How one of the paper's datasets becomes a task; see :data:`PRESETS`."""

    name: str
    reference: str
    """The reference scripts followed."""
    entity: Literal["gene", "molecule"] = "gene"
    pert_col: str | None = None
    control_col: str | None = None
    control_label: str | None = None
    batch_col: str | None = None
    context_col: str | None = None
    context: str = ""
    dose_col: str | None = None
    dose: float | None = None
    dose_as_context: bool = False
    """Every dose kept, each as its own context (``A375_dose10``), folds shared across doses."""
    input: str = "auto"
    alias_cols: Sequence[str] = ()
    """obs columns with other ids of a perturbation, tried when its label does not resolve."""
    obs_filter: Mapping[str, Sequence[str]] = field(default_factory=dict)
    exclude: Sequence[str] = ()
    exclude_contexts: Sequence[str] = ()
    batch_from_barcode: bool = False
    genes: str | Sequence[str] = "all"
    normalise_kept: bool = False
    """Counts normalised over the kept genes only (Norman's renormalisation after its gene filter)."""
    lfc_variant: Literal["large", "small"] = "large"
    deg_variant: Literal["large", "small"] = "large"
    min_cells: int = 30
    """DEG: cells a (perturbation, batch) pair needs (the reference's ``> k`` is ``k + 1`` here)."""
    deg_normalise_kept: bool | None = None
    """DEG's own ``normalise_kept`` where the reference's DEG script filters genes before normalising."""
    error_seed: int = 5050
    error_inner: int = 10
    """Inner (cell) draws per outer (batch) draw of the experimental error (the plate-matched script: 20)."""
    notes: Sequence[str] = ()
    """What the data directory or the preset cannot reproduce of the reference."""

    def read_options(self, kind: str) -> dict[str, Any]:
        """Keyword arguments of :func:`read_perturbation_data` for a task of ``kind``."""
        opts = {f: getattr(self, f) for f in READ_FIELDS}
        opts["obs_filter"] = dict(self.obs_filter)
        if self.batch_from_barcode:
            opts["batch_col"] = None
        if kind == "deg" and self.deg_normalise_kept is not None:
            opts["normalise_kept"] = self.deg_normalise_kept
        return opts

    def settings(self, kind: str) -> dict[str, Any]:
        """The settings a task of ``kind`` is built with (recorded in its recipe and report)."""
        out = {
            "name": self.name,
            "reference": self.reference,
            "entity": self.entity,
            **self.read_options(kind),
            "variant": self.lfc_variant if kind == "lfc" else self.deg_variant,
            "error_seed": self.error_seed,
            "error_inner": self.error_inner,
        }
        if kind == "deg":
            out["min_cells"] = self.min_cells
        return {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in out.items()
            if v not in (None, (), {}, "", False, "auto")
        }

    def with_overrides(self, **overrides: Any) -> Preset:
        """A copy with some fields changed (None values are ignored); unknown fields are an error."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InvalidInputError(f"preset {self.name!r} has no field(s) {unknown}; fields: {sorted(known)}")
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


TAHOE_EXCLUDED_DRUGS = ("Trametinib (DMSO_TF solvate)", "Sacubitril/Valsartan", "Verteporfin")
TAHOE_EXCLUDED_CELL_LINES = ("CVCL_1571", "CVCL_1531", "CVCL_1715", "CVCL_1577", "CVCL_1716")

PRESETS: dict[str, Preset] = {
    "essential": Preset(
        name="essential",
        reference="pseudobulk_essential.py, deg_essential.py, run_exp_error_essential.py",
        pert_col="gene_id",
        control_label="non-targeting",
        batch_col="gem_group",
        context_col="cell_line",
        lfc_variant="small",
        deg_variant="small",
        min_cells=31,
        notes=(
            "LFC: per-batch means, averaged over batches, minus the averaged control (small batches)",
            "DEG: all cells of a perturbation (> 30) against all control cells of its cell line",
        ),
    ),
    "norman": Preset(
        name="norman",
        reference="pseudobulk_norman.py",
        pert_col="perturbation",
        control_label="control",
        batch_col="gemgroup",
        lfc_variant="large",
        normalise_kept=True,
        notes=(
            "single perturbations only (combinations excluded, as nperts <= 1)",
            "LFC: batch-matched control subtracted per gem group, then averaged over gem groups",
            "counts renormalised over the kept genes (the reference subsets to GEARS' genes first)",
        ),
    ),
    "tahoe": Preset(
        name="tahoe",
        reference="pseudobulk_tahoe.py, deg_tahoe.py, run_exp_error_plate_matched.py, run_exp_error_tahoe_deg.py",
        entity="molecule",
        pert_col="drug",
        control_label="DMSO_TF",
        batch_col="plate",
        context_col="cell_line",
        dose_col="drugname_drugconc",
        dose=5.0,
        obs_filter={"pass_filter": ["full"]},
        exclude=TAHOE_EXCLUDED_DRUGS,
        exclude_contexts=TAHOE_EXCLUDED_CELL_LINES,
        genes="coding",
        error_inner=20,
        lfc_variant="large",
        deg_variant="large",
        min_cells=21,
        deg_normalise_kept=True,
        notes=(
            "5 uM only; QC pass_filter == 'full'; plate-matched DMSO_TF controls",
            "LFC: normalised over all genes, coding genes kept after; DEG: coding genes kept, then normalised",
            "DEG: > 20 cells per (plate, drug), t-test per plate, then a vote over plates",
        ),
    ),
    "sciplex": Preset(
        name="sciplex",
        reference="pseudobulk_sciplex3.py, deg_sciplex3.py, run_exp_error_sciplex_deg.py",
        entity="molecule",
        pert_col="drug",
        control_label="Vehicle",
        batch_col="plate",
        context_col="cell_line",
        dose_col="dose",
        dose=10000.0,
        genes="coding",
        error_inner=20,
        lfc_variant="large",
        deg_variant="large",
        min_cells=21,
        notes=(
            "10 uM (dose 10000 nM) only; Vehicle controls matched by plate; pooled by drug and dose",
            "DEG: > 20 cells per (plate, drug), t-test per plate, then a vote over plates",
        ),
    ),
    "l1000-dose": Preset(
        name="l1000-dose",
        reference="pseudobulk_tahoe.py's plate-matched LFC, on L1000 wells",
        entity="molecule",
        pert_col="perturbation",
        control_col="is_control",
        batch_col="batch",
        context_col="cell_line",
        dose_col="dose_uM",
        dose_as_context=True,
        input="log",
        lfc_variant="large",
        alias_cols=("pert_id", "smiles"),
        notes=(
            "a well stands for a pseudobulk; LFC = mean over plates of (drug wells - the plate's DMSO wells)",
            "each dose a context, folds by drug shared across doses; names, then Broad ids, then SMILES",
        ),
    ),
    "l1000-knockdown": Preset(
        name="l1000-knockdown",
        reference="(bulk) replicate wells of differential z-scores averaged",
        pert_col="perturbation",
        control_col="is_control",
        batch_col="batch",
        input="differential",
        alias_cols=("pert_univ_id_entrez",),
        notes=("per-well z-scores are already differential: replicates averaged, no control subtracted",),
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an error listing the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InvalidInputError(f"no preset {name!r}; presets: {sorted(PRESETS)}") from None
