"""Every ``PERTSTORE_*`` variable is read through one settings object (``pertstore._config.Settings``),
is documented in the README's table, and takes effect where it is used."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from pertstore import Store, get_settings
from pertstore._config import Settings
from pertstore.errors import InvalidInputError

ROOT = Path(__file__).resolve().parents[1]
CODE = ["pertstore", "store", "catalog", "producers", "consumers", "api", "benchmarks"]
READS = re.compile(r"""(environ\.get|getenv)\(\s*f?["']PERTSTORE_|environ\[\s*f?["']PERTSTORE_\w*["']\](?!\s*=[^=])""")
"""A read of a PERTSTORE_ variable (setting one, as a benchmark does for its child runs, is fine)."""
VARIABLES = {f"PERTSTORE_{name.upper()}": name for name in Settings.model_fields}


def test_no_module_reads_a_pertstore_variable_itself():
    readers = [
        f"{path.relative_to(ROOT)}:{n}"
        for folder in CODE
        for path in sorted((ROOT / folder).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if READS.search(line)
    ]
    assert readers == []
    assert READS.search('os.environ.get("PERTSTORE_TOKEN")') and READS.search("x = os.environ['PERTSTORE_DEVICE']")
    assert not READS.search('os.environ["PERTSTORE_TEXT_RUNTIME"] = runtime')


def test_every_variable_is_in_the_readme_table():
    rows = {m.group(1) for m in re.finditer(r"^\| `(PERTSTORE_\w+)` \|", (ROOT / "README.md").read_text(), re.M)}
    assert rows == set(VARIABLES)


def test_each_field_reads_its_variable(monkeypatch):
    """Generic: every field of the object (today's and any added later) comes from ``PERTSTORE_<NAME>``."""
    samples = {int: ("7", 7), float: ("7.5", 7.5), bool: ("true", True)}
    for variable, name in VARIABLES.items():
        text, value = samples.get(Settings.model_fields[name].annotation, (f"value-of-{name}",) * 2)
        monkeypatch.setenv(variable, text)
        got = getattr(get_settings(), name)
        got = got.get_secret_value() if isinstance(got, SecretStr) else got  # secrets stay hidden in reprs
        assert got == value, variable


def test_store_catalog_cache_and_threads_take_effect(monkeypatch, tmp_path):
    monkeypatch.setenv("PERTSTORE_STORE", str(tmp_path / "root"))
    monkeypatch.setenv("PERTSTORE_CATALOG", str(tmp_path / "elsewhere.duckdb"))
    monkeypatch.setenv("PERTSTORE_CACHE_BYTES", "12345")
    monkeypatch.setenv("PERTSTORE_READ_THREADS", "3")
    with Store.init() as s:
        assert s.uri == str(tmp_path / "root")
        s.catalog.query("SELECT 1")
        assert (tmp_path / "elsewhere.duckdb").is_file()
        assert (s.cache.max_bytes, s.cache.threads) == (12345, 3)


def test_data_dir_and_plan_limit_take_effect(monkeypatch, tmp_path):
    from pertstore.producers._spec import load_recipes

    monkeypatch.setenv("PERTSTORE_DATA_DIR", str(tmp_path / "data"))
    text = "recipes:\n  - {producer: string-spectral, source: g, inputs: {network: '${data}/net.tsv'}}\n"
    assert load_recipes(text)[0].inputs["network"] == str(tmp_path / "data" / "net.tsv")
    monkeypatch.setenv("PERTSTORE_MAX_PLAN_RECIPES", "1")
    with Store.init(tmp_path / "store") as s, pytest.raises(InvalidInputError, match="limit of 1"):
        s.jobs.plan("recipes:\n  - {producer: random, source: a}\n  - {producer: random, source: b}\n")


def test_token_takes_effect_in_the_server_and_the_client(monkeypatch, tmp_path):
    from pertstore.api import create_app

    from pertstore.client import Client

    monkeypatch.setenv("PERTSTORE_TOKEN", "from-the-environment")
    with Store.init(tmp_path / "store") as s:
        s.register_genes()
        card = s.produce("checksum", source="ck", params={"limit": 10, "dim": 2})
        http = TestClient(create_app(s))
        assert http.put("/v1/sets/ck/tags/t", json={"version": card.version}).status_code == 401
        with Client("http://testserver", http=http) as client:
            client.tag("ck", card.version, "t")  # the client sends the variable's token
        assert s.show("ck", tag="t").version == card.version


def test_device_and_text_runtime_take_effect(monkeypatch, tmp_path):
    from pertstore.producers._base import ProducerContext
    from pertstore.producers.text import _onnx
    from pertstore.store import open_storage

    monkeypatch.setenv("PERTSTORE_DEVICE", "cpu:7")
    assert ProducerContext(open_storage(str(tmp_path))).device == "cpu:7"
    monkeypatch.setenv("PERTSTORE_TEXT_RUNTIME", "torch")
    assert _onnx.wanted() is False
    monkeypatch.setenv("PERTSTORE_TEXT_RUNTIME", "ONNX")
    assert _onnx.wanted() is True
    monkeypatch.setenv("PERTSTORE_TEXT_RUNTIME", "tensorflow")
    with pytest.raises(ValueError, match="PERTSTORE_TEXT_RUNTIME"):
        _onnx.wanted()
