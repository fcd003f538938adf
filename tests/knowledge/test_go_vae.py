"""go-vae: GO propagation and term filtering on a hand-made ontology; the VAE set on real GO
annotations places genes of the same biological process closer than random pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from pertstore.errors import InvalidInputError
from pertstore.producers.knowledge._go import gene_term_matrix, read_annotations, read_parents
from pertstore.producers.knowledge.go_vae import GOVAEParams, train_vae


def _ontology(tmp_path):
    terms = pd.DataFrame({"go_id": ["A", "B", "C", "D"], "name": ["a", "b", "c", "d"], "ontology": ["BP"] * 4,
                          "is_a": [None, "A", "B", "A"], "part_of": [None, None, "D", None]})
    terms.to_csv(tmp_path / "terms.tsv", sep="\t", index=False)
    ann = pd.DataFrame({"entrez_id": ["1", "2", "3", "3", "4"], "symbol": ["g1", "g2", "g3", "g3", "g4"],
                        "go_id": ["C", "B", "D", "A", "E"], "evidence": ["IDA", "IMP", "IEA", "ND", "IDA"],
                        "ontology": ["BP", "BP", "BP", "BP", "MF"]})
    ann.to_csv(tmp_path / "ann.tsv", sep="\t", index=False)
    return tmp_path / "ann.tsv", tmp_path / "terms.tsv"


def test_annotations_propagate_to_ancestors_and_rare_terms_drop(tmp_path):
    ann_path, terms_path = _ontology(tmp_path)
    pairs = read_annotations(ann_path, ["BP"], ["ND"]).rename(columns={"entrez_id": "gene"})
    assert sorted(zip(pairs.gene, pairs.go_id)) == [("1", "C"), ("2", "B"), ("3", "D")]  # no ND, no MF
    genes = ["1", "2", "3", "9"]
    m, terms = gene_term_matrix(pairs, genes, read_parents(terms_path), min_genes=2)
    assert terms == ["A", "B", "D"]  # C reaches one gene only
    np.testing.assert_array_equal(m.toarray(), [[1, 1, 1], [1, 1, 0], [1, 0, 1], [0, 0, 0]])
    m, terms = gene_term_matrix(pairs, genes, None, min_genes=1)
    assert terms == ["B", "C", "D"] and m.sum() == 3


def test_bad_go_table_names_the_file(tmp_path):
    bad = tmp_path / "bad.tsv"
    pd.DataFrame({"gene": ["1"], "term": ["A"]}).to_csv(bad, sep="\t", index=False)
    with pytest.raises(InvalidInputError, match="bad.tsv.*go_id"):
        read_annotations(bad, ["BP"], [])


def test_vae_is_deterministic_under_a_seed():
    x = sp.csr_matrix((np.random.default_rng(0).random((200, 40)) < 0.2).astype(np.float32))
    params = GOVAEParams(latent=4, hidden=16, epochs=3, batch_size=32)
    a = train_vae(x, params)
    np.testing.assert_array_equal(a, train_vae(x, params))
    assert a.shape == (200, 4) and not np.array_equal(a, train_vae(x, params.model_copy(update={"seed": 1})))


def test_go_vae_set_groups_genes_of_a_biological_process(store, data_dir, tmp_path):
    full = pd.read_csv(data_dir / "genes" / "go_annotations_human.tsv.gz", sep="\t", dtype=str)
    genes = pd.Series(full.entrez_id.unique()).sample(1500, random_state=0)
    subset = full[full.entrez_id.isin(set(genes))]
    subset.to_csv(tmp_path / "ann.tsv", sep="\t", index=False)
    params = {"latent": 16, "hidden": 128, "epochs": 30, "min_genes": 10, "gene_types": [], "lr": 3e-3}
    card = store.produce("go-vae", source="go-vae", params=params, max_failed_fraction=1.0,
                         inputs={"annotations": str(tmp_path / "ann.tsv"),
                                 "terms": str(data_dir / "genes" / "go_terms.tsv.gz")})
    assert card.dim == 16 and 1200 < card.n_rows <= 1500
    assert set(card.failed.values()) <= {"no GO annotation", "no GO term with >= 10 genes"}
    x = store.get("go-vae", list(genes))
    ok = pd.Series(~np.isnan(x.values[:, 0]), index=list(genes))
    unit = x.values / np.linalg.norm(x.values, axis=1, keepdims=True)
    pos = {g: i for i, g in enumerate(genes)}
    # specific biological processes (5-30 genes of the subset, direct experimental annotations)
    bp = subset[(subset.ontology == "BP") & subset.evidence.isin(["IDA", "IMP", "IPI", "IGI", "EXP"])]
    members = bp.groupby("go_id").entrez_id.apply(lambda s: [g for g in s.unique() if ok[g]])
    members = members[members.str.len().between(5, 30)]
    same = [float(unit[pos[a]] @ unit[pos[b]]) for m in members for i, a in enumerate(m) for b in m[i + 1:]]
    rng = np.random.default_rng(0)
    idx = np.flatnonzero(ok.to_numpy())
    ra, rb = rng.choice(idx, len(same)), rng.choice(idx, len(same))
    random = (unit[ra] * unit[rb]).sum(1)
    assert len(members) > 20
    assert np.mean(same) > np.mean(random) + 0.2, (np.mean(same), np.mean(random))
