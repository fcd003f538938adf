"""drug-text on real Drug Repurposing Hub rows with the packaged all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pertstore.catalog import read_repurposing_hub
from pertstore.producers.text._sentence import encode_texts
from pertstore.producers.text.drug_text import describe


def test_drug_text_describes_and_embeds_registered_drugs(store, data_dir, tmp_path):
    hub = pd.read_csv(data_dir / "molecules" / "repurposing_hub.tsv.gz", sep="\t", dtype=str).fillna("")
    names = ["imatinib", "dasatinib", "aspirin", "ibuprofen"]
    rows = hub[hub.pert_iname.isin(names)]
    subset = tmp_path / "hub.tsv"
    rows.to_csv(subset, sep="\t", index=False)
    store.register_molecules(read_repurposing_hub(subset), alias_cols=["broad_id"])
    card = store.produce("drug-text", source="drug-text", inputs={"annotations": str(subset)})
    assert card.dim == 384 and card.n_rows == len(set(rows.pert_iname))
    x = store.get("drug-text", names).values
    imatinib = rows[rows.pert_iname == "imatinib"].iloc[0]
    text = describe("imatinib", imatinib.smiles, imatinib)
    assert "Targets: " in text and "ABL1" in text and "Mechanism of action" in text
    np.testing.assert_allclose(x[0], encode_texts([text])[0], atol=1e-5)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert unit[0] @ unit[1] > unit[0] @ unit[2]  # two kinase inhibitors closer than imatinib and aspirin
