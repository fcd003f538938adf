import json
import os

import numpy as np
import pytest
import xarray as xr
from pertstore.store import set_key, to_anndata, to_arrow, to_numpy, to_pandas
from store_helpers import random_set, stored_bytes_digest

from pertstore import ConflictError, NotFoundError, Store


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


def test_rows_come_from_the_catalog_until_a_set_is_read_again_then_from_memory(store, gene_ids):
    values, _ = random_set(store, gene_ids[:1500])
    other, _ = random_set(store, gene_ids[500:], source="other", dim=8, seed=1)
    store.cache.clear()
    query = [gene_ids[1700], gene_ids[3], "not-a-gene", gene_ids[1000], gene_ids[3]]
    reads = []
    _record_reads(store.storage, reads)
    results = [store.align(["rand", "other"], query)]
    assert not [key for key, _ in reads if "/entity/" in key]  # a one-shot read takes rows from the catalog
    results.append(store.align(["rand", "other"], query))  # read again: rows mapped in the background
    store.settle()
    catalog_positions, store.catalog.positions = store.catalog.positions, None  # memory must answer now
    results.append(store.align(["rand", "other"], query))
    results.append(store.align(["other"], query[::-1]))
    store.catalog.positions = catalog_positions
    nan_rand, nan_other = np.full(16, np.nan, np.float32), np.full(8, np.nan, np.float32)
    np.testing.assert_array_equal(
        results.pop()["other"].values, [nan_other, other[500], nan_other, nan_other, other[1200]]
    )
    for ds in results:
        np.testing.assert_array_equal(ds["rand"].values, [nan_rand, values[3], nan_rand, values[1000], values[3]])
        np.testing.assert_array_equal(ds["other"].values, [other[1200], nan_other, nan_other, other[500], nan_other])
        assert ds["covered"].values.tolist() == [
            [False, True],
            [True, False],
            [False, False],
            [True, True],
            [True, False],
        ]


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
    assert sub.dims == da.dims  # a subset is named like the whole set
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
    np.testing.assert_array_equal(
        store.align("net", gene_ids[:1], version=newer_recipe.version)["net"].values, newer[:1]
    )
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
    before = (
        store.ls().drop(columns=["created_at"]),
        store.catalog.coverage(),
        store.align(["a", "b"], gene_ids[:120], context="K562"),
    )
    store.catalog.clear()
    with pytest.raises(NotFoundError):
        store.align(["a"], gene_ids[:2], context="K562")
    counts = store.rebuild_catalog()
    assert counts["sets"] == 2 and counts["tags"] == 3 and counts["gene"] > 70_000
    after = (
        store.ls().drop(columns=["created_at"]),
        store.catalog.coverage(),
        store.align(["a", "b"], gene_ids[:120], context="K562"),
    )
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
    s = Store.init(tmp_path / "new", genes=False)
    assert json.loads(s.storage.read_bytes("pertstore.json"))["encoding-type"] == "pertstore-store"
    s.close()


def _record_reads(storage, reads: list) -> None:
    """Patch ``storage`` to log every (key, (start, stop)) byte range it reads."""
    ranges, one = storage.read_ranges, storage.read_range
    storage.read_ranges = lambda key, rs: reads.extend((key, r) for r in rs) or ranges(key, rs)
    storage.read_range = lambda key, start, stop=None: reads.append((key, (start, stop))) or one(key, start, stop)


def test_reads_touch_only_the_chunks_they_need(store, gene_ids):
    values, recipe = random_set(store, gene_ids, dim=64)  # 64 rows per chunk -> 32 chunks in one shard
    store.cache.clear()
    s = store.open_set("rand")
    shard = f"{set_key('rand', recipe.version)}/values/c/0/0"
    assert s.card.chunk_rows == 64 and s.n_shards == 1 and s.shard_chunks == 32
    reads = []
    _record_reads(s.storage, reads)
    out = s.rows(np.array([33, 0, 1999, 5, 33]))  # rows in any order, repeated
    np.testing.assert_array_equal(out, values[[33, 0, 1999, 5, 33]])
    table = s._shard_index[0]
    index_read = (shard, (-(16 * 32 + 4), None))
    chunk = lambda c: (shard, (int(table[c, 0]), int(table[c, 0] + table[c, 1])))  # noqa: E731
    assert sorted(reads, key=str) == sorted([index_read, chunk(0), chunk(31)], key=str)
    reads.clear()
    np.testing.assert_array_equal(s.rows(np.array([1999, 0, 5])), values[[1999, 0, 5]])
    assert reads == []  # rows read before are kept
    # rows kept, not chunks: row 1 needs chunk 0 again (one range with chunk 1); the shard index was kept
    np.testing.assert_array_equal(s.rows(np.array([1, 70, 33])), values[[1, 70, 33]])
    assert reads == [(shard, (int(table[0, 0]), int(table[1, 0] + table[1, 1])))]


def test_neighbouring_chunks_are_read_as_one_range(store, gene_ids):
    values, _ = random_set(store, gene_ids, dim=64)  # 64 rows per chunk
    store.cache.clear()
    s = store.open_set("rand")
    reads = []
    _record_reads(s.storage, reads)
    rows = np.arange(64, 64 * 9, 50)  # chunks 1..8
    np.testing.assert_array_equal(s.rows(rows), values[rows])
    table = s._shard_index[0]
    assert reads[1:] == [(s.shard_key(0), (int(table[1, 0]), int(table[8, 0] + table[8, 1])))]


