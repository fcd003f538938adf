"""The Python client and the CLI against a real ``pertstore serve`` process on loopback."""

from __future__ import annotations

import io
import json
import shutil

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import xarray as xr
from servers import api_server
from typer.testing import CliRunner

from pertstore import Store
from pertstore.cli import app
from pertstore.client import Client
from pertstore.errors import ConflictError, InvalidInputError, NotFoundError, PertstoreError

TOKEN = "client-token"
IDS = ["TP53", "7157", "BRCA1", "NOT_A_GENE", "ENSG00000141510"]


@pytest.fixture(scope="module")
def served(_template_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("served") / "store"
    shutil.copytree(_template_store, root)
    with Store.open(root) as s:
        s.produce("random", source="rand-8", params={"dim": 8})
        s.produce("random", source="rand-3", params={"dim": 3, "seed": 1})
    with api_server(str(root), env={"PERTSTORE_TOKEN": TOKEN}) as url:
        yield url, root


@pytest.fixture
def client(served):
    with Client(served[0], token=TOKEN) as c:
        yield c


def test_client_align_equals_the_store(client, served, tmp_path):
    got = client.align(["rand-8", "rand-3"], IDS)
    with Store.open(served[1], read_only=True, catalog=tmp_path / "own.duckdb") as s:  # the server holds its catalog
        want = s.align(["rand-8", "rand-3"], IDS)
    xr.testing.assert_identical(got, want)
    assert got.attrs["unresolved"] == ["NOT_A_GENE"]
    np.testing.assert_array_equal(client.get("rand-3", ["TP53"]).values, want["rand-3"].values[:1])


def test_client_catalog_calls(client, served):
    assert set(client.ls().source) == {"rand-8", "rand-3"}
    card = client.show("rand-8")
    assert card.dim == 8 and card.recipe.producer == "random"
    res = client.resolve(["TP53", "NOT_A_GENE"])
    assert res.ids[0].startswith("ENSG") and res.unresolved == ["NOT_A_GENE"]
    assert set(client.tags().tag) == {"latest"}
    recipes = client.recipes(producer="random")
    assert recipes.recipe.iloc[0]["producer"] == "random"
    assert client.health() == {"status": "ok"}
    with pytest.raises(NotFoundError):
        client.show("no-such-source")


def test_bulk_answers_stream_as_arrow_and_npy(client):
    ids = [f"ENSG{i:011d}" for i in range(10_000)]  # mostly unregistered: rows of NaN, still streamed
    body = {"sources": ["rand-8", "rand-3"], "ids": ["TP53", *ids]}
    r = httpx.post(f"{client.url}/v1/align", json=body, headers={"Accept": "application/vnd.apache.arrow.stream"})
    reader = pa.ipc.open_stream(io.BytesIO(r.content))
    batches = list(reader)
    assert len(batches) >= 3 and sum(b.num_rows for b in batches) == len(ids) + 1
    npy = httpx.post(f"{client.url}/v1/align", json=body, headers={"Accept": "application/x-npy"})
    block = np.load(io.BytesIO(npy.content))
    spans = json.loads(npy.headers["x-pertstore-columns"])
    assert block.shape == (len(ids) + 1, 11) and spans == {"rand-8": [0, 8], "rand-3": [8, 11]}
    want = client.align(["rand-8", "rand-3"], ["TP53"])
    np.testing.assert_array_equal(block[0, 8:], want["rand-3"].values[0])


def test_writes_through_the_client(client, served, tmp_path):
    frame = pd.DataFrame(np.arange(12, dtype=np.float32).reshape(3, 4), index=["TP53", "BRCA1", "STAT1"])
    frame.columns = [f"d{j}" for j in range(4)]
    frame.index.name = "gene"
    frame.reset_index().to_parquet(tmp_path / "mine.parquet")
    card = client.import_file(tmp_path / "mine.parquet", source="mine", id_col="gene")
    assert card.n_rows == 3 and card.dim == 4
    np.testing.assert_array_equal(client.get("mine", ["STAT1"]).values[0], [8, 9, 10, 11])
    client.tag("mine", card.version, "paper")
    assert "paper" in set(client.tags("mine").tag)
    state = client.jobs.submit(
        "recipes:\n  - {producer: checksum, source: ck, params: {limit: 100, dim: 2}}\n", timeout=120
    )
    assert state.state == "done" and state.items_done == state.items_total > 0
    assert client.jobs.failures(state.job_id).empty
    with pytest.raises(ConflictError):
        client.jobs.resume(state.job_id)
    with pytest.raises(InvalidInputError):
        client.jobs.create("recipes: [{producer: nope}]")
    with Client(served[0], token="wrong") as intruder, pytest.raises(PertstoreError, match="401"):
        intruder.tag("mine", card.version, "stolen")


def test_cli_targets_a_server(served):
    runner = CliRunner()
    out = runner.invoke(app, ["ls", "--store", served[0]])
    with Client(served[0]) as c:
        n_sets = len(c.ls())
    assert out.exit_code == 0 and f"{n_sets} set(s)" in out.output
    out = runner.invoke(app, ["align", "rand-8", "-i", "TP53", "-i", "NOT_A_GENE", "--store", served[0]])
    assert out.exit_code == 0 and "1/2" in out.output and "NOT_A_GENE" in out.output
    out = runner.invoke(app, ["verify", "--store", served[0]])
    assert out.exit_code != 0 and "needs the store itself" in str(out.output) + str(out.exception)
