"""Turning an aligned :class:`xarray.Dataset` into numpy, pandas, AnnData and Arrow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from pertstore.errors import InvalidInputError


def sources_of(ds: xr.Dataset) -> list[str]:
    return [str(s) for s in ds.coords["source"].values]


def to_numpy(ds: xr.Dataset, source: str | None = None) -> np.ndarray:
    """One source's ``[entity, dim]`` block, or all sources side by side (in source order)."""
    if source is not None:
        return ds[source].values
    return np.hstack([ds[s].values for s in sources_of(ds)])


def to_pandas(ds: xr.Dataset) -> pd.DataFrame:
    """Rows = the query ids in order; columns ``<source>:<j>`` and ``covered:<source>``."""
    frames = [pd.DataFrame({"entity_id": ds["entity_id"].values}, index=pd.Index(ds["entity"].values, name="id"))]
    for s in sources_of(ds):
        block = ds[s].values
        frames.append(pd.DataFrame(block, index=frames[0].index, columns=[f"{s}:{j}" for j in range(block.shape[1])]))
    frames.append(
        pd.DataFrame(
            {f"covered:{s}": ds["covered"].sel(source=s).values for s in sources_of(ds)}, index=frames[0].index
        )
    )
    return pd.concat(frames, axis=1)


def to_anndata(ds: xr.Dataset):
    """An AnnData with one observation per query id and one ``obsm`` entry per source."""
    import anndata as ad

    obs = pd.DataFrame(
        {"entity_id": ds["entity_id"].values.astype(str)}, index=pd.Index(ds["entity"].values.astype(str), name="id")
    )
    for s in sources_of(ds):
        obs[f"covered_{s}"] = ds["covered"].sel(source=s).values
    obs.index = obs.index.astype(str)
    adata = ad.AnnData(obs=obs, obsm={s: ds[s].values for s in sources_of(ds)})
    adata.uns["pertstore"] = {"versions": dict(ds.attrs.get("versions", {})), "context": ds.attrs.get("context", "")}
    return adata


def to_arrow(ds: xr.Dataset):
    """An Arrow table: ``id``, ``entity_id`` and one fixed-size-list float32 column per source (null where uncovered).

    The schema metadata keeps the context, versions, unresolved and ambiguous ids (JSON), so
    :func:`from_arrow` gives back the same dataset.
    """
    import pyarrow as pa

    cols = {"id": pa.array(ds["entity"].values.astype(str)), "entity_id": pa.array(ds["entity_id"].values.astype(str))}
    for s in sources_of(ds):
        block = np.ascontiguousarray(ds[s].values, dtype=np.float32)
        covered = ds["covered"].sel(source=s).values
        flat = pa.array(block.reshape(-1))
        cols[s] = pa.FixedSizeListArray.from_arrays(flat, block.shape[1], mask=pa.array(~covered))
    return pa.table(cols, metadata=arrow_metadata(ds))


def arrow_metadata(ds: xr.Dataset) -> dict[str, str]:
    """The dataset's attrs as Arrow schema metadata."""
    return {
        "pertstore.context": ds.attrs.get("context", ""),
        "pertstore.versions": json.dumps(dict(ds.attrs.get("versions", {}))),
        "pertstore.unresolved": json.dumps(list(ds.attrs.get("unresolved", []))),
        "pertstore.ambiguous": json.dumps(dict(ds.attrs.get("ambiguous", {}))),
    }


def from_arrow(table) -> xr.Dataset:
    """The aligned dataset an Arrow table of :func:`to_arrow` holds (NaN rows where a source is null)."""
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    sources = [c for c in table.column_names if c not in ("id", "entity_id")]
    data_vars, covered = {}, []
    for s in sources:
        col = table.column(s).combine_chunks()
        dim = col.type.list_size
        flat = col.values.slice(col.offset * dim, len(col) * dim).to_numpy(zero_copy_only=False)
        block = flat.reshape(len(col), dim).astype(np.float32, copy=True)  # writable, like Store.align's
        valid = col.is_valid().to_numpy(zero_copy_only=False) if col.null_count else np.ones(len(col), bool)
        block[~valid] = np.nan
        data_vars[s] = (("entity", f"{s}_dim"), block)
        covered.append(valid)
    data_vars["covered"] = (
        ("entity", "source"),
        np.stack(covered, axis=1) if covered else np.zeros((table.num_rows, 0), bool),
    )
    return xr.Dataset(
        data_vars,
        coords={
            "entity": np.asarray(table.column("id").to_pylist(), dtype=object),
            "entity_id": ("entity", np.asarray(table.column("entity_id").to_pylist(), dtype=object)),
            "source": sources,
        },
        attrs={
            "context": meta.get("pertstore.context", ""),
            "versions": json.loads(meta.get("pertstore.versions", "{}")),
            "unresolved": json.loads(meta.get("pertstore.unresolved", "[]")),
            "ambiguous": json.loads(meta.get("pertstore.ambiguous", "{}")),
        },
    )


def write_aligned(ds: xr.Dataset, path: str | Path) -> Path:
    """Write an aligned dataset by suffix: ``.npz``, ``.parquet``, ``.csv``, ``.h5ad``, ``.arrow``, ``.zarr``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        arrays: dict[str, np.ndarray] = {
            "ids": ds["entity"].values.astype(str),
            "entity_id": ds["entity_id"].values.astype(str),
        }
        arrays.update({s: ds[s].values for s in sources_of(ds)})
        arrays.update({f"covered_{s}": ds["covered"].sel(source=s).values for s in sources_of(ds)})
        np.savez(path, **arrays)  # type: ignore[arg-type]
    elif suffix == ".parquet":
        to_pandas(ds).to_parquet(path)
    elif suffix == ".csv":
        to_pandas(ds).to_csv(path)
    elif suffix == ".h5ad":
        to_anndata(ds).write_h5ad(path)
    elif suffix in (".arrow", ".feather"):
        import pyarrow.feather as feather

        feather.write_feather(to_arrow(ds), path)
    else:
        raise InvalidInputError(f"{path}: unknown output format; use .npz, .parquet, .csv, .h5ad or .arrow")
    return path
