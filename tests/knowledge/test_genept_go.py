"""genept-go: GO texts per gene built from the real GO files equal an independent construction written
here; a set embeds them with the packaged MiniLM and records genes without annotations of the aspect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pertstore.producers.text._sentence import encode_texts
from pertstore.producers.text.genept import go_texts

LABEL = {"BP": "Biological process", "MF": "Molecular function", "CC": "Cellular component"}


def _expected(ann: pd.DataFrame, names: dict[str, str], ontologies: list[str]) -> dict[str, str]:
    """Row by row: per gene and ontology, the names of its terms (once, GO-id order), without ND evidence."""
    terms: dict[str, dict[str, set[str]]] = {}
    symbols: dict[str, str] = {}
    for gene, symbol, go_id, evidence, ontology in ann.itertuples(index=False):
        if ontology in ontologies and evidence != "ND":
            terms.setdefault(gene, {}).setdefault(ontology, set()).add(go_id)
            symbols.setdefault(gene, symbol)
    out = {}
    for gene, by_ontology in terms.items():
        parts = [
            f"{LABEL[o]}: " + "; ".join(names[t] for t in sorted(by_ontology[o])) + "."
            for o in ontologies
            if o in by_ontology
        ]
        out[gene] = f"{symbols[gene]}. " + " ".join(parts)
    return out


@pytest.fixture(scope="module")
def go_files(data_dir):
    return str(data_dir / "genes" / "go_annotations_human.tsv.gz"), str(data_dir / "genes" / "go_terms.tsv.gz")


@pytest.mark.parametrize(
    "aspect, ontologies", [("bp", ["BP"]), ("mf", ["MF"]), ("cc", ["CC"]), ("all", ["BP", "MF", "CC"])]
)
def test_go_texts_equal_an_independent_construction_on_the_real_files(go_files, aspect, ontologies):
    ann = pd.read_csv(go_files[0], sep="\t", dtype=str)[["entrez_id", "symbol", "go_id", "evidence", "ontology"]]
    names = pd.read_csv(go_files[1], sep="\t", dtype=str).set_index("go_id")["name"].to_dict()
    expected = _expected(ann, names, ontologies)
    got = go_texts(*go_files, aspect, ("ND",)).set_index("entrez_id")["text"].to_dict()
    assert len(got) == len(expected) > 15_000
    assert got == expected
    if aspect == "all":  # TP53 (7157) has all three sections, in BP, MF, CC order
        tp53 = got["7157"]
        assert tp53.startswith("TP53. Biological process: ") and tp53.index("Molecular function") < tp53.index(
            "Cellular component"
        )


def test_genept_go_set_embeds_the_texts_and_records_unannotated_genes(store, go_files, tmp_path):
    ann = pd.read_csv(go_files[0], sep="\t", dtype=str)
    genes = ["TP53", "MDM2", "STAT1", "ALB", "A1BG"]  # A1BG's BP annotation is ND only
    subset = tmp_path / "ann.tsv"
    ann[ann.symbol.isin(genes)].to_csv(subset, sep="\t", index=False)
    card = store.produce(
        "genept-go",
        source="genept-go-bp",
        params={"aspect": "bp"},
        max_failed_fraction=1.0,
        inputs={"annotations": str(subset), "terms": go_files[1]},
    )
    assert card.dim == 384 and card.n_rows == 4 and card.recipe.params["model"] == "all-MiniLM-L6-v2"
    assert set(card.failed.values()) == {"no GO BP annotation"}
    x = store.get("genept-go-bp", genes).values
    assert np.isnan(x[-1]).all() and np.isfinite(x[:-1]).all()
    text = go_texts(str(subset), go_files[1], "bp", ("ND",)).set_index("entrez_id").text["7157"]
    np.testing.assert_allclose(x[0], encode_texts([text])[0], atol=1e-5)
