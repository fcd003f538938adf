import pandas as pd
import pytest
from pertstore.catalog import gene_registry, molecule_registry


def test_gene_ids_of_every_namespace_resolve_to_one_gene(store):
    res = store.resolve(
        ["TP53", "tp53", "7157", "ENTREZ:7157", "ENSG00000141510", "ENSG00000141510.17", "P53", "TRP53"], "gene"
    )
    assert res.ids == ["ENSG00000141510"] * 8
    assert res.unresolved == [] and res.ambiguous == {}


def test_protein_ids_and_multi_ensembl_genes(store):
    # ABCF1 has seven Ensembl gene ids (alternate haplotypes); the first is canonical, all resolve
    res = store.resolve(["ENSG00000236149", "ENSP00000413319", "ABCF1"], "gene")
    assert res.ids == ["ENSG00000204574"] * 3


def test_unresolved_and_ambiguous_are_reported_not_picked(store):
    table = pd.DataFrame(
        {
            "entrez_id": ["1", "2", "3"],
            "symbol": ["AAA", "BBB", "CCC"],
            "ensembl_gene_ids": ["ENSG00000000001", "ENSG00000000002;ENSG00000000009", "ENSG00000000009"],
            "aliases": ["SHARED;AAA", "SHARED;BBB", "CCC"],
        }
    )
    store.register_genes(table)
    res = store.resolve(["SHARED", "nothing-like-this", "AAA"], "gene")
    assert res.ids[0] is None and res.ambiguous["SHARED"] == ["ENSG00000000001", "ENSG00000000002"]
    assert res.unresolved == ["nothing-like-this"]
    assert res.ids[2] == "ENSG00000000001"


def test_canonical_gene_id_policy():
    table = pd.DataFrame(
        {"entrez_id": ["1", "2", "3"], "symbol": ["A", "B", "C"], "ensembl_gene_ids": ["ENSG1;ENSG2", "ENSG1", ""]}
    )
    reg = gene_registry(table)
    # ENSG1 is shared by genes 1 and 2: gene 1 takes its first unshared id, gene 2 falls back to Entrez
    assert reg.entity_id.tolist() == ["ENSG2", "ENTREZ:2", "ENTREZ:3"]


def test_official_symbol_beats_another_genes_alias(store):
    # "CAP" is an official symbol in some releases and an alias of others: symbol priority wins if present
    sym = store.catalog.query(
        "SELECT key, entity_id FROM aliases WHERE kind='gene' AND namespace='symbol' "
        "AND key IN (SELECT key FROM aliases WHERE namespace='alias') LIMIT 1"
    )
    key, eid = sym.iloc[0]
    assert store.resolve([key], "gene").ids == [eid]


def test_molecules_resolve_from_names_smiles_and_broad_ids(store):
    table = pd.DataFrame(
        {
            "name": ["Aspirin", "caffeine", "broken", "wild"],
            "smiles": ["CC(=O)Oc1ccccc1C(=O)O", "Cn1cnc2c1c(=O)n(C)c(=O)n2C", "C1CC(", "*C"],
            "broad_id": ["BRD-K00000001-001-01-1", "", "", ""],
        }
    )
    n, failures = store.register_molecules(table, alias_cols=["broad_id"])
    assert n == 2
    assert any("row 2" in f and "does not parse" in f for f in failures)
    assert any("row 3" in f and "no InChI" in f for f in failures)
    aspirin = "BSYNRYMUTXBXSQ-UHFFFAOYSA-N"
    res = store.resolve(["aspirin", "OC(=O)c1ccccc1OC(C)=O", aspirin, "BRD-K00000001-001-01-1", "CAFFEINE"], "molecule")
    assert res.ids[:4] == [aspirin] * 4
    assert res.ids[4] == "RYYVLZVUVIJVGH-UHFFFAOYSA-N"


def test_same_structure_rows_merge_into_one_molecule():
    table = pd.DataFrame({"name": ["ethanol", "alcohol"], "smiles": ["CCO", "OCC"]})
    reg, failures = molecule_registry(table)
    assert len(reg) == 1 and not failures
    assert reg.iloc[0]["aliases"] == "alcohol"


def test_unknown_kind_is_rejected(store):
    with pytest.raises(ValueError, match="unknown entity kind"):
        store.resolve(["TP53"], "protein")


def test_in_memory_alias_index_answers_like_the_catalog(store):
    """The alias index a long-lived process builds resolves exactly as the catalog's join does."""
    from pertstore.catalog._rebuild import read_registry
    from pertstore.catalog._registry import AliasIndex

    reg = store.catalog.query("SELECT key FROM aliases WHERE kind = 'gene' USING SAMPLE 3000 ROWS (reservoir, 7)")
    query = reg.key.tolist() + [k.lower() for k in reg.key[:500]] + ["ENSG00000141510.17", " tp53 ", "NOT_A_GENE", ""]
    expected = store.catalog._resolve_in_db(query, "gene")
    index = AliasIndex(
        store.catalog.con.execute("SELECT key, priority, entity_id FROM aliases WHERE kind = 'gene'").fetchall()
    )
    for _ in range(2):  # the second time from the answers it kept
        got = index.resolve(query)
        assert got.ids == expected.ids and got.unresolved == expected.unresolved and got.ambiguous == expected.ambiguous
    assert expected.ambiguous and expected.n_resolved > 3000  # the sample exercises both paths
    before = store.resolve(["TP53"]).ids
    assert store.resolve(["TP53"]).ids == before  # second call: answered by the join, the index built meanwhile
    store.catalog.settle()
    assert store.catalog._alias_indexes["gene"][1] is not None
    assert store.resolve(["TP53"]).ids == before  # answered by the index
    assert before[0] is not None
    reg = read_registry(store.storage, "gene")
    store.catalog.replace_registry("gene", reg[reg.entity_id != before[0]])
    assert store.resolve(["TP53"]).ids == [None]  # a new registry is never answered from a stale index
