"""ft-gnn: the STRING GNN pretrained by link prediction, then fine-tuned end to end on a synthetic LFC task."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pertstore.consumers.finetune import GNNFinetuneSettings, GNNRegressor, gnn_finetune_predict
from pertstore.consumers.finetune._gnn import _train
from pertstore.producers.graph import string_gnn_encoder

COMMUNITIES, SIZE, GENES_OUT = 4, 10, 12
PRETRAIN = {"dims": 16, "depth": 2, "epochs": 100, "patience": 100, "batch_size": 256, "lr": 1e-2, "score": "combined",
            "threshold": 0, "dropout": 0.0}  # fmt: skip


@dataclass
class _Same:
    ids: list[str]


def community_network(path: Path, seed: int = 0) -> list[str]:
    """Four dense communities of ten nodes, sparsely linked: a STRING-format file; returns the node names."""
    rng = np.random.default_rng(seed)
    names = [f"g{i}" for i in range(COMMUNITIES * SIZE)]
    rows = [
        (f"9606.{a}", f"9606.{b}", 900)
        for i, a in enumerate(names)
        for j, b in enumerate(names[i + 1 :], i + 1)
        if (i // SIZE == j // SIZE and rng.random() < 0.6) or rng.random() < 0.01
    ]
    pd.DataFrame(rows, columns=["protein1", "protein2", "combined_score"]).to_csv(path, sep="\t", index=False)
    return names


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    path = tmp_path_factory.mktemp("net") / "links.tsv"
    community_network(path)
    genes, encoder = string_gnn_encoder(path, lambda ids: _Same(list(ids)), PRETRAIN)
    community = np.array([int(g[1:]) // SIZE for g in genes])
    pattern = np.random.default_rng(1).normal(0, 1, size=(COMMUNITIES, GENES_OUT))
    y = pattern[community] + np.random.default_rng(2).normal(0, 0.1, size=(len(genes), GENES_OUT))
    return encoder, y


def test_pretrained_encoder_embeds_every_node_over_the_whole_graph(pretrained):
    encoder, y = pretrained
    with torch.no_grad():
        z = encoder()
    assert z.shape == (len(y), PRETRAIN["dims"]) and torch.isfinite(z).all()
    assert encoder.edge_index.shape[1] > 0 and not encoder.training


def test_fine_tuning_learns_an_lfc_of_graph_position_better_than_the_train_mean(pretrained):
    encoder, y = pretrained
    test = np.arange(len(y)) % 5 == 0  # two held-out genes per community
    train_nodes, test_nodes = np.flatnonzero(~test), np.flatnonzero(test)
    settings = GNNFinetuneSettings(epochs=60, learning_rates=(1e-2, 1e-3))
    pred, chosen, _ = gnn_finetune_predict(encoder, train_nodes, y[~test], test_nodes, settings)
    mse = ((pred - y[test]) ** 2).mean()
    mean_mse = ((y[~test].mean(axis=0) - y[test]) ** 2).mean()
    print(chosen, mse, mean_mse)
    assert chosen["lr"] in (1e-2, 1e-3) and set(chosen["val_mse"]) == {"0.01", "0.001"}
    assert mse < 0.5 * mean_mse


@pytest.mark.parametrize("freeze", [False, True])
def test_the_encoder_trains_end_to_end_unless_frozen(pretrained, freeze):
    encoder, y = pretrained
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    model = GNNRegressor(encoder, y.shape[1], GNNFinetuneSettings(epochs=5, freeze=freeze))
    start = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head = [p.clone() for p in model.head.parameters()]
    _train(model, np.arange(20), y[:20], 1e-2)
    changed = [k for k, v in model.encoder.state_dict().items() if not torch.equal(v, start[k])]
    trainable = {k for k, p in model.encoder.named_parameters() if p.requires_grad}
    if freeze:
        assert changed == [] and trainable == set()
    else:  # the node vectors, every layer's conv and norm, and the final Linear move
        assert {"embedding.weight", "out.weight", "layers.0.conv.lin.weight", "layers.1.norm.weight"} <= set(changed)
        assert trainable == {k for k, _ in model.encoder.named_parameters()}
    assert all(not torch.equal(a, b) for a, b in zip(head, model.head.parameters()))  # the head trains either way
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())  # the pretrained one is a copy
