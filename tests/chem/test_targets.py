"""Drug-target encodings: binary/weighted vectors and FM-target concatenations, with recorded gaps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pertstore.errors import InvalidInputError

DRUGS = pd.DataFrame(
    {
        "name": ["imatinib", "gefitinib", "aspirin", "caffeine", "vorinostat"],
        "smiles": [
            "Cc1ccc(NC(=O)c2ccc(CN3CCN(C)CC3)cc2)cc1Nc1nccc(-c2cccnc2)n1",
            "COc1cc2ncnc(Nc3ccc(F)c(Cl)c3)c2cc1OCCCN1CCOCC1",
            "CC(=O)Oc1ccccc1C(=O)O",
            "Cn1cnc2c1c(=O)n(C)c(=O)n2C",
            "O=C(CCCCCCC(=O)Nc1ccccc1)NO",
        ],
    }
)
# imatinib twice under two names (one entity); aspirin's only target is not a gene; caffeine absent
TARGETS = pd.DataFrame(
    {
        "drug": ["imatinib", "imatinib", "STI-571", "gefitinib", "gefitinib", "aspirin", "vorinostat", "vorinostat"],
        "target": ["ABL1", "KIT", "PDGFRA", "EGFR", "ABL1", "NOT_A_GENE_X", "HDAC1", "HDAC2"],
        "confidence": [1.0, 0.5, 0.25, 1.0, 0.25, 1.0, 1.0, 0.5],
    }
)


@pytest.fixture
def target_store(store, tmp_path):
    drugs = DRUGS.assign(aliases=["STI-571", "", "", "", ""])
    store.register_molecules(drugs, alias_cols=["aliases"])
    TARGETS.to_csv(tmp_path / "targets.tsv", sep="\t", index=False)
    return store, str(tmp_path / "targets.tsv")


def _gene(store, symbol):
    return store.resolve([symbol]).ids[0]


def test_binary_and_weighted_vectors(target_store):
    store, path = target_store
    binary = store.produce("drug-targets", source="targets-bin", inputs={"targets": path}, max_failed_fraction=1)
    weighted = store.produce(
        "drug-targets", source="targets-w", params={"weighted": True}, inputs={"targets": path}, max_failed_fraction=1
    )
    columns = sorted(_gene(store, g) for g in ["ABL1", "KIT", "PDGFRA", "EGFR", "HDAC1", "HDAC2"])
    assert binary.dim == weighted.dim == len(columns)
    x = store.get("targets-w", ["imatinib", "STI-571", "gefitinib"]).values
    want = np.zeros(len(columns))
    for g, c in [("ABL1", 1.0), ("KIT", 0.5), ("PDGFRA", 0.25)]:
        want[columns.index(_gene(store, g))] = c
    np.testing.assert_array_equal(x[0], want)  # both names, one molecule, the union of its targets
    np.testing.assert_array_equal(x[0], x[1])
    assert store.get("targets-bin", ["gefitinib"]).values.sum() == 2
    assert "NOT_A_GENE_X" in binary.failed[store.resolve(["aspirin"], "molecule").ids[0]]
    assert binary.failed[store.resolve(["caffeine"], "molecule").ids[0]] == "no targets in the table"


def test_fm_targets_concatenate_gene_embeddings_in_confidence_order(target_store):
    store, path = target_store
    genes = {g: _gene(store, g) for g in ["ABL1", "KIT", "PDGFRA", "EGFR", "HDAC1"]}  # HDAC2 left out
    values = np.arange(len(genes) * 4, dtype=np.float32).reshape(len(genes), 4)
    frame = pd.DataFrame(values, columns=list("abcd")).assign(gene=list(genes))
    frame.to_parquet(path + ".parquet")
    store.import_file(path + ".parquet", source="gene-emb", id_col="gene")
    card = store.produce(
        "fm-targets", source="fm-targets", inputs={"targets": path, "genes": "set:gene-emb"}, max_failed_fraction=1
    )
    assert card.dim == 12
    emb = dict(zip(genes, values))
    x = store.get("fm-targets", ["imatinib", "vorinostat", "gefitinib"]).values
    np.testing.assert_array_equal(x[0], np.concatenate([emb["ABL1"], emb["KIT"], emb["PDGFRA"]]))
    np.testing.assert_array_equal(x[1], np.concatenate([emb["HDAC1"]] * 3))  # one available target: mean fill
    np.testing.assert_array_equal(x[2], np.concatenate([emb["EGFR"], emb["ABL1"], (emb["EGFR"] + emb["ABL1"]) / 2]))
    strict = store.produce(
        "fm-targets",
        source="fm-strict",
        params={"min_targets": 2},
        inputs={"targets": path, "genes": "set:gene-emb"},
        max_failed_fraction=1,
    )
    reason = strict.failed[store.resolve(["vorinostat"], "molecule").ids[0]]
    assert "HDAC2" in reason and "1 of its targets" in reason


def test_bad_confidence_names_the_row(target_store, tmp_path):
    store, _ = target_store
    TARGETS.assign(confidence=[1, 1, 1, 1, 1, 1, 7, 1]).to_csv(tmp_path / "bad.tsv", sep="\t", index=False)
    with pytest.raises(InvalidInputError, match=r"row 8: confidence '7' of 'vorinostat'"):
        store.produce("drug-targets", source="bad", inputs={"targets": str(tmp_path / "bad.tsv")})


def test_ranked_vectors_weight_the_top_three_1_half_quarter(target_store, tmp_path):
    store, _ = target_store
    # imatinib: five targets, two tied at 0.5 (ranked by canonical gene id); the fifth gets 0
    table = pd.DataFrame(
        {
            "drug": ["imatinib"] * 5 + ["gefitinib"],
            "target": ["KIT", "ABL1", "PDGFRA", "PDGFRB", "DDR1", "EGFR"],
            "confidence": [0.5, 1.0, 0.5, 0.25, 0.1, 1.0],
        }
    )
    table.to_csv(tmp_path / "ranked.tsv", sep="\t", index=False)
    card = store.produce(
        "drug-targets",
        source="targets-r",
        params={"ranked": True},
        inputs={"targets": str(tmp_path / "ranked.tsv")},
        max_failed_fraction=1,
    )
    columns = sorted(_gene(store, g) for g in table.target)
    x = store.get("targets-r", ["imatinib", "gefitinib"]).values
    tied = sorted([_gene(store, "KIT"), _gene(store, "PDGFRA")])
    want = np.zeros(card.dim)
    for gene, w in [(_gene(store, "ABL1"), 1.0), (tied[0], 0.5), (tied[1], 0.25)]:
        want[columns.index(gene)] = w
    np.testing.assert_array_equal(x[0], want)
    assert x[1].sum() == 1.0 and x[1][columns.index(_gene(store, "EGFR"))] == 1.0
    with pytest.raises(InvalidInputError, match="choose one"):
        store.produce(
            "drug-targets",
            source="targets-x",
            params={"ranked": True, "weighted": True},
            inputs={"targets": str(tmp_path / "ranked.tsv")},
            max_failed_fraction=1,
        )
