import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from store_helpers import store_snapshot

from pertstore import ConflictError, InvalidInputError

SYMBOLS = ["TP53", "BRCA1", "EGFR", "MYC", "KRAS"]


def _values(n=5, d=4, seed=0):
    return np.random.default_rng(seed).random((n, d)).astype(np.float32)


def _expect(store, source, values, ids=SYMBOLS):
    ds = store.align(source, ids)
    np.testing.assert_allclose(ds[source].values, values, rtol=1e-6)


@pytest.mark.parametrize("sparse", [False, True])
def test_h5ad_x(store, tmp_path, sparse):
    v = _values()
    path = tmp_path / "e.h5ad"
    ad.AnnData(X=sp.csr_matrix(v) if sparse else v, obs=pd.DataFrame(index=SYMBOLS)).write_h5ad(path)
    card = store.import_file(path, source="h5")
    assert card.recipe.inputs["file"].startswith("sha256:") and card.recipe.params["field"] == "X"
    _expect(store, "h5", v)


def test_h5ad_obsm_and_varm(store, tmp_path):
    v = _values(d=3)
    a = ad.AnnData(X=np.zeros((5, 2), dtype=np.float32), obs=pd.DataFrame(index=SYMBOLS), obsm={"emb": v})
    a.write_h5ad(tmp_path / "o.h5ad")
    store.import_file(tmp_path / "o.h5ad", source="obsm", field="obsm/emb")
    _expect(store, "obsm", v)
    b = ad.AnnData(X=np.zeros((2, 5), dtype=np.float32), var=pd.DataFrame(index=SYMBOLS), varm={"PCs": v})
    b.write_h5ad(tmp_path / "v.h5ad")
    store.import_file(tmp_path / "v.h5ad", source="varm", field="varm/PCs")
    _expect(store, "varm", v)
    with pytest.raises(InvalidInputError, match="no field 'obsm/nope'; available: X, obsm/emb"):
        store.import_file(tmp_path / "o.h5ad", source="x", field="obsm/nope")


def test_npz_parquet_csv(store, tmp_path):
    v = _values()
    np.savez(tmp_path / "e.npz", ids=np.array(SYMBOLS), values=v)
    store.import_file(tmp_path / "e.npz", source="npz")
    _expect(store, "npz", v)
    df = pd.DataFrame(v, columns=[f"d{i}" for i in range(4)]).assign(gene=SYMBOLS)
    df.to_parquet(tmp_path / "e.parquet")
    store.import_file(tmp_path / "e.parquet", source="pq", id_col="gene")
    _expect(store, "pq", v)
    df[["gene", "d0", "d1", "d2", "d3"]].to_csv(tmp_path / "e.csv", index=False)
    store.import_file(tmp_path / "e.csv", source="csv")
    _expect(store, "csv", v)


def test_importing_the_same_file_twice_is_a_no_op(store, tmp_path):
    np.savez(tmp_path / "e.npz", ids=np.array(SYMBOLS), values=_values())
    a = store.import_file(tmp_path / "e.npz", source="npz")
    b = store.import_file(tmp_path / "e.npz", source="npz")
    assert a.version == b.version and len(store.ls()) == 1


def _csv(tmp_path, text, name="bad.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


BAD_INPUTS = {
    "duplicate ids": (
        "gene,a,b\nTP53,1,2\nBRCA1,3,4\nTP53,5,6\n",
        r"id 'TP53' appears more than once \(rows 0 and 2\)",
    ),
    "nan": ("gene,a,b\nTP53,1,2\nBRCA1,,4\n", r"NaN or inf values; first at row 1 \(id 'BRCA1'\), column 0"),
    "inf": ("gene,a,b\nTP53,1,inf\n", r"row 0 \(id 'TP53'\), column 1"),
    "empty": ("", "the file is empty"),
    "header only": ("gene,a,b\n", "holds no rows"),
    "ragged": ("gene,a,b\nTP53,1,2\nBRCA1,3,4,5,6\n", "ragged rows"),
    "non-numeric": ("gene,a,b\nTP53,1,2\nBRCA1,x,4\n", r"non-numeric value 'x' in column 'a', row 1 \(id 'BRCA1'\)"),
    "unresolvable": ("gene,a\nTP53,1\nNOT_A_GENE_1,2\n", r"1 id\(s\) do not resolve .* row 1 'NOT_A_GENE_1'"),
    "two aliases of one gene": (
        "gene,a\nTP53,1\nENSG00000141510,2\n",
        r"rows 0 \('TP53'\) and 1 \('ENSG00000141510'\) both resolve",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_clear_error_and_changes_nothing(store, tmp_path, case):
    np.savez(tmp_path / "ok.npz", ids=np.array(SYMBOLS), values=_values())
    store.import_file(tmp_path / "ok.npz", source="good")
    before = store_snapshot(store)
    text, message = BAD_INPUTS[case]
    path = _csv(tmp_path, text)
    with pytest.raises(InvalidInputError, match=message) as info:
        store.import_file(path, source="good" if case == "nan" else "new")
    assert str(path) in str(info.value)
    assert store_snapshot(store) == before


def test_dims_disagreeing_with_the_source_are_refused(store, tmp_path):
    np.savez(tmp_path / "a.npz", ids=np.array(SYMBOLS), values=_values(d=4))
    np.savez(tmp_path / "b.npz", ids=np.array(SYMBOLS), values=_values(d=5))
    store.import_file(tmp_path / "a.npz", source="s")
    before = store_snapshot(store)
    with pytest.raises(ConflictError, match="dim 4; the new set is gene with dim 5"):
        store.import_file(tmp_path / "b.npz", source="s")
    assert store_snapshot(store) == before


def test_drop_options_skip_and_record(store, tmp_path):
    path = _csv(tmp_path, "gene,a\nTP53,1\nNOT_A_GENE_1,2\nBRCA1,\nEGFR,3\n", "mixed.csv")
    card = store.import_file(path, source="s", drop_unresolved=True, drop_nonfinite=True)
    assert card.n_rows == 2
    assert card.failed == {"NOT_A_GENE_1": "unresolved", "BRCA1": "NaN or inf values"}
    _expect(store, "s", np.array([[1], [3]], dtype=np.float32), ["TP53", "EGFR"])


def test_unknown_format_and_missing_file(store, tmp_path):
    with pytest.raises(InvalidInputError, match="no such file"):
        store.import_file(tmp_path / "nope.csv", source="s")
    p = tmp_path / "e.xlsx"
    p.write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="unknown format"):
        store.import_file(p, source="s")
