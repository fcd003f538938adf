"""Read a single-cell perturbation dataset (h5ad or AnnData-zarr) into :class:`PerturbationData`."""

from __future__ import annotations

import ast
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Protocol

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
import zarr
from anndata.io import read_elem, sparse_dataset
from pertstore.store import file_digest

from pertstore.errors import InvalidInputError

from ._matrix import CellMatrix

log = logging.getLogger(__name__)

PERT_COLS = ("perturbation", "target", "gene", "condition", "pert_id", "gene_id")
BATCH_COLS = ("batch", "gem_group", "gemgroup", "plate", "replicate")
CONTEXT_COLS = ("cell_line", "cell_type", "context")
CONTROL_COLS = ("is_control", "control")
CONTROL_LABELS = ("control", "non-targeting", "non_targeting", "ctrl", "NT", "DMSO", "vehicle")
SAMPLE_ROWS = 20_000
"""Rows inspected to tell raw counts from log-normalised values."""


class Resolution(Protocol):
    """What a resolver returns (``Store.resolve`` fits)."""

    ids: list[str | None]
    unresolved: list[str]
    ambiguous: dict[str, list[str]]


Resolver = Callable[[list[str]], Resolution]


@dataclass
class PerturbationData:
    """A perturbation dataset ready for task computation.

    Attributes
    ----------
    matrix
        Row access to the expression values (normalised block by block).
    cells
        One row per cell kept: ``row`` (position in the file), ``label``,
        ``is_control``, ``batch`` and ``context`` (categoricals).
    genes
        The file's ``var`` (index = gene ids).
    perturbations
        One row per (context, label): ``context``, ``label``, ``entity_id``,
        ``combinatorial``, ``n_cells``.
    notes
        Human-readable decisions (detected input type, defaults used, labels
        excluded or unresolved).
    """

    path: str
    matrix: CellMatrix
    cells: pd.DataFrame
    genes: pd.DataFrame
    perturbations: pd.DataFrame
    columns: dict[str, Any]
    input: Literal["counts", "log1p", "log", "differential"]
    unresolved: list[str] = field(default_factory=list)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def contexts(self) -> list[str]:
        return list(self.cells["context"].cat.categories)

    @cached_property
    def sha256(self) -> str:
        """SHA-256 of the input file, or of an in-memory AnnData's matrix and names (computed on first use)."""
        if self.path:
            return file_digest(self.path)
        h = hashlib.sha256()
        m = sp.csr_matrix(self.matrix.elem)
        for part in (m.data, m.indices, m.indptr, self.matrix.obs_names.astype(str), self.matrix.var_names.astype(str)):
            h.update(np.ascontiguousarray(part).tobytes())
        return h.hexdigest()


