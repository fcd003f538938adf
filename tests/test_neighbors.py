"""Nearest-neighbour queries (issue 27): exact search equals a brute-force numpy search, from Python,
the CLI and a real server."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pytest
from pertstore.store import Recipe
from servers import api_server

from pertstore.errors import InvalidInputError

K = 10


def brute_force(
    values: np.ndarray, queries: np.ndarray, k: int, metric: str, own: np.ndarray, pool: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Positions and scores of the ``k`` nearest rows, in float64 numpy, straight from the definitions."""
    x = values.astype(np.float64)
    q = x[queries]
    if metric == "cosine":
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        score = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ xn.T
        order_key = -score
    else:
        score = np.sqrt(((q[:, None, :] - x[None, :, :]) ** 2).sum(-1))
        order_key = score.copy()
    order_key[np.arange(len(q)), own] = np.inf
    if pool is not None:
        outside = np.setdiff1d(np.arange(len(x)), pool)
        order_key[:, outside] = np.inf
    top = np.argsort(order_key, axis=1, kind="stable")[:, :k]
    return top, np.take_along_axis(score, top, axis=1)


@pytest.fixture
def emb(store, gene_ids):
    """Two sets over the same 2,000 genes: ``a`` random, ``b`` = ``a`` plus noise (a second embedding)."""
    rng = np.random.default_rng(7)
    a = rng.normal(size=(len(gene_ids), 24)).astype(np.float32)
    b = (a + 0.8 * rng.normal(size=a.shape)).astype(np.float32)
    store.write_set(Recipe(source="a", producer="import", kind="gene", params={"seed": 7}), gene_ids, a)
    store.write_set(Recipe(source="b", producer="import", kind="gene", params={"seed": 8}), gene_ids[:1500], b[:1500])
    return gene_ids, a, b


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_neighbors_equal_a_brute_force_search(store, emb, metric):
    ids, a, _ = emb
    queries = np.array([0, 5, 77, 1999])
    got = store.neighbors("a", [ids[i] for i in queries], k=K, metric=metric)
    top, score = brute_force(a, queries, K, metric, queries)
    assert got["entity_id"].tolist() == [ids[j] for j in top.ravel()]
    np.testing.assert_allclose(got["score"].to_numpy(), score.ravel(), rtol=1e-5, atol=1e-5)
    assert got["rank"].tolist() == list(range(1, K + 1)) * len(queries)
    labels = dict(store.catalog.query("SELECT entity_id, label FROM entities WHERE kind = 'gene'").values)
    assert got["symbol"].tolist() == [labels[e] for e in got["entity_id"]]
    assert got.attrs["version"] == store.show("a").version


def test_neighbors_restricted_resolved_and_reported(store, emb):
    ids, a, _ = emb
    pool = np.arange(0, 2000, 7)
    symbol = store.catalog.query("SELECT label FROM entities WHERE entity_id = ?", [ids[3]]).label[0]
    got = store.neighbors("a", [symbol, "not-a-gene", "TP53"], k=5, restrict_to=[ids[i] for i in pool] + ["zz"])
    top, _ = brute_force(a, np.array([3]), 5, "cosine", np.array([3]), pool)
    assert got["entity_id"].tolist() == [ids[j] for j in top[0]]
    assert set(got["query"]) == {symbol} and set(got["query_entity_id"]) == {ids[3]}
    assert got.attrs["unresolved"] == ["not-a-gene"] and got.attrs["restrict_ignored"] == ["zz"]
    assert got.attrs["missing"] == (["TP53"] if "ENSG00000141510" not in ids else [])


def test_compare_neighbors_is_the_overlap_of_two_brute_force_searches(store, emb):
    ids, a, b = emb
    shared = np.arange(1500)  # b holds the first 1,500 genes
    got = store.compare_neighbors("a", "b", [ids[i] for i in (0, 10, 1400)], k=K)
    for row, i in zip(got.itertuples(), (0, 10, 1400)):
        ta, _ = brute_force(a[shared], np.array([i]), K, "cosine", np.array([i]))
        tb, _ = brute_force(b[:1500], np.array([i]), K, "cosine", np.array([i]))
        assert row.entity_id == ids[i]
        assert row.overlap == pytest.approx(len(set(ta[0]) & set(tb[0])) / K)
    assert got.attrs["n_shared"] == 1500
    same = store.compare_neighbors("a", "a", k=5)
    assert len(same) == 2000 and (same.overlap == 1.0).all()


def test_neighbors_bad_input_is_a_clear_error(store, emb):
    from pertstore.errors import InvalidInputError, NotFoundError

    with pytest.raises(InvalidInputError, match="unknown metric 'dot'"):
        store.neighbors("a", ["TP53"], metric="dot")
    with pytest.raises(InvalidInputError, match="k must be"):
        store.neighbors("a", ["TP53"], k=0)
    with pytest.raises(NotFoundError, match="unknown source"):
        store.neighbors("nope", ["TP53"])


