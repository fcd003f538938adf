"""Crashes, concurrent readers and corrupted chunks."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from pertstore.store import published_sets, set_key
from store_helpers import random_set

from pertstore import CorruptedSetError, InvalidInputError, Store

WRITER = textwrap.dedent("""
    import sys, numpy as np
    from pertstore import Store
    from pertstore.store import Recipe
    store = Store.open(sys.argv[1])
    ids = store.catalog.query("SELECT entity_id FROM entities WHERE kind='gene' ORDER BY entity_id LIMIT 20000").entity_id.tolist()
    for seed in range(1000):
        values = np.random.default_rng(seed).random((len(ids), 512), dtype=np.float32)
        print("writing", seed, flush=True)
        store.write_set(Recipe(source="big", producer="test", kind="gene", params={"seed": seed}), ids, values)
""")


@pytest.mark.parametrize("delay", [0.5, 1.5, 3.0])
def test_sigkill_mid_write_leaves_no_partial_set(store, tmp_path, delay):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    root = store.uri
    store.close()
    proc = subprocess.Popen([sys.executable, str(script), root], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(delay + 2.0)  # interpreter start-up, then some way into writing
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reopened = Store.open(root)
    report = reopened.verify()
    assert all(r.ok for r in report["sets"]), [r.problems for r in report["sets"]]
    assert report["catalog"] == []
    for key in published_sets(reopened.storage):  # every visible set is complete and readable
        s = reopened.cache.get(key)
        seed = s.card.recipe.params["seed"]
        expected = np.random.default_rng(seed).random((20000, 512), dtype=np.float32)
        np.testing.assert_array_equal(s.all_rows(), expected)
    assert len(reopened.ls()) == len(published_sets(reopened.storage))
    reopened.close()


def test_readers_see_the_old_or_the_new_set_never_a_mix(store, gene_ids):
    ids = gene_ids[:2000]
    values = {seed: np.random.default_rng(seed).random((len(ids), 64), dtype=np.float32) for seed in range(6)}
    random_set(store, ids, dim=64, seed=0)
    query = ids[::7]
    rows = np.arange(len(ids))[::7]
    seen, errors, stop = set(), [], threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                got = store.align("rand", query)["rand"].values
                match = [s for s, v in values.items() if np.array_equal(got, v[rows])]
                if len(match) != 1:
                    errors.append("a read matched no published set")
                seen.update(match)
            except Exception as e:  # noqa: BLE001 - any failure of a reader is a test failure
                errors.append(repr(e))

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for seed in range(1, 6):
        random_set(store, ids, dim=64, seed=seed)
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert 5 in seen or np.array_equal(store.align("rand", query)["rand"].values, values[5][rows])


def test_verify_and_readers_name_a_corrupted_chunk(store, gene_ids):
    _, recipe = random_set(store, gene_ids, dim=128)
    key = f"{set_key('rand', recipe.version)}/values/c/0/0"
    s = store.open_set("rand")
    s.rows(np.array([0]))
    start, length = (int(x) for x in s._shard_index[0][3])
    path = os.path.join(store.uri, key)
    raw = bytearray(open(path, "rb").read())
    raw[start + length - 5] ^= 0xFF
    open(path, "wb").write(bytes(raw))
    report = store.verify()
    bad = [r for r in report["sets"] if not r.ok]
    assert len(bad) == 1 and bad[0].problems == [
        f"chunk 3 ({key}, bytes {start}..{start + length}) is corrupted: its CRC32C does not match its bytes"
    ]
    store.cache.clear()
    rows_of_chunk_3 = store.open_set("rand").card.chunk_rows * 3
    with pytest.raises(
        CorruptedSetError, match=r"chunk 3 in .*values/c/0/0 cannot be decoded \(its CRC32C does not match"
    ):
        store.align("rand", [gene_ids[rows_of_chunk_3]])
    np.testing.assert_array_equal(store.align("rand", [gene_ids[0]])["covered"].values, [[True]])  # other chunks read


def test_a_chunk_whose_blosc_header_lies_is_refused_before_decoding(store, gene_ids, monkeypatch):
    """The reader hands Blosc raw addresses: a chunk whose CRC32C matches but whose header claims
    more bytes than it has, or than its rows hold, is an error, never a read past either buffer."""
    import google_crc32c
    from pertstore.store._codec import _BLOSC_DECOMPRESS, decode_chunk

    assert _BLOSC_DECOMPRESS is not None  # the fast path is the one that runs with the pinned numcodecs
    _, recipe = random_set(store, gene_ids, dim=128)
    s = store.open_set("rand")
    expected = s.rows(np.arange(s.card.chunk_rows))
    start, length = (int(x) for x in s._shard_index[0][0])
    path = os.path.join(store.uri, f"{set_key('rand', recipe.version)}/values/c/0/0")
    chunk = bytearray(open(path, "rb").read()[start : start + length])
    np.testing.assert_array_equal(decode_chunk(bytes(chunk), s.card.chunk_rows, 128), expected)
    with monkeypatch.context() as m:  # numcodecs' Python API, where its extension exports no C-Blosc: same rows
        m.setattr("pertstore.store._codec._BLOSC_DECOMPRESS", None)
        np.testing.assert_array_equal(decode_chunk(bytes(chunk), s.card.chunk_rows, 128), expected)
    for field, lie in ((slice(12, 16), length + 4096), (slice(4, 8), 4 * 128 * s.card.chunk_rows + 4096)):
        forged = bytearray(chunk)
        forged[field] = lie.to_bytes(4, "little")
        forged[-4:] = google_crc32c.value(bytes(forged[:-4])).to_bytes(4, "little")
        with pytest.raises(ValueError, match="Blosc header disagrees"):
            decode_chunk(bytes(forged), s.card.chunk_rows, 128)


def test_verify_and_readers_catch_a_corrupted_shard_index(store, gene_ids):
    from pertstore import CorruptedSetError

    _, recipe = random_set(store, gene_ids, dim=128)
    key = f"{set_key('rand', recipe.version)}/values/c/0/0"
    path = os.path.join(store.uri, key)
    raw = bytearray(open(path, "rb").read())
    raw[-10] ^= 0xFF  # inside the (offset, length) table
    open(path, "wb").write(bytes(raw))
    (report,) = store.verify()["sets"]
    assert report.problems == [f"shard 0 ({key}) is corrupted: {key}: the shard index fails its CRC32C check"]
    store.cache.clear()
    with pytest.raises(CorruptedSetError, match="fails its CRC32C check"):
        store.align("rand", gene_ids[:5])


def test_a_seal_left_by_a_killed_writer_is_redone(store, gene_ids):
    from pertstore.store import Recipe, SetWriter

    values = np.random.default_rng(1).random((len(gene_ids), 32), dtype=np.float32)
    recipe = Recipe(source="resumed", producer="test", kind="gene")
    first = SetWriter(store.storage, recipe, gene_ids, 32)
    first.write_chunks(0, values)  # chunks staged in any order, sealed at publish
    store.storage.write_bytes(f"{first.staged}/sealed/values/c/0/0", b"half a shard")  # killed mid-seal
    again = SetWriter(store.storage, recipe, gene_ids, 32)
    assert again.done_chunks() == set(range(again.n_chunks))
    card = store.publish(again)
    assert store.storage.walk("staging") == []
    np.testing.assert_array_equal(store.get("resumed").values, values)
    assert card.checksum == store.show("resumed").checksum
    assert all(r.ok for r in store.verify()["sets"])


def test_rows_that_stop_short_or_hold_nan_leave_no_seal(store, gene_ids):
    from pertstore.store import Recipe, SetWriter

    values = np.random.default_rng(2).random((len(gene_ids), 32), dtype=np.float32)
    recipe = Recipe(source="short", producer="test", kind="gene")
    writer = SetWriter(store.storage, recipe, gene_ids, 32, shard_bytes=64_000)
    with pytest.raises(InvalidInputError, match=f"short: {len(gene_ids) - 7} rows written for {len(gene_ids)} ids"):
        writer.write_rows([values[:1000], values[1000:-7]])
    with pytest.raises(InvalidInputError, match=r"chunk\(s\) never written"):
        store.publish(writer)
    bad = values.copy()
    bad[1500, 3] = np.nan
    with pytest.raises(
        InvalidInputError, match=f"rows 1000..{len(gene_ids) - 1}: 1 row.*row 500 \\(id '{gene_ids[1500]}'"
    ):
        writer.write_rows([values[:1000], bad[1000:]])
    assert not store.storage.exists(f"{writer.staged}/sealed.done")
    writer.abort()
    assert store.storage.walk("staging") == [] and store.ls().empty


def test_verify_indexes_a_set_published_but_not_indexed(store, gene_ids):
    _, recipe = random_set(store, gene_ids[:100])
    store.catalog.clear()  # as if the writer died between publishing and indexing
    store.register_genes()
    report = store.verify()
    assert report["indexed"] == [set_key("rand", recipe.version)]
    assert report["catalog"] == [] and all(r.ok for r in report["sets"])
    assert store.ls().version.tolist() == [recipe.version]
