"""Text sets from an OpenAI-compatible endpoint: a real server process on loopback (embedding_server.py),
the settings' URL and key, batching, retries, clear errors for a missing setting or a refused request,
and the set's card naming the model (never the key or URL)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from embedding_server import MODEL, vector
from pertstore.producers.text._backend import TextModelParams
from pertstore.producers.text._endpoint import EndpointError, encode_endpoint
from servers import free_port, process
from typer.testing import CliRunner

from pertstore.cli import app
from pertstore.errors import InvalidInputError

SERVER = Path(__file__).with_name("embedding_server.py")
KEY = "sk-test-0123"
GENES = ["TP53", "MDM2", "CDKN1A", "STAT1", "STAT2", "IRF1", "JAK2", "ALB", "INS"]


def _serve(fail_first: int = 0, dim: int = 24):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    return url, process(
        [sys.executable, str(SERVER), str(port), KEY, str(dim), str(fail_first)], ready_url=f"{url}/health"
    )


@pytest.fixture
def endpoint_env(monkeypatch):
    def configure(url: str | None, key: str | None = KEY) -> None:
        for name, value in {"URL": f"{url}/v1" if url else None, "KEY": key}.items():
            if value is None:
                monkeypatch.delenv(f"PERTSTORE_TEXT_ENDPOINT_{name}", raising=False)
            else:
                monkeypatch.setenv(f"PERTSTORE_TEXT_ENDPOINT_{name}", value)
        monkeypatch.setenv("PERTSTORE_TEXT_ENDPOINT_BACKOFF", "0.01")
        monkeypatch.setenv("PERTSTORE_TEXT_ENDPOINT_RETRIES", "2")

    return configure


def test_genept_through_the_endpoint_batches_retries_and_records_the_model(store, data_dir, tmp_path, endpoint_env):
    full = pd.read_csv(data_dir / "genes" / "refseq_gene_summaries_human.tsv.gz", sep="\t", dtype=str)
    subset = tmp_path / "summaries.tsv"
    full[full.symbol.isin(GENES)].to_csv(subset, sep="\t", index=False)
    url, server = _serve(fail_first=1)
    with server:
        endpoint_env(url)
        card = store.produce(
            "genept",
            source="genept-openai",
            inputs={"summaries": str(subset)},
            params={"backend": "openai", "model": MODEL, "batch_size": 4},
            max_failed_fraction=1.0,
        )
        sizes = httpx.get(f"{url}/stats").json()["sizes"]
    assert card.dim == 24 and card.n_rows == 9
    assert sum(sizes) == 9 and max(sizes) == 4  # requests of at most 4 texts; the first (503) was retried
    assert card.recipe.params["model"] == MODEL and card.recipe.params["backend"] == "openai"
    assert KEY not in card.recipe.canonical_json() and url not in card.recipe.canonical_json()
    x = store.get("genept-openai", GENES).values
    tp53 = full[full.symbol == "TP53"].summary.iloc[0]
    np.testing.assert_allclose(x[0], vector(MODEL, f"TP53: tumor protein p53. {tp53}", 24), rtol=1e-6)
    assert np.isfinite(x).all()


def test_default_text_model_is_the_packaged_minilm_and_is_recorded():
    assert TextModelParams().model == "all-MiniLM-L6-v2"
    assert TextModelParams(model_path="/models/my-st-model").model == "my-st-model"
    with pytest.raises(ValueError, match="backend openai needs `model`"):
        TextModelParams(backend="openai")
    with pytest.raises(ValueError, match="local models only"):
        TextModelParams(model="text-embedding-3-small")


@pytest.mark.parametrize("missing", ["URL", "KEY"])
def test_a_missing_setting_is_an_error_naming_it(missing, endpoint_env):
    endpoint_env(None if missing == "URL" else "http://127.0.0.1:9", None if missing == "KEY" else KEY)
    with pytest.raises(InvalidInputError, match=f"PERTSTORE_TEXT_ENDPOINT_{missing}"):
        encode_endpoint(["a"], model=MODEL, batch_size=4)


def test_refused_requests_quote_the_server_and_are_not_retried(endpoint_env, monkeypatch):
    url, server = _serve(dim=8)
    with server:
        endpoint_env(url, key="sk-wrong")
        with pytest.raises(EndpointError, match="HTTP 401.*Incorrect API key"):
            encode_endpoint(["a"], model=MODEL, batch_size=4)
        endpoint_env(url)
        with pytest.raises(EndpointError, match="HTTP 404.*does not exist"):
            encode_endpoint(["a"], model="no-such-model", batch_size=4)
        out = encode_endpoint(["a", "b", "c"], model=MODEL, batch_size=2, dimensions=5)
        assert httpx.get(f"{url}/stats").json()["sizes"] == [2, 1]
    np.testing.assert_allclose(out, [vector(MODEL, t, 5) for t in "abc"], rtol=1e-6)


def test_an_endpoint_that_keeps_failing_stops_after_the_retries(endpoint_env):
    url, server = _serve(fail_first=10)
    with server:
        endpoint_env(url)
        with pytest.raises(EndpointError, match="failed 3 times; last: HTTP 503"):
            encode_endpoint(["a"], model=MODEL, batch_size=4)


def test_cli_job_without_the_key_fails_naming_the_setting(tmp_path, data_dir, endpoint_env, _template_store):
    endpoint_env("http://127.0.0.1:9", key=None)
    recipes = tmp_path / "r.yaml"
    recipes.write_text(f"""recipes:
  - producer: genept
    source: genept-openai
    params: {{backend: openai, model: {MODEL}}}
    inputs: {{summaries: "{data_dir}/genes/refseq_gene_summaries_human.tsv.gz"}}
""")
    runner = CliRunner()
    root = str(tmp_path / "store")
    shutil.copytree(_template_store, root)
    run = runner.invoke(
        app,
        ["jobs", "submit", str(recipes), "--store", root, "--no-progress", "--workers", "1"],
        env={"COLUMNS": "400"},
    )
    assert run.exit_code == 1 and "needs an API key: set PERTSTORE_TEXT_ENDPOINT_KEY" in run.output