def read_perturbation_data(
    path: str | Path | ad.AnnData,
    *,
    pert_col: str | None = None,
    control_col: str | None = None,
    control_label: str | None = None,
    batch_col: str | None = None,
    context_col: str | None = None,
    context: str = "",
    layer: str | None = None,
    input: Literal["auto", "counts", "log1p", "log", "differential"] = "auto",
    combinatorial: bool = False,
    combo_sep: str = "+",
    perturbations: Sequence[str] | None = None,
    resolve: Resolver | None = None,
    backed: bool = False,
    dose_col: str | None = None,
    dose: float | None = None,
    obs_filter: dict[str, Sequence[str]] | None = None,
    exclude: Sequence[str] = (),
    exclude_contexts: Sequence[str] = (),
    batch_from_barcode: bool = False,
    genes: Literal["all", "coding"] | Sequence[str] = "all",
    normalise_kept: bool = False,
    alias_cols: Sequence[str] = (),
) -> PerturbationData:
    """Read cells, their perturbation, control status, batch and context.

    Parameters
    ----------
    path
        An ``.h5ad`` file or an AnnData-zarr directory, or an AnnData object
        (opened with ``backed='r'``, its ``X`` is read in row blocks).
    pert_col
        obs column with perturbation labels; default: the first of
        ``perturbation, target, gene, condition, pert_id, gene_id`` present.
    control_col, control_label
        A boolean obs column marking control cells, or the label of control
        cells in ``pert_col``. Default: a boolean ``is_control``/``control``
        column, else the one label among ``control, non-targeting, ctrl, NT,
        DMSO, vehicle`` present.
    batch_col
        obs column with batches; default ``batch, gem_group, plate, replicate``;
        without one every cell of a context is one batch (noted).
    context_col
        obs column with the context (cell line); default ``cell_line, cell_type,
        context``; without one all cells belong to the context ``context``.
    layer
        Read ``layers[layer]`` instead of ``X``.
    input
        ``counts`` (non-negative integers, normalised to 1e4 and log1p),
        ``log1p`` or ``log`` (already on a log scale, e.g. log1p of normalised
        counts or log2 bulk expression: used as is), ``differential`` (values
        that are already differences, e.g. per-well L1000 z-scores: replicates
        averaged, no control subtracted, negative values allowed) or ``auto``
        (decided from the first 20,000 cells and ``uns['log1p']``). A sample
        (well) of a bulk file stands for a cell: batches are plates.
    combinatorial
        Keep labels joined by ``combo_sep`` (``A+B``) as their own
        perturbations; by default they are excluded and listed in ``excluded``.
    perturbations
        Keep only these labels (controls are always kept); a label without
        cells raises.
    resolve
        ``labels -> Resolution`` (e.g. ``lambda ids: store.resolve(ids, kind="gene")``);
        parts of combinatorial labels are resolved one by one and joined with
        ``combo_sep``. Unresolved labels are reported, not fatal.
    backed
        Leave ``X`` on disk and read it in row blocks.
    dose_col, dose
        obs column with each cell's dose (numbers, or the reference's
        ``"[('drug', 5.0, 'uM')]"`` strings). With ``dose``, only perturbed
        cells at that dose are kept (controls at any dose); without, each
        label carries its dose (``drug@5``), resolved without it.
    obs_filter
        Keep only cells whose obs column holds one of the values, e.g.
        ``{"pass_filter": ["full"]}`` (Tahoe's QC) or ``{"dataset": ["norman19"]}``.
    exclude, exclude_contexts
        Perturbation labels and contexts left out (listed in the notes).
    alias_cols
        obs columns with other ids of each perturbation (e.g. ``pert_id`` Broad
        ids, ``smiles``), tried in order when the label does not resolve.
    batch_from_barcode
        Take the batch from the 10x gem-group suffix of the cell barcode
        (``ACGT...-3`` -> ``3``), for files without a gem-group column.
    genes, normalise_kept
        The gene universe: ``all`` the file's genes, ``coding`` (protein-coding
        genes of the bundled human gene table, matched by symbol or Ensembl id)
        or a list of gene names; counts are normalised over every gene of the
        file first, or over the kept genes (``normalise_kept``).

    Returns
    -------
    The dataset; ``notes`` records every default that was applied.
    """
    notes: list[str] = []
    x_path = f"layers/{layer}" if layer else "X"
    if isinstance(path, ad.AnnData):
        path, obs, var, uns_log1p, elem = _from_anndata(path, layer)
    else:
        path, obs, var, uns_log1p, elem = _from_file(str(path), x_path, backed)

    obs_names = np.asarray(obs.index.astype(str))
    var_names = np.asarray(var.index.astype(str))
    if batch_from_barcode:
        if batch_col is not None:
            raise InvalidInputError("pass batch_col or batch_from_barcode, not both")
        obs = obs.assign(_barcode_batch=_barcode_batches(obs.index))
        batch_col = "_barcode_batch"
        notes.append("batch: the gem-group suffix of each cell barcode")
    cols = _pick_columns(obs, pert_col, control_col, control_label, batch_col, context_col, notes)
    if cols["context_col"] is None:
        cols["context"] = context  # the name given to the one context: part of the recipe
    cells = _cells(obs, cols, context)
    cells = _select(
        cells,
        obs,
        cols,
        dose_col=dose_col,
        dose=dose,
        obs_filter=obs_filter or {},
        exclude=exclude,
        exclude_contexts=exclude_contexts,
        notes=notes,
    )
    if batch_from_barcode and (cells["batch"] == "").any():
        raise InvalidInputError(
            f"{path}: cell {str(cells.index[(cells['batch'] == '').to_numpy()][0])!r} has no "
            "gem-group suffix (expected a barcode like ACGT...-3); pass batch_col instead"
        )
    kind = _detect_input(elem, input, uns_log1p, notes)
    kept_genes = _gene_universe(var_names, genes, notes)
    if kept_genes is not None:
        var = var.iloc[kept_genes]
        cols["genes"] = (
            genes
            if isinstance(genes, str)
            else {"n": len(genes), "sha256": hashlib.sha256("\n".join(sorted(map(str, genes))).encode()).hexdigest()}
        )
        cols["normalise_kept"] = bool(normalise_kept)
        if kind == "counts":
            notes.append(
                "counts normalised over the kept genes"
                if normalise_kept
                else "counts normalised over every gene of the file, then the kept genes taken"
            )
    matrix = CellMatrix(
        elem,
        is_counts=kind == "counts",
        obs_names=obs_names,
        var_names=var_names,
        source=(path, x_path) if path else None,
        genes=kept_genes,
        normalise_kept=normalise_kept,
        allow_negative=kind == "differential",
    )

    is_combo = cells["label"].str.contains(combo_sep, regex=False) & ~cells["is_control"]
    excluded: list[str] = []
    if is_combo.any() and not combinatorial:
        excluded = sorted(cells.loc[is_combo, "label"].unique())
        notes.append(
            f"{len(excluded)} combinatorial labels (joined by {combo_sep!r}) excluded; "
            "pass combinatorial=True to keep them"
        )
        cells = cells[~is_combo]
    if perturbations is not None:
        wanted = set(map(str, perturbations))
        present = set(cells.loc[~cells["is_control"], "label"])
        missing = sorted(wanted - present)
        if missing:
            raise InvalidInputError(
                f"{path}: perturbation(s) {missing[:10]} in column {cols['pert_col']!r} have no cells after filtering"
            )
        cells = cells[cells["is_control"] | cells["label"].isin(wanted)]
    for c in ("label", "batch", "context"):
        cells[c] = cells[c].astype(str).astype("category")
    _check_controls(cells, cols, path)

    perts = (
        cells[~cells["is_control"]].groupby(["context", "label"], observed=True).size().rename("n_cells").reset_index()
    )
    perts["context"] = perts["context"].astype(str)
    perts["label"] = perts["label"].astype(str)
    perts["combinatorial"] = perts["label"].str.contains(combo_sep, regex=False)
    if alias_cols:
        cols["alias_cols"] = list(alias_cols)
    unresolved, ambiguous = _resolve(perts, resolve, combo_sep, _fallback_ids(obs, cells, alias_cols))
    if unresolved:
        notes.append(f"{len(unresolved)} perturbation label(s) did not resolve to an entity: {unresolved[:10]}")
    if ambiguous:
        notes.append(f"{len(ambiguous)} perturbation label(s) resolved ambiguously: {sorted(ambiguous)[:10]}")
    for n in notes:
        log.info("%s: %s", path, n)
    return PerturbationData(
        path=path,
        matrix=matrix,
        cells=cells,
        genes=var,
        perturbations=perts,
        columns=cols,
        input=kind,
        unresolved=unresolved,
        ambiguous=ambiguous,
        excluded=excluded,
        notes=notes,
    )


