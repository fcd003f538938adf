import json

import numpy as np
import pytest
import xarray as xr

from pertstore import ConflictError, NotFoundError, Store
from pertstore.store import set_key, to_anndata, to_arrow, to_numpy, to_pandas

from store_helpers import random_set


def test_align_returns_rows_in_caller_order_with_nan_and_coverage(store, gene_ids):
    values, recipe = random_set(store, gene_ids[:1500])
    other, _ = random_set(store, gene_ids[500:], source="other", dim=8, seed=1)
    query = [gene_ids[1700], gene_ids[3], "not-a-gene", gene_ids[1000], gene_ids[3]]
    ds = store.align(["rand", "other"], query)
    assert list(ds["entity"].values) == query
    np.testing.assert_array_equal(ds["rand"].values[1], values[3])
    np.testing.assert_array_equal(ds["rand"].values[3], values[1000])
    np.testing.assert_array_equal(ds["rand"].values[4], values[3])
    assert np.isnan(ds["rand"].values[0]).all() and np.isnan(ds["rand"].values[2]).all()
    np.testing.assert_array_equal(ds["other"].values[0], other[1200])
    assert ds["covered"].sel(source="rand").values.tolist() == [False, True, False, True, True]
    assert ds["covered"].sel(source="other").values.tolist() == [True, False, False, True, False]
    assert ds.attrs["unresolved"] == ["not-a-gene"]
    assert ds.attrs["versions"] == {"rand": recipe.version, "other": ds.attrs["versions"]["other"]}


def test_align_resolves_any_namespace(store):
    ids = store.resolve(["TP53", "BRCA1", "EGFR"], "gene").ids
    values, _ = random_set(store, ids)
    ds = store.align("rand", ["egfr", "ENSG00000141510.5", "672"])
    np.testing.assert_array_equal(ds["rand"].values, values[[2, 0, 1]])


def test_set_is_readable_by_xarray_open_zarr(store, gene_ids):
    values, recipe = random_set(store, gene_ids, dim=40)
    ds = xr.open_zarr(f"{store.uri}/{set_key('rand', recipe.version)}")
    assert ds["values"].dims == ("entity", "dim")
    np.testing.assert_array_equal(ds["values"].values, values)
    assert list(ds["entity"].values) == gene_ids
    assert ds.attrs["recipe"]["params"] == {"seed": 0, "dim": 40}
    assert ds.attrs["encoding-type"] == "pertstore-embedding-set"
    assert ds.attrs["checksum"].startswith("sha256:")


def test_publishing_the_same_recipe_again_is_a_no_op(store, gene_ids):
    values, recipe = random_set(store, gene_ids[:100])
    before = store.storage.read_bytes(f"{set_key('rand', recipe.version)}/zarr.json")
    card = store.write_set(recipe, gene_ids[:100], values * 2)  # same recipe: nothing is recomputed or rewritten
    assert card.version == recipe.version
    assert store.storage.read_bytes(f"{set_key('rand', recipe.version)}/zarr.json") == before
    assert len(store.ls()) == 1
    np.testing.assert_array_equal(store.get("rand").values, values)


def test_get_whole_set_and_subset(store, gene_ids):
    values, _ = random_set(store, gene_ids[:300])
    da = store.get("rand")
    assert da.dims == ("entity", "dim") and list(da["entity"].values) == gene_ids[:300]
    np.testing.assert_array_equal(da.values, values)
    sub = store.get("rand", [gene_ids[10], gene_ids[2]])
    np.testing.assert_array_equal(sub.values, values[[10, 2]])


def test_exports_agree(store, gene_ids):
    values, _ = random_set(store, gene_ids[:50])
    ds = store.align("rand", [gene_ids[4], "nope", gene_ids[7]])
    arr = to_numpy(ds)
    np.testing.assert_array_equal(arr[0], values[4])
    df = to_pandas(ds)
    assert df.index.tolist() == [gene_ids[4], "nope", gene_ids[7]]
    np.testing.assert_array_equal(df[[f"rand:{j}" for j in range(16)]].to_numpy()[2], values[7])
    assert df["covered:rand"].tolist() == [True, False, True]
    adata = to_anndata(ds)
    np.testing.assert_array_equal(adata.obsm["rand"][0], values[4])
    assert adata.obs["covered_rand"].tolist() == [True, False, True]
    table = to_arrow(ds)
    assert table.column("rand").null_count == 1
    np.testing.assert_array_equal(np.array(table.column("rand")[2].as_py(), dtype=np.float32), values[7])


