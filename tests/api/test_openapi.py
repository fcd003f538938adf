"""The OpenAPI document types every answer and declares the bearer scheme; the routes answer what it
says (FastAPI checks each answer against its model, so a mismatch would be a 500)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from fastapi.testclient import TestClient
from pertstore.api import create_app
from pertstore.api.app import ROUTERS
from pertstore.consumers.evaluators._runner import save_results
from pertstore.consumers.tasks import build_task, read_perturbation_data, save_task

TOKEN = "openapi-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STREAMS = ("application/vnd.apache.arrow.stream", "application/x-npy")


@pytest.fixture
def client(store):
    store.produce("checksum", source="ck", params={"limit": 50, "dim": 4})
    return TestClient(create_app(store, token=TOKEN))


def _operations(spec: dict):
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield method.upper(), path, op


def test_every_json_route_has_a_response_schema(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    ops = list(_operations(spec))
    assert len(ops) == sum(len(r.routes) for r in ROUTERS) >= 23
    for method, path, op in ops:
        ok = [code for code in op["responses"] if code.startswith("2")]
        assert len(ok) == 1, (method, path)
        content = op["responses"][ok[0]]["content"]
        schema = content["application/json"]["schema"]
        assert "$ref" in schema or schema.get("type") in ("array", "object"), (method, path, schema)
        for ref in [schema.get("$ref"), schema.get("items", {}).get("$ref")]:
            if ref:
                assert schemas[ref.rsplit("/", 1)[1]]["properties"], (method, path, ref)
        for code in ("401", "404", "409"):
            assert op["responses"][code]["content"]["application/json"]["schema"]["$ref"].endswith("/Problem")
    streams = {
        path for method, path, op in ops if all(s in op["responses"].get("200", {}).get("content", {}) for s in STREAMS)
    }
    assert streams == {"/v1/align", "/v1/sets/{source}/embeddings"}
    job = schemas["JobStatus"]["properties"]
    assert {"state", "items_done", "recipes"} <= set(job) and "items_reused" in schemas["JobRecipeRow"]["properties"]
    assert {"encoding_type", "version", "recipe", "checksum"} <= set(schemas["Card"]["properties"])


def test_the_bearer_scheme_is_declared_on_every_route_but_health(client):
    spec = client.get("/openapi.json").json()
    ((name, scheme),) = spec["components"]["securitySchemes"].items()
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    for method, path, op in _operations(spec):
        assert op.get("security") == (None if path == "/v1/health" else [{name: []}]), (method, path)


def test_answers_match_their_documented_shapes(client, store):
    """Every read route answers, with the token and without, in the shape the document gives; a field the
    reader may not see (a job's host) is left out, not sent as null."""
    obs = pd.DataFrame(
        {"perturbation": ["control"] * 30 + [f"P{i // 20}" for i in range(100)], "cell_line": "A", "batch": "b1"},
        index=[f"c{i}" for i in range(130)],
    )
    cells = ad.AnnData(
        X=sp.csr_matrix(np.random.default_rng(0).poisson(3, (130, 12)).astype(np.int32)),
        obs=obs,
        var=pd.DataFrame(index=[f"G{i}" for i in range(12)]),
    )
    data = read_perturbation_data(
        cells, pert_col="perturbation", control_label="control", context_col="cell_line", batch_col="batch"
    )
    save_task(store, build_task(data, kind="lfc", trials=0, name="tiny", n_folds=2))
    row = {
        "task": "tiny",
        "task_version": "v1",
        "context": "A",
        "fold": 0,
        "set": "ck",
        "set_version": "",
        "evaluator": "knn",
        "metric": "l2",
        "value": 1.5,
        "chosen": "{}",
        "coverage": 1.0,
        "seconds": 0.1,
    }
    save_results(store, pd.DataFrame([row]), pd.DataFrame())
    job_id = client.post(
        "/v1/jobs",
        json={"recipes": "recipes:\n  - {producer: checksum, source: ck, params: {limit: 50, dim: 4}}\n"},
        headers=AUTH,
    ).json()["job_id"]
    for headers in ({}, AUTH):
        for path in (
            "/v1/health",
            "/v1/ready",
            "/v1/sources",
            "/v1/sets",
            "/v1/sets/ck",
            "/v1/sets/ck/versions",
            "/v1/contexts",
            "/v1/coverage",
            "/v1/tags",
            "/v1/recipes",
            "/v1/tasks",
            "/v1/results",
            "/v1/jobs",
            f"/v1/jobs/{job_id}",
            f"/v1/jobs/{job_id}/failures",
        ):
            r = client.get(path, headers=headers)
            assert r.status_code == 200, (path, r.text)
        assert ("host" in client.get(f"/v1/jobs/{job_id}", headers=headers).json()) == bool(headers)
        assert ("store" in client.get("/v1/ready", headers=headers).json()) == bool(headers)
    tasks = client.get("/v1/tasks").json()
    assert [(t["name"], t["latest"], t["n_perts"]) for t in tasks] == [("tiny", True, 5)]
    results = client.get("/v1/results", params={"task": "tiny"}).json()
    assert results["total"] == 1 and results["items"][0]["value"] == 1.5
    assert client.get("/v1/results", params={"task": "../x"}).status_code == 422
    card = client.get("/v1/sets/ck").json()
    assert card["encoding_type"] == "pertstore-embedding-set" and card == store.show("ck").model_dump(mode="json")