def test_sets_larger_than_a_shard_span_several(store, gene_ids):
    from pertstore.store import Recipe, SetWriter

    values = np.random.default_rng(3).random((len(gene_ids), 100), dtype=np.float32)
    recipe = Recipe(source="multi", producer="test", kind="gene")
    writer = SetWriter(
        store.storage, recipe, gene_ids, 100, chunk_bytes=64 * 1024, shard_bytes=250_000
    )  # 16 chunks of 128 rows, 4 per shard
    for c in range(writer.n_chunks):
        writer.write_chunk(c, values[c * writer.chunk_rows : (c + 1) * writer.chunk_rows])
    store.publish(writer)
    key = set_key("multi", recipe.version)
    assert store.storage.list_dir(f"{key}/values/c") == ["0", "1", "2", "3"]
    s = store.open_set("multi")
    assert (s.chunk_nbytes, s.shard_chunks, s.n_shards) == (51200, 4, 4)
    rows = np.array([1999, 0, 512, 511, 1536])
    np.testing.assert_array_equal(s.rows(rows), values[rows])
    np.testing.assert_array_equal(s.all_rows(), values)
    np.testing.assert_array_equal(xr.open_zarr(f"{store.uri}/{key}")["values"].values, values)
    assert all(r.ok for r in store.verify()["sets"])


def test_rows_in_blocks_of_any_size_seal_like_staged_chunks(store, gene_ids):
    from pertstore.store import Recipe, SetWriter

    values = np.random.default_rng(4).random((len(gene_ids), 100), dtype=np.float32)
    staged = SetWriter(
        store.storage, Recipe(source="staged", producer="test", kind="gene"), gene_ids, 100, shard_bytes=250_000
    )
    staged.write_chunks(0, values)
    staged_card = store.publish(staged)
    direct = SetWriter(
        store.storage, Recipe(source="direct", producer="test", kind="gene"), gene_ids, 100, shard_bytes=250_000
    )
    cuts = [0, 1, 130, 131, 900, 1999, len(gene_ids)]  # blocks smaller and larger than a chunk, across shards
    direct.write_rows(values[a:b] for a, b in zip(cuts, cuts[1:]))
    assert store.storage.list_dir(f"{direct.staged}/sealed/values/c") == ["0", "1", "2", "3"]
    card = store.publish(direct)
    assert card.checksum == staged_card.checksum
    assert stored_bytes_digest(store, "direct") == stored_bytes_digest(store, "staged")  # zarr's bytes
    np.testing.assert_array_equal(store.get("direct").values, values)
    np.testing.assert_array_equal(
        xr.open_zarr(f"{store.uri}/{set_key('direct', card.version)}")["values"].values, values
    )
    assert all(r.ok for r in store.verify()["sets"])


def test_a_missing_shard_is_a_clear_error(store, gene_ids):
    from pertstore import CorruptedSetError

    _, recipe = random_set(store, gene_ids, dim=64)
    key = set_key("rand", recipe.version)
    store.storage.delete_prefix(f"{key}/values/c/0/0")
    store.cache.clear()
    with pytest.raises(CorruptedSetError, match=r"shard 0 \(.*values/c/0/0\) holding chunks 0..31 is missing"):
        store.align("rand", gene_ids[:3])
    (report,) = store.verify()["sets"]
    assert report.problems == [f"shard 0 ({key}/values/c/0/0) holding chunks 0..31 is missing"]


def test_merge_ranges_joins_close_chunks_only():
    from pertstore.store._reader import _group_ranges, _merge_ranges

    offsets, lengths = np.array([300, 0, 100, 1000]), np.array([100, 100, 100, 50])
    got = [(a, b, m.tolist()) for a, b, m in _merge_ranges(offsets, lengths, gap=100)]
    assert got == [(0, 400, [1, 2, 0]), (1000, 1050, [3])]
    assert [(a, b) for a, b, _ in _merge_ranges(offsets, lengths, gap=600)] == [(0, 1050)]
    groups = _group_ranges(_merge_ranges(offsets, lengths, gap=0), task_bytes=250, task_ranges=8)
    assert [[(a, b) for a, b, _ in g] for g in groups] == [[(0, 200)], [(300, 400), (1000, 1050)]]
    groups = _group_ranges(_merge_ranges(offsets, lengths, gap=0), task_bytes=10_000, task_ranges=2)
    assert [[(a, b) for a, b, _ in g] for g in groups] == [[(0, 200), (300, 400)], [(1000, 1050)]]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_few_scattered_rows_commit_memory_for_those_rows_only(store, gene_ids):
    values, _ = random_set(store, gene_ids, dim=2304)  # 1-row chunks of 9 KiB
    s = store.open_set("rand")
    rows = np.arange(10) * (len(gene_ids) // 10)
    before = _rss_bytes()
    np.testing.assert_array_equal(s.rows(rows), values[rows])
    grown = _rss_bytes() - before
    assert grown < 4 * 2**20, f"10 rows of 9 KiB committed {grown / 2**20:.1f} MiB"  # huge pages: 2 MiB each
    np.testing.assert_array_equal(s.all_rows(), values)  # the rest fills in around them
