"""Which cells and genes of a dataset a task keeps: obs columns, controls, filters, doses, the gene universe."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from pertstore.errors import InvalidInputError

PERT_COLS = ("perturbation", "target", "gene", "condition", "pert_id", "gene_id")
BATCH_COLS = ("batch", "gem_group", "gemgroup", "plate", "replicate")
CONTEXT_COLS = ("cell_line", "cell_type", "context")
CONTROL_COLS = ("is_control", "control")
CONTROL_LABELS = ("control", "non-targeting", "non_targeting", "ctrl", "NT", "DMSO", "vehicle")


def _pick_columns(
    obs: pd.DataFrame,
    pert_col: str | None,
    control_col: str | None,
    control_label: str | None,
    batch_col: str | None,
    context_col: str | None,
    notes: list[str],
) -> dict[str, Any]:
    def need(col: str, what: str) -> str:
        if col not in obs.columns:
            raise InvalidInputError(f"obs has no {what} column {col!r}; columns are {list(obs.columns)}")
        return col

    def default(given: str | None, candidates: Sequence[str], what: str) -> str | None:
        if given is not None:
            return need(given, what)
        found = next((c for c in candidates if c in obs.columns), None)
        if found is not None:
            notes.append(f"{what} column: {found!r} (default)")
        return found

    pert = default(pert_col, PERT_COLS, "perturbation")
    if pert is None:
        raise InvalidInputError(
            f"obs has none of the perturbation columns {list(PERT_COLS)}; pass pert_col "
            f"(columns are {list(obs.columns)})"
        )
    if control_col is not None and control_label is not None:
        raise InvalidInputError("pass control_col or control_label, not both")
    if control_col is None and control_label is None:
        control_col = next((c for c in CONTROL_COLS if c in obs.columns and obs[c].dtype == bool), None)
        if control_col is None:
            labels = set(obs[pert].astype(str))
            found = [lab for lab in CONTROL_LABELS if lab in labels]
            if len(found) != 1:
                raise InvalidInputError(
                    f"cannot tell control cells: pass control_col or control_label (column "
                    f"{pert!r} holds {'none' if not found else found} of {list(CONTROL_LABELS)})"
                )
            control_label = found[0]
            notes.append(f"control label: {control_label!r} in {pert!r} (default)")
        else:
            notes.append(f"control column: {control_col!r} (default)")
    elif control_col is not None:
        need(control_col, "control")
        if obs[control_col].dtype != bool:
            raise InvalidInputError(f"control column {control_col!r} must be boolean, not {obs[control_col].dtype}")
    else:
        labels = obs[pert].astype(str)
        if not (labels == control_label).any():
            raise InvalidInputError(
                f"control label {control_label!r} does not occur in column {pert!r} "
                f"(e.g. {sorted(labels.unique())[:8]})"
            )
    batch = default(batch_col, BATCH_COLS, "batch")
    if batch is None:
        notes.append("no batch column: each context is one batch")
    ctx = default(context_col, CONTEXT_COLS, "context")
    if ctx is None:
        notes.append("no context column: all cells belong to one context")
    return {
        "pert_col": pert,
        "control_col": control_col,
        "control_label": control_label,
        "batch_col": batch,
        "context_col": ctx,
    }


def _cells(obs: pd.DataFrame, cols: dict[str, Any], context: str) -> pd.DataFrame:
    for key in ("pert_col", "batch_col", "context_col", "control_col"):
        col = cols[key]
        if col is not None and obs[col].isna().any():
            missing = obs.index[obs[col].isna().to_numpy()]
            raise InvalidInputError(
                f"obs column {col!r} has {len(missing)} missing value(s) (NaN), e.g. cell {str(missing[0])!r}"
            )
    label = obs[cols["pert_col"]].astype(str)
    if cols["control_col"] is not None:
        is_control = obs[cols["control_col"]].to_numpy(bool)
    else:
        is_control = (label == cols["control_label"]).to_numpy()
    return pd.DataFrame(
        {
            "row": np.arange(len(obs)),
            "label": label.to_numpy(),
            "is_control": is_control,
            "batch": obs[cols["batch_col"]].astype(str).to_numpy() if cols["batch_col"] else "all",
            "context": obs[cols["context_col"]].astype(str).to_numpy() if cols["context_col"] else context,
        },
        index=obs.index.astype(str),
    )


def _check_controls(cells: pd.DataFrame, cols: dict[str, Any], path: str) -> None:
    spec = (
        f"control column {cols['control_col']!r}"
        if cols["control_col"]
        else f"control label {cols['control_label']!r} in column {cols['pert_col']!r}"
    )
    has = cells.groupby("context", observed=True)["is_control"].any()
    lacking = list(has.index[~has.to_numpy()])
    if lacking:
        where = f"context(s) {lacking}" + (f" of column {cols['context_col']!r}" if cols["context_col"] else "")
        raise InvalidInputError(f"{path}: no control cells ({spec}) in {where}")
    if not (~cells["is_control"]).any():
        raise InvalidInputError(f"{path}: no perturbed cells (every cell matches {spec})")


DOSE_SEP = "@"
"""Joins a label and its dose (``drug@5``) when a task keeps several doses."""


def _barcode_batches(index: pd.Index) -> np.ndarray:
    """The gem-group suffix of each barcode (``ACGT...-3`` -> ``3``); "" where there is none."""
    suffix = index.astype(str).str.rsplit("-", n=1).str[1].fillna("")
    return np.where(suffix.str.isdigit(), suffix, "").astype(str)


def parse_dose(value: Any) -> float:
    """A dose as a number: numbers as they are, the reference's ``"[('drug', 5.0, 'uM')]"`` by its second field."""
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = ast.literal_eval(text)
        return float(parsed[0][1])
    except (ValueError, SyntaxError, TypeError, IndexError):
        raise InvalidInputError(f"cannot read a dose from {text!r} (a number, or [('name', dose, 'unit')])") from None