def _from_file(path: str, x_path: str, backed: bool) -> tuple[str, pd.DataFrame, pd.DataFrame, bool, Any]:
    root, closer = _open(path)
    try:
        obs = read_elem(root["obs"])
        var = read_elem(root["var"])
        uns_log1p = "uns" in root and "log1p" in root["uns"]
        if x_path not in root:
            raise InvalidInputError(f"{path}: no matrix {x_path!r} in the file")
        elem = root[x_path]
        if isinstance(elem, h5py.Group | zarr.Group):
            elem = sparse_dataset(elem)
        if not backed:
            elem = elem.to_memory() if hasattr(elem, "to_memory") else np.asarray(elem[...])
            closer()
    except Exception:
        closer()
        raise
    return path, obs, var, uns_log1p, elem


def _from_anndata(adata: ad.AnnData, layer: str | None) -> tuple[str, pd.DataFrame, pd.DataFrame, bool, Any]:
    """An AnnData object, in memory or opened with ``backed='r'`` (then ``X`` stays on disk)."""
    if layer is not None and layer not in adata.layers:
        raise InvalidInputError(f"AnnData has no layer {layer!r}; layers are {list(adata.layers)}")
    elem = adata.layers[layer] if layer else adata.X
    path = str(adata.filename) if adata.isbacked else ""
    return path, adata.obs, adata.var, "log1p" in adata.uns, elem