def test_contexts_tags_and_global_fallback(store, gene_ids):
    k562, _ = random_set(store, gene_ids[:20], source="pca", context="K562", seed=1)
    hepg2, _ = random_set(store, gene_ids[:20], source="pca", context="HepG2", seed=2)
    glob, glob_recipe = random_set(store, gene_ids[:20], source="net", seed=3)
    ds = store.align(["pca", "net"], gene_ids[:2], context="HepG2")
    np.testing.assert_array_equal(ds["pca"].values, hepg2[:2])
    np.testing.assert_array_equal(ds["net"].values, glob[:2])  # global sources serve every context
    assert set(store.contexts()) == {"K562", "HepG2"}
    with pytest.raises(NotFoundError, match="contextual; pass a context"):
        store.align("pca", gene_ids[:2])
    with pytest.raises(NotFoundError, match="no set for context 'Jurkat'"):
        store.align("pca", gene_ids[:2], context="Jurkat")
    newer, newer_recipe = random_set(store, gene_ids[:20], source="net", seed=4)
    np.testing.assert_array_equal(store.align("net", gene_ids[:1])["net"].values, newer[:1])  # latest moved
    store.tag("net", glob_recipe.version, "paper-v1")
    np.testing.assert_array_equal(store.align("net", gene_ids[:1], tag="paper-v1")["net"].values, glob[:1])
    np.testing.assert_array_equal(store.align("net", gene_ids[:1], version=newer_recipe.version)["net"].values, newer[:1])
    with pytest.raises(NotFoundError, match="no tag 'nope'"):
        store.align("net", gene_ids[:1], tag="nope")
    with pytest.raises(NotFoundError, match="unknown source 'ghost'"):
        store.align("ghost", gene_ids[:1])


def test_dims_must_agree_within_a_source(store, gene_ids):
    random_set(store, gene_ids[:10], dim=16)
    with pytest.raises(ConflictError, match="dim 16"):
        random_set(store, gene_ids[:10], dim=17, seed=5)


def test_catalog_rebuild_gives_the_same_answers(store, gene_ids):
    random_set(store, gene_ids[:100], source="a", context="K562")
    _, r = random_set(store, gene_ids[50:200], source="b", seed=1)
    store.tag("b", r.version, "paper-v1")
    before = (store.ls().drop(columns=["created_at"]), store.catalog.coverage(),
              store.align(["a", "b"], gene_ids[:120], context="K562"))
    store.catalog.clear()
    with pytest.raises(NotFoundError):
        store.align(["a"], gene_ids[:2], context="K562")
    counts = store.rebuild_catalog()
    assert counts["sets"] == 2 and counts["tags"] == 3 and counts["gene"] > 70_000
    after = (store.ls().drop(columns=["created_at"]), store.catalog.coverage(),
             store.align(["a", "b"], gene_ids[:120], context="K562"))
    assert before[0].equals(after[0]) and before[1].equals(after[1])
    xr.testing.assert_identical(before[2], after[2])


def test_catalog_file_is_recreated_when_missing(store, gene_ids):
    values, _ = random_set(store, gene_ids[:10])
    store.close()
    store.catalog_path.unlink()
    reopened = Store.open(store.uri)
    np.testing.assert_array_equal(reopened.get("rand").values, values)
    reopened.close()


def test_catalog_schema_is_versioned(store):
    from pertstore.catalog import MIGRATIONS

    got = set(store.catalog.query("SELECT name FROM schema_migrations").name)
    assert got == {name for name, _ in MIGRATIONS}
    assert {"jobs", "job_recipes", "job_failures"} <= set(store.catalog.query("SHOW TABLES").name)


def test_store_marker_and_missing_store(tmp_path):
    with pytest.raises(NotFoundError, match="no pertstore store"):
        Store.open(tmp_path / "nothing")
    s = Store.init(tmp_path / "new")
    assert json.loads(s.storage.read_bytes("pertstore.json"))["encoding-type"] == "pertstore-store"
    s.close()


def test_reads_touch_only_the_chunks_they_need(store, gene_ids):
    values, recipe = random_set(store, gene_ids, dim=256)  # 64 rows per chunk -> 32 chunks
    store.cache.clear()
    s = store.open_set("rand")
    reads = []
    original = s.storage.read_bytes
    s.storage.read_bytes = lambda key: reads.append(key) or original(key)
    try:
        out = s.rows(np.array([0, 5, 33, 1999]))
    finally:
        s.storage.read_bytes = original
    np.testing.assert_array_equal(out, values[[0, 5, 33, 1999]])
    assert s.card.chunk_rows == 64
    assert sorted(reads) == sorted(f"{set_key('rand', recipe.version)}/values/c/{c}/0" for c in (0, 31))
    reads.clear()
    s.storage.read_bytes = lambda key: reads.append(key) or original(key)
    np.testing.assert_array_equal(s.rows(np.array([1, 70])), values[[1, 70]])  # chunk 0 is cached
    s.storage.read_bytes = original
    assert reads == [f"{set_key('rand', recipe.version)}/values/c/1/0"]
