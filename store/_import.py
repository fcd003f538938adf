"""Reading embeddings computed elsewhere: h5ad, npz, parquet and csv files."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from pertstore.errors import InvalidInputError

FORMATS = {
    ".h5ad": "h5ad",
    ".npz": "npz",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
}


def read_embedding_file(
    path: str | Path, *, field: str | None = None, id_col: str | None = None
) -> tuple[list[str], np.ndarray, dict]:
    """Ids and a ``[entity, dim]`` matrix from a file; also the parameters that shaped the read.

    - h5ad: ids in ``obs_names`` and vectors in ``X`` (default) or ``obsm/<key>``; or ids in
      ``var_names`` and vectors in ``varm/<key>``. Dense or sparse.
    - npz: arrays ``ids`` and ``values`` (``field`` names another values array).
    - parquet / csv / tsv: one id column (``id_col``, default the first column) and numeric columns.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InvalidInputError(f"{path}: the file is empty")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidInputError(f"{path}: unknown format {path.suffix!r}; use one of {sorted(set(FORMATS))}")
    reader = {"h5ad": _read_h5ad, "npz": _read_npz, "parquet": _read_table, "csv": _read_table}[fmt]
    try:
        ids, values, params = reader(path, field=field, id_col=id_col)
    except InvalidInputError:
        raise
    except Exception as e:  # truncated, bit-flipped or garbage files fail deep inside h5py/pyarrow/zipfile
        raise InvalidInputError(f"{path}: not a readable {fmt} file ({_reason(e, path)})") from e
    if len(ids) == 0:
        raise InvalidInputError(f"{path}: the file holds no rows")
    if values.ndim != 2 or values.shape[1] == 0:
        raise InvalidInputError(f"{path}: expected a 2-D matrix with at least one column, got shape {values.shape}")
    if values.dtype.kind not in "biuf":
        raise InvalidInputError(f"{path}: values are not numeric (dtype {values.dtype})")
    return [str(i) for i in ids], values, {"format": fmt, **params}


def _reason(error: Exception, path: Path) -> str:
    """The library's complaint, without the file's path (the caller names it) and cut short."""
    text = str(error).replace(str(path), "<file>").replace(str(path.resolve()), "<file>").splitlines()
    return f"{type(error).__name__}: {(text[0] if text else '')[:200]}"


def _read_h5ad(path: Path, *, field: str | None, id_col: str | None):
    import anndata as ad
    import scipy.sparse as sp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # old files: anndata moves elements on read
        adata = ad.read_h5ad(path, backed="r")
    try:
        field = field or "X"
        axis, _, key = field.partition("/")
        if field == "X":
            ids, values = adata.obs_names, adata.X
        elif axis == "obsm" and key in adata.obsm:
            ids, values = adata.obs_names, adata.obsm[key]
        elif axis == "varm" and key in adata.varm:
            ids, values = adata.var_names, adata.varm[key]
        else:
            raise InvalidInputError(
                f"{path}: no field {field!r}; available: X, "
                + ", ".join([f"obsm/{k}" for k in adata.obsm] + [f"varm/{k}" for k in adata.varm])
            )
        values = values.to_memory() if hasattr(values, "to_memory") else values
        values = values.toarray() if sp.issparse(values) else np.asarray(values)
        return list(ids), values, {"field": field}
    finally:
        adata.file.close()


def _read_npz(path: Path, *, field: str | None, id_col: str | None):
    with np.load(path, allow_pickle=False) as z:
        field = field or "values"
        for key in ("ids", field):
            if key not in z.files:
                raise InvalidInputError(f"{path}: npz lacks array {key!r} (has {z.files})")
        return [str(i) for i in z["ids"]], z[field], {"field": field}


def _read_table(path: Path, *, field: str | None, id_col: str | None):
    if path.suffix.lower() in (".parquet", ".pq"):
        df = pd.read_parquet(path)
    else:
        sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
        try:
            df = pd.read_csv(path, sep=sep, dtype={0: str} if id_col is None else {id_col: str})
        except pd.errors.EmptyDataError as e:
            raise InvalidInputError(f"{path}: the file is empty") from e
        except pd.errors.ParserError as e:
            raise InvalidInputError(f"{path}: ragged rows: {e}") from e
    if df.shape[1] < 2:
        raise InvalidInputError(f"{path}: expected an id column and at least one value column, got {list(df.columns)}")
    id_col = id_col or df.columns[0]
    if id_col not in df.columns:
        raise InvalidInputError(f"{path}: no id column {id_col!r} (columns: {list(df.columns)[:10]})")
    ids = df[id_col].astype(str).tolist()
    body = df.drop(columns=[id_col])
    for col in body.columns:
        if body[col].dtype.kind not in "biuf":
            coerced = pd.to_numeric(body[col], errors="coerce")
            bad = coerced.isna() & body[col].notna()
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise InvalidInputError(
                    f"{path}: non-numeric value {body[col].iloc[row]!r} in column {col!r}, row {row} (id {ids[row]!r})"
                )
            body[col] = coerced
    return ids, body.to_numpy(dtype=np.float64), {"id_col": str(id_col)}
