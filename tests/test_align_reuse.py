"""Warm aligned reads: the packed row buffer and the reused output block give exactly the written rows."""

from __future__ import annotations

import weakref

import numpy as np
from pertstore.store import Recipe


def test_warm_align_reuses_memory_only_when_no_result_holds_it(store, gene_ids):
    rng = np.random.default_rng(0)
    values = {}
    for name, dim in (("a", 8), ("b", 24)):
        ids = gene_ids[:1500] if name == "a" else gene_ids[500:]
        values[name] = (ids, rng.random((len(ids), dim), dtype=np.float32))
        store.write_set(
            Recipe(source=name, producer="synthetic", kind="gene", params={"dim": dim}), ids, values[name][1]
        )

    def expected(name, query):
        ids, x = values[name]
        row = {e: i for i, e in enumerate(ids)}
        return np.stack([x[row[q]] if q in row else np.full(x.shape[1], np.nan, np.float32) for q in query])

    first = list(rng.choice(gene_ids, 300, replace=False)) + ["not-a-gene"]
    second = list(rng.choice(gene_ids, 300, replace=False))
    for _ in range(2):  # cold, then warm (rows packed in the order they were read)
        kept = store.align(["a", "b"], first)
        for name in "ab":
            np.testing.assert_array_equal(kept[name].values, expected(name, first))
    other = store.align(["a", "b"], second)  # `kept` still holds its block: new memory, `kept` unchanged
    for name in "ab":
        np.testing.assert_array_equal(kept[name].values, expected(name, first))
        np.testing.assert_array_equal(other[name].values, expected(name, second))
    block = weakref.ref(other["a"].values.base)
    del kept, other
    again = store.align(["a", "b"], second)  # the block is free again and reused
    assert again["a"].values.base is block()
    for name in "ab":
        np.testing.assert_array_equal(again[name].values, expected(name, second))
