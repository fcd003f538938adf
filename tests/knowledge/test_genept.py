"""GenePT-style text embeddings on the real RefSeq summaries with the packaged all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np
from pertstore.producers.text._sentence import encode_texts


def test_genept_embeds_real_summaries_and_records_missing_text(store, data_dir, tmp_path):
    import pandas as pd

    full = pd.read_csv(data_dir / "genes" / "refseq_gene_summaries_human.tsv.gz", sep="\t", dtype=str)
    genes = ["TP53", "MDM2", "CDKN1A", "STAT1", "STAT2", "IRF1", "JAK2", "ALB", "INS", "HBB"]
    subset = tmp_path / "summaries.tsv"
    full[full.symbol.isin(genes[:-1])].to_csv(subset, sep="\t", index=False)  # HBB left without text
    reg = store.catalog.query("SELECT entity_id FROM entities WHERE kind = 'gene'")
    card = store.produce(
        "genept", source="genept", params={"gene_types": []}, inputs={"summaries": str(subset)}, max_failed_fraction=1.0
    )
    assert card.dim == 384 and card.n_rows == 9
    assert len(card.failed) == len(reg) - 9 and set(card.failed.values()) == {"no RefSeq summary"}
    x = store.get("genept", genes).values
    assert np.isnan(x[-1]).all() and np.isfinite(x[:-1]).all()
    tp53 = full[full.symbol == "TP53"].summary.iloc[0]
    ref = encode_texts([f"TP53: tumor protein p53. {tp53}"])[0]
    np.testing.assert_allclose(x[0], ref, atol=1e-5)
    unit = x[:-1] / np.linalg.norm(x[:-1], axis=1, keepdims=True)
    sim = unit @ unit.T
    # p53 pathway genes are closer to each other than to albumin or insulin
    assert sim[0, 1] > sim[0, 7] and sim[0, 2] > sim[0, 8]
    assert sim[3, 4] > sim[3, 7]  # STAT1 ~ STAT2
