"""The REST API in-process (FastAPI's TestClient) and as a real server process on loopback."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from pertstore.api import create_app

TOKEN = "s3cret-token"


@pytest.fixture
def client(store):
    store.produce("random", source="random-8", params={"dim": 8})
    return TestClient(create_app(store, token=TOKEN))


def test_catalog_reads_and_pagination(client):
    assert client.get("/v1/health").json() == {"status": "ok"}
    assert client.get("/v1/ready").status_code == 200
    assert [s["source"] for s in client.get("/v1/sources").json()] == ["random-8"]
    page = client.get("/v1/sets", params={"limit": 1}).json()
    assert page["total"] == 1 and page["items"][0]["source"] == "random-8"
    assert client.get("/v1/sets/random-8").json()["dim"] == 8
    assert client.get("/v1/sets", params={"limit": 10_000}).status_code == 422
    assert client.get("/v1/sets/nope").status_code == 404
    assert "/v1/align" in client.get("/openapi.json").json()["paths"]


def test_align_json_and_arrow_agree_with_the_store(client, store):
    body = {"sources": ["random-8"], "ids": ["TP53", "7157", "NOT_A_GENE"]}
    js = client.post("/v1/align", json=body).json()
    expected = store.align(["random-8"], ["TP53"])["random-8"].values[0]
    np.testing.assert_allclose(js["embeddings"]["random-8"][0], expected)
    assert js["embeddings"]["random-8"][1] == js["embeddings"]["random-8"][0]
    assert js["embeddings"]["random-8"][2] is None and js["unresolved"] == ["NOT_A_GENE"]
    arrow = client.post("/v1/align", json=body, headers={"Accept": "application/vnd.apache.arrow.stream"})
    table = pa.ipc.open_stream(io.BytesIO(arrow.content)).read_all()
    np.testing.assert_allclose(table.column("random-8")[0].as_py(), expected)
    assert table.column("random-8")[2].as_py() is None


def test_bad_input_gets_clear_4xx(client):
    assert client.post("/v1/align", json={"sources": ["nope"], "ids": ["TP53"]}).status_code == 404
    assert client.post("/v1/align", json={"sources": [], "ids": ["TP53"]}).status_code == 422
    assert client.post("/v1/align", json={"sources": ["random-8"], "ids": ["x"] * 20_001}).status_code == 422
    assert (
        client.post("/v1/align", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    )
    assert client.get("/v1/sets/..%2F..%2Fetc").status_code == 404
    res = client.post("/v1/resolve", json={"ids": ["p53", "TP53"], "kind": "gene"}).json()
    assert res["ids"][1] is not None


def test_writes_need_the_token_and_jobs_run(client, store):
    recipes = "recipes:\n  - {producer: checksum, source: ck, params: {limit: 200, dim: 4}}\n"
    assert client.post("/v1/jobs", json={"recipes": recipes}).status_code == 401
    assert (
        client.post("/v1/jobs", json={"recipes": recipes}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    )
    r = client.post("/v1/jobs", json={"recipes": recipes}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 202 and r.headers["Location"] == f"/v1/jobs/{r.json()['job_id']}"
    deadline = time.monotonic() + 120
    while (state := client.get(r.headers["Location"]).json()["state"]) not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert state == "done" and "ck" in set(store.ls().source)
    assert client.get(f"{r.headers['Location']}/failures").json() == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pertstore_serve_over_http(store):
    store.produce("random", source="random-8", params={"dim": 8})
    root = str(store.storage.path(""))
    store.close()
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pertstore.cli", "serve", "--store", root, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PERTSTORE_TOKEN": TOKEN},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(f"{url}/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        got = httpx.post(f"{url}/v1/align", json={"sources": ["random-8"], "ids": ["TP53", "BRCA1"]}).json()
        assert len(got["embeddings"]["random-8"]) == 2 and len(got["embeddings"]["random-8"][0]) == 8
    finally:
        proc.terminate()
        proc.wait(10)