def _select(
    cells: pd.DataFrame,
    obs: pd.DataFrame,
    cols: dict[str, Any],
    *,
    dose_col: str | None,
    dose: float | None,
    obs_filter: dict[str, Sequence[str]],
    exclude: Sequence[str],
    exclude_contexts: Sequence[str],
    notes: list[str],
) -> pd.DataFrame:
    """Apply the QC filter, the exclusions and the dose selection; every step is noted and kept in ``cols``."""
    keep = np.ones(len(cells), dtype=bool)
    for col, values in obs_filter.items():
        if col not in obs.columns:
            raise InvalidInputError(f"obs has no column {col!r} to filter on; columns are {list(obs.columns)}")
        hit = obs[col].astype(str).isin([str(v) for v in values]).to_numpy()
        notes.append(f"kept cells with {col} in {list(values)}: {int(hit.sum()):,} of {len(hit):,}")
        keep &= hit
    if exclude:
        hit = cells["label"].isin(list(exclude)).to_numpy() & ~cells["is_control"].to_numpy()
        notes.append(f"excluded perturbations {sorted(exclude)}: {int(hit.sum()):,} cells")
        keep &= ~hit
    if exclude_contexts:
        hit = cells["context"].isin(list(exclude_contexts)).to_numpy()
        notes.append(f"excluded contexts {sorted(exclude_contexts)}: {int(hit.sum()):,} cells")
        keep &= ~hit
    chosen = {
        "obs_filter": {k: list(map(str, v)) for k, v in obs_filter.items()},
        "exclude": sorted(exclude),
        "exclude_contexts": sorted(exclude_contexts),
        "dose_col": dose_col,
        "dose": dose,
    }
    cols.update({k: v for k, v in chosen.items() if v})  # only what was asked for: plain builds keep their recipe
    if dose_col is not None:
        if dose_col not in obs.columns:
            raise InvalidInputError(f"obs has no dose column {dose_col!r}; columns are {list(obs.columns)}")
        codes, uniques = pd.factorize(obs[dose_col].astype(str))
        doses = np.array([parse_dose(u) for u in uniques])[codes]
        perturbed = ~cells["is_control"].to_numpy()
        if dose is not None:
            at = np.isclose(doses, dose)
            if not (at & perturbed & keep).any():
                raise InvalidInputError(
                    f"no perturbed cell at dose {dose:g} in column {dose_col!r} "
                    f"(doses: {sorted(set(doses[perturbed].tolist()))[:10]})"
                )
            notes.append(
                f"kept perturbed cells at dose {dose:g} ({dose_col}): {int((at & perturbed).sum()):,} of "
                f"{int(perturbed.sum()):,}; controls at any dose"
            )
            keep &= at | ~perturbed
        else:
            cells = cells.copy()
            cells.loc[perturbed, "label"] = [
                f"{lab}{DOSE_SEP}{d:g}" for lab, d in zip(cells["label"].to_numpy()[perturbed], doses[perturbed])
            ]
            notes.append(f"every dose of {dose_col!r} kept: labels carry their dose (name{DOSE_SEP}dose)")
    return cells[keep]


def _fallback_ids(obs: pd.DataFrame, cells: pd.DataFrame, alias_cols: Sequence[str]) -> dict[str, list[str]]:
    """Per perturbation label, the distinct non-empty values of ``alias_cols`` among its cells, in column order."""
    out: dict[str, list[str]] = {}
    for col in alias_cols:
        if col not in obs.columns:
            raise InvalidInputError(f"obs has no alias column {col!r}; columns are {list(obs.columns)}")
        values = obs[col].astype(str).to_numpy()[cells["row"].to_numpy()]
        frame = pd.DataFrame({"label": cells["label"].astype(str).to_numpy(), "alias": values})
        frame = frame[~cells["is_control"].to_numpy() & ~frame["alias"].isin(["", "nan", "None"])].drop_duplicates()
        for label, alias in frame.itertuples(index=False):
            out.setdefault(label, []).append(alias)
    return out


def _gene_universe(var_names: np.ndarray, genes: str | Sequence[str], notes: list[str]) -> np.ndarray | None:
    """Positions of the kept genes (None: all)."""
    if isinstance(genes, str):
        if genes == "all":
            return None
        if genes != "coding":
            raise InvalidInputError(f"genes must be 'all', 'coding' or a list of gene names, not {genes!r}")
        from pertstore.catalog import default_gene_table

        table = default_gene_table()
        coding = table[table["gene_type"] == "protein-coding"]
        names = set(coding["symbol"]) | {e for ids in coding["ensembl_gene_ids"] for e in ids.split(";") if e}
        wanted, what = names, "protein-coding genes (org.Hs.eg.db)"
    else:
        wanted, what = set(map(str, genes)), f"the {len(genes)} listed genes"
    kept = np.flatnonzero(np.isin(var_names, list(wanted)))
    if not kept.size:
        raise InvalidInputError(f"none of the file's genes (e.g. {list(var_names[:5])}) is among {what}")
    notes.append(f"genes: {kept.size:,} of {var_names.size:,} kept ({what})")
    return kept
