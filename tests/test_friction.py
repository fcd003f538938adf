"""Everyday friction (issue 27): shared Ensembl ids, listings piped to files, ``Store.init`` and genes."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pandas as pd
from pertstore.catalog import gene_registry
from pertstore.catalog._registry import SHARED_ID_RULES, ensembl_assignment
from pertstore.producers import describe_producers
from typer.testing import CliRunner

from pertstore import Store
from pertstore._similarity import labels
from pertstore.cli import app

runner = CliRunner()


def _run(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _cli(*args: str, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: a process of its own, output not a terminal."""
    return subprocess.run(
        [sys.executable, "-m", "pertstore.cli", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_two_shared_ids_resolve_by_ensembl_and_the_rule_is_recorded(tmp_path, data_dir):
    store = Store.init(tmp_path / "s", genes=False)
    store.register_genes(ensembl=ensembl_assignment(data_dir / "genes" / "tss_grch38.tsv.gz"))
    res = store.resolve(["ENSG00000205571", "ENSG00000160201", "ENSG00000160201.4", "ENSG00000172062"])
    symbols = dict(zip(res.query, labels(store, "gene", res.ids)))
    assert symbols == {
        "ENSG00000205571": "SMN2",
        "ENSG00000160201": "U2AF1",
        "ENSG00000160201.4": "U2AF1",
        "ENSG00000172062": "SMN1",
    }
    rule = f"ensembl: {SHARED_ID_RULES['ensembl']}"
    assert res.rules == {"ENSG00000205571": rule, "ENSG00000160201": rule, "ENSG00000160201.4": rule}
    assert not res.ambiguous and not res.unresolved
    for _ in range(3):  # the catalog's join, then the in-memory alias index once built: the same rules
        store.resolve(res.query)
    store.settle()
    assert store.catalog._alias_index("gene") is not None
    assert store.resolve(res.query).rules == res.rules
    # an id both SMN genes share that Ensembl gives neither (not a primary-assembly id) stays ambiguous
    assert set(store.resolve(["ENSG00000273772"]).ambiguous["ENSG00000273772"]) == set(
        store.resolve(["SMN1", "SMN2"]).ids
    )
    store.close()


def test_sole_id_rule_and_truly_ambiguous_ids_without_ensembl_table(tmp_path):
    table = pd.DataFrame(
        {
            "entrez_id": ["1", "2", "3", "4"],
            "symbol": ["AAA", "BBB", "CCC", "DDD"],
            "ensembl_gene_ids": ["ENSG01;ENSG02", "ENSG02", "ENSG03;ENSG04", "ENSG04;ENSG05"],
        }
    )
    reg = gene_registry(table)
    assert reg.set_index("symbol").shared_ensembl.to_dict() == {
        "AAA": "",
        "BBB": "ENSG02:sole-id",
        "CCC": "",
        "DDD": "",
    }
    with Store.init(tmp_path / "s", genes=False) as s:
        s.register_genes(table, ensembl=pd.DataFrame({"ensembl_id": [], "symbol": []}))
        res = s.resolve(["ENSG02", "ensg04", "ENSG01"])
        by_id = dict(zip(reg.symbol, reg.entity_id))
        assert res.ids == [by_id["BBB"], None, by_id["AAA"]]
        assert res.rules == {"ENSG02": f"sole-id: {SHARED_ID_RULES['sole-id']}"}
        assert sorted(res.ambiguous["ensg04"]) == sorted([by_id["CCC"], by_id["DDD"]])
        out = runner.invoke(app, ["resolve", "ENSG02", "--store", s.uri, "--format", "json"])
        assert out.exit_code == 0, out.output
        assert json.loads(out.output)[0]["status"] == f"ok (sole-id: {SHARED_ID_RULES['sole-id']})"
    # registering again with Ensembl's table (CLI) settles ENSG04: Ensembl names DDD
    table.to_csv(tmp_path / "genes.tsv", sep="\t", index=False)
    pd.DataFrame({"ensembl_id": ["ENSG04"], "symbol": ["DDD"]}).to_csv(tmp_path / "ens.tsv", sep="\t", index=False)
    _run(
        "registry",
        "genes",
        "--table",
        tmp_path / "genes.tsv",
        "--ensembl",
        tmp_path / "ens.tsv",
        "--store",
        tmp_path / "s",
    )
    with Store.open(tmp_path / "s") as s:
        res = s.resolve(["ensg04", "ENSG02"])
        assert res.ids == [by_id["DDD"], by_id["BBB"]] and not res.ambiguous
        assert res.rules["ensg04"].startswith("ensembl: ")


def test_python_init_registers_genes_like_the_cli(tmp_path):
    with Store.init(tmp_path / "py") as s:
        n_py = s.catalog.n_entities("gene")
        assert s.resolve(["TP53"]).ids == ["ENSG00000141510"]
    done = runner.invoke(app, ["init", str(tmp_path / "cli")])
    assert done.exit_code == 0, done.output
    assert f"{n_py:,} genes registered" in done.output and n_py > 60_000
    with Store.init(tmp_path / "bare", genes=False) as s:
        assert s.catalog.n_entities("gene") == 0
    with Store.open(tmp_path / "cli") as s:
        assert s.catalog.n_entities("gene") == n_py


def test_listings_piped_to_a_file_keep_every_character(tmp_path):
    producers = describe_producers()
    out = tmp_path / "producers.txt"
    with out.open("w") as f:
        assert _cli("producers", "ls", stdout=f).returncode == 0
    text = out.read_text()
    assert "…" not in text
    for row in producers.itertuples(index=False):  # every value whole, on the producer's own line
        line = next(li for li in text.splitlines() if f" {row.name} " in li)
        for value in row:
            assert str(value) in line, (row.name, value)
    tsv = _run("producers", "ls", "--format", "tsv")
    pd.testing.assert_frame_equal(
        pd.read_csv(io.StringIO(tsv), sep="\t", dtype=str, keep_default_na=False), producers.astype(str)
    )
    got = json.loads(_run("producers", "ls", "-f", "json"))
    assert [r["params"] for r in got] == producers.params.tolist()


def test_set_listings_in_each_format(store, tmp_path):
    import numpy as np
    from pertstore.store import Recipe

    long_source = "a-rather-long-source-name-for-a-set-of-embeddings-" + "x" * 40
    store.write_set(
        Recipe(source=long_source, producer="import", kind="gene", params={"note": "[bold]x[/]"}),
        ["ENSG00000141510"],
        np.ones((1, 3), dtype=np.float32),
    )
    root = store.uri
    store.close()
    assert long_source in _run("ls", "--store", root)  # CliRunner's output is not a terminal either
    rows = json.loads(_run("ls", "--store", root, "--format", "json"))
    assert rows[0]["source"] == long_source and rows[0]["n_rows"] == 1
    assert _run("ls", "--store", root, "-f", "tsv").splitlines()[1].split("\t")[0] == long_source
    card = json.loads(_run("show", long_source, "--store", root, "-f", "json"))
    assert card["recipe"]["params"] == {"note": "[bold]x[/]"}
    shown = _run("show", long_source, "--store", root, "-f", "table")
    assert '"note": "[bold]x[/]"' in shown  # markup-looking values are printed as they are
    for verb in (["jobs", "ls"], ["tasks", "ls"], ["bench", "results"]):
        assert json.loads(_run(*verb, "--store", root, "--format", "json")) == [], verb