def _open(path: str) -> tuple[Any, Callable[[], None]]:
    if not Path(path).exists():
        raise InvalidInputError(f"{path}: no such file or directory")
    if Path(path).is_dir() or path.endswith(".zarr"):
        return zarr.open_group(path, mode="r"), lambda: None
    f = h5py.File(path, "r")
    return f, f.close


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


def _detect_input(elem: Any, input: str, uns_log1p: bool, notes: list[str]) -> str:
    if input == "differential":
        notes.append(
            "input: differential values per sample (e.g. z-scores): averaged over replicates and batches, "
            "no control subtracted"
        )
        return input
    if input in ("counts", "log1p", "log"):
        return input
    if input != "auto":
        raise InvalidInputError(f"input must be 'auto', 'counts', 'log1p', 'log' or 'differential', not {input!r}")
    n = min(SAMPLE_ROWS, elem.shape[0])
    if isinstance(elem, sp.csr_matrix | sp.csr_array):
        values = elem.data[: elem.indptr[n]]  # a view: no copy of the sampled rows
    else:
        sample = elem[:n]
        values = np.asarray(sample.data if hasattr(sample, "data") and not isinstance(sample, np.ndarray) else sample)
    values = values[np.isfinite(values)]
    if values.size and (values < 0).any():
        raise InvalidInputError(
            f"X holds negative values (min {values.min()!r}): neither counts nor log-scale "
            "expression (pass input='differential' for z-scores or fold changes)"
        )
    if not uns_log1p and np.array_equal(values, np.round(values)):
        notes.append("input: raw counts (non-negative integers); normalised to 1e4 counts per cell, then log1p")
        return "counts"
    top = float(values.max()) if values.size else 0.0
    if not uns_log1p and top > 50:
        raise InvalidInputError(
            f"X holds non-integer values up to {top:.4g}: neither raw counts nor log1p; "
            "pass input='counts' or input='log1p'"
        )
    why = "uns['log1p'] present" if uns_log1p else f"non-integer values, max {top:.4g}"
    notes.append(f"input: already log-normalised ({why}); used as is, not renormalised")
    return "log1p"


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


def _resolve(
    perts: pd.DataFrame, resolve: Resolver | None, sep: str, fallbacks: dict[str, list[str]] | None = None
) -> tuple[list[str], dict[str, list[str]]]:
    mapping, unresolved, ambiguous = resolve_labels(perts["label"].unique(), resolve, sep, fallbacks)
    perts["entity_id"] = perts["label"].map(mapping) if resolve is not None else None
    return unresolved, ambiguous


def resolve_labels(
    labels: Sequence[str],
    resolve: Resolver | None,
    sep: str = "+",
    fallbacks: dict[str, list[str]] | None = None,
) -> tuple[dict[str, str | None], list[str], dict[str, list[str]]]:
    """Canonical entity ids of perturbation labels, combinations resolved part by part.

    A label's dose suffix (``drug@5``) is not resolved. ``fallbacks`` gives, per
    label, other ids of the same perturbation (e.g. a Broad id, a SMILES) tried in
    order when the label itself does not resolve.

    Returns
    -------
    ``(mapping, unresolved, ambiguous)``: ``label -> entity id`` (parts joined by
    ``sep``; None when a part does not resolve), the sorted unresolved labels and
    ``alias -> candidate ids`` of the parts that resolved ambiguously. Without a
    resolver every label maps to None and nothing is reported.
    """
    labels = sorted(set(map(str, labels)))
    if resolve is None:
        return dict.fromkeys(labels), [], {}
    fallbacks = fallbacks or {}
    parts = {p for lab in labels for p in lab.split(DOSE_SEP)[0].split(sep)}
    parts |= {a for lab in labels for a in fallbacks.get(lab, [])}
    parts = sorted(parts)
    res = resolve(parts)
    ids = dict(zip(parts, res.ids, strict=True))
    mapping: dict[str, str | None] = {}
    for lab in labels:
        got = [ids[p] for p in lab.split(DOSE_SEP)[0].split(sep)]
        mapping[lab] = None if any(g is None for g in got) else sep.join(got)
        if mapping[lab] is None:
            mapping[lab] = next((ids[a] for a in fallbacks.get(lab, []) if ids[a] is not None), None)
    unresolved = sorted(lab for lab, v in mapping.items() if v is None)
    ambiguous = {k: list(v) for k, v in res.ambiguous.items()}
    return mapping, unresolved, ambiguous
