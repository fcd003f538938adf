"""genept on a small subset of real genes: genes annotated to the same GO biological process are
closer than random pairs of the subset."""

from __future__ import annotations

import numpy as np
import pandas as pd


def test_genept_places_genes_of_a_biological_process_together(store, data_dir, tmp_path):
    go = pd.read_csv(data_dir / "genes" / "go_annotations_human.tsv.gz", sep="\t", dtype=str)
    summaries = pd.read_csv(data_dir / "genes" / "refseq_gene_summaries_human.tsv.gz", sep="\t", dtype=str)
    described = set(summaries.dropna(subset=["summary"]).entrez_id)
    bp = go[(go.ontology == "BP") & go.evidence.isin(["IDA", "IMP", "IGI", "EXP"]) & go.entrez_id.isin(described)]
    sizes = bp.groupby("go_id").entrez_id.nunique()
    terms = sizes[sizes.between(8, 12)].sample(10, random_state=0).index
    members = bp[bp.go_id.isin(terms)].groupby("go_id").entrez_id.unique()
    genes = sorted(set(np.concatenate(members.to_numpy())))
    summaries[summaries.entrez_id.isin(set(genes))].to_csv(tmp_path / "summaries.tsv", sep="\t", index=False)
    store.produce(
        "genept", source="genept", max_failed_fraction=1.0, inputs={"summaries": str(tmp_path / "summaries.tsv")}
    )
    x = store.get("genept", genes).values
    assert np.isfinite(x).all(1).mean() > 0.9  # the protein-coding genes (the default gene types)
    genes = [g for g, ok in zip(genes, np.isfinite(x).all(1)) if ok]
    x = x[np.isfinite(x).all(1)]
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    pos = {g: i for i, g in enumerate(genes)}
    members = [[g for g in m if g in pos] for m in members]
    same = [unit[pos[a]] @ unit[pos[b]] for m in members for i, a in enumerate(m) for b in m[i + 1 :]]
    rng = np.random.default_rng(0)
    random = (unit[rng.integers(0, len(genes), 2000)] * unit[rng.integers(0, len(genes), 2000)]).sum(1)
    assert np.mean(same) > np.mean(random) + 0.08, (np.mean(same), np.mean(random))