def test_neighbors_cli_matches_the_store(store, emb, tmp_path):
    ids, _, _ = emb
    want = store.neighbors("a", [ids[1], ids[2]], k=4, metric="euclidean")
    root = store.uri
    store.close()
    cmd = [
        sys.executable,
        "-m",
        "pertstore.cli",
        "neighbors",
        "a",
        ids[1],
        ids[2],
        "-k",
        "4",
        "--metric",
        "euclidean",
        "--store",
        root,
        "--format",
        "json",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["entity_id"] for r in rows] == want.entity_id.tolist()
    np.testing.assert_allclose([r["score"] for r in rows], want.score, rtol=1e-6)
    done = subprocess.run(
        [*cmd[:4], "--compare", "a", "b", ids[1], "--store", root, "-f", "tsv"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "entity_id\tsymbol\toverlap" and ids[1] in done.stdout
    indexed = subprocess.run([*cmd, "--method", "index"], capture_output=True, text=True, timeout=120, check=False)
    assert indexed.returncode == 0, indexed.stderr  # the approximate index, built and kept by the CLI
    got = json.loads(indexed.stdout)
    assert len(got) == 8 and {r["entity_id"] for r in got} <= set(ids)
    assert list((Path(root) / "indexes" / "a").rglob("euclidean.usearch"))
    bad_method = subprocess.run([*cmd, "--method", "ivf"], capture_output=True, text=True, timeout=120, check=False)
    assert bad_method.returncode == 2 and "unknown method 'ivf'" in bad_method.stderr
    assert "Traceback" not in bad_method.stderr
    bad = subprocess.run(
        [*cmd[:4], "a", ids[1], "--metric", "dot", "--store", root],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2 and "unknown metric 'dot'" in bad.stderr and "Traceback" not in bad.stderr


def test_neighbors_over_http(store, emb):
    ids, _, _ = emb
    want = store.neighbors("a", [ids[4], ids[9]], k=3)
    root = store.uri
    store.close()
    with api_server(root) as url:
        got = httpx.get(f"{url}/v1/neighbors", params={"source": "a", "ids": [ids[4], ids[9]], "k": 3}, timeout=60)
        assert got.status_code == 200, got.text
        body = got.json()
        assert [r["entity_id"] for r in body["results"]] == [ids[4], ids[9]]
        assert [n["entity_id"] for r in body["results"] for n in r["neighbors"]] == want.entity_id.tolist()
        assert [n["symbol"] for r in body["results"] for n in r["neighbors"]] == want.symbol.tolist()
        posted = httpx.post(f"{url}/v1/neighbors", json={"source": "a", "ids": [ids[4], ids[9]], "k": 3}, timeout=60)
        assert posted.json() == body
        assert body["method"] == "exact"  # a small set is searched exactly unless asked
        indexed = httpx.post(
            f"{url}/v1/neighbors", json={"source": "a", "ids": [ids[4]], "k": 3, "method": "index"}, timeout=60
        )
        assert indexed.status_code == 200 and indexed.json()["method"] == "index", indexed.text
        assert len(indexed.json()["results"][0]["neighbors"]) == 3
        twice = httpx.post(f"{url}/v1/neighbors", json={"source": "a", "ids": [ids[4], ids[4]], "k": 3}, timeout=60)
        assert [len(r["neighbors"]) for r in twice.json()["results"]] == [3, 3]  # a repeated id answered twice
        arrow = httpx.post(
            f"{url}/v1/neighbors",
            json={"source": "a", "ids": [ids[4], ids[9]], "k": 3},
            headers={"Accept": "application/vnd.apache.arrow.stream"},
            timeout=60,
        )
        table = pa.ipc.open_stream(io.BytesIO(arrow.content)).read_all()
        assert table.column("entity_id").to_pylist() == want.entity_id.tolist()
        np.testing.assert_allclose(table.column("score").to_numpy(), want.score, rtol=1e-6)
        assert json.loads(table.schema.metadata[b"pertstore"])["version"] == body["version"]
        bad = httpx.get(f"{url}/v1/neighbors", params={"source": "a", "ids": ["TP53"], "metric": "dot"})
        assert bad.status_code == 422
        assert httpx.get(f"{url}/v1/neighbors", params={"source": "nope", "ids": ["TP53"]}).status_code == 404
        assert httpx.post(f"{url}/v1/neighbors", json={"source": "a", "ids": []}).status_code == 422


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_the_graph_index_reaches_recall_095_and_is_kept_in_the_store(store, emb, metric):
    from pertstore.store import neighbor_index_key

    from pertstore import Store

    ids, a, _ = emb
    queries = np.arange(0, 2000, 10)
    got = store.neighbors("a", [ids[i] for i in queries], k=K, metric=metric, method="index")
    assert got.attrs["method"] == "index"
    top, score = brute_force(a, queries, K, metric, queries)
    found = got.groupby("query", sort=False)["entity_id"].apply(list)
    recall = np.mean([len(set(found[ids[q]]) & {ids[j] for j in row}) / K for q, row in zip(queries, top)])
    assert recall >= 0.95, recall
    exact = dict(zip(got.entity_id + "|" + got["query"], got.score))
    pairs = [(f"{ids[j]}|{ids[q]}", s) for q, row, srow in zip(queries, top, score) for j, s in zip(row, srow)]
    shared = [(exact[p], s) for p, s in pairs if p in exact]
    np.testing.assert_allclose(*zip(*shared), rtol=1e-4, atol=1e-4)  # scores on the definitions' scale
    card = store.show("a")
    kept = Path(str(store.uri)) / neighbor_index_key("a", card.version, metric)
    assert kept.exists()
    stamp = kept.stat().st_mtime_ns
    root = store.uri
    store.close()
    with Store.open(root) as s:  # a new process reads the kept index, never rebuilds it
        again = s.neighbors("a", [ids[i] for i in queries], k=K, metric=metric, method="index")
    assert kept.stat().st_mtime_ns == stamp and again["entity_id"].tolist() == got["entity_id"].tolist()
    with pytest.raises(InvalidInputError, match="exactly"):
        store.neighbors("a", [ids[0]], method="index", restrict_to=ids[:50])
