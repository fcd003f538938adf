"""The STRING graph producers end to end through the store, on a slice of the real v12 table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pertstore.producers.graph._string import read_string

FAST = {
    "string-node2vec": {"dims": 16, "walk_length": 5, "context_size": 3, "walks_per_node": 1, "epochs": 1},
    "string-gnn": {"dims": 16, "epochs": 2, "layer": "gin"},
    "string-wavegc": {"dims": 16, "epochs": 2, "terms": 2, "heads": 2},
}


@pytest.mark.parametrize("producer", sorted(FAST))
def test_graph_producer_embeds_every_gene_of_the_network(store, string_small_file, producer):
    card = store.produce(producer, source=producer, params=FAST[producer], inputs={"network": str(string_small_file)})
    edges = read_string(string_small_file)
    genes = pd.unique(np.concatenate([edges.a, edges.b]))
    assert card.dim == 16 and card.n_rows == len(genes) and not card.failed
    x = store.get(producer, list(genes))  # Entrez ids resolve to the set's canonical rows
    assert np.isfinite(x.values).all()
    rows = store.get(producer)  # every row, by canonical id
    assert rows.sizes["entity"] == len(genes) and all(str(i).startswith("ENSG") for i in rows.entity.values[:20])
