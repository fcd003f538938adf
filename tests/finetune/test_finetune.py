"""LoRA fine-tuning (In-Silico KO and Indexing) over a tiny random dense checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pertstore.consumers.evaluators import evaluator, l2_per_perturbation
from pertstore.consumers.finetune import (
    FineTuner,
    FinetuneSettings,
    cell_model,
    finetune_predict,
    isko_input,
    lora_model,
)
from pertstore.producers.expression.checkpoints import DenseCellConfig, DenseCellModel

N_GENES = 30


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    genes = [f"G{i}" for i in range(N_GENES)]
    model = DenseCellModel(DenseCellConfig(gene_names=genes, d_model=16, nhead=2, d_hid=32, nlayers=2))
    path = tmp_path_factory.mktemp("ckpt") / "dense"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def cells() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.log1p(rng.poisson(rng.uniform(2, 20, size=N_GENES), size=(40, N_GENES))).astype(np.float32)


def test_lora_freezes_the_base_and_trains_the_adapters(checkpoint):
    model = lora_model(str(checkpoint), FinetuneSettings())
    named = dict(model.named_parameters())
    lora = {n for n in named if "lora_" in n}
    assert lora and all(named[n].requires_grad for n in lora)
    assert not any(p.requires_grad for n, p in named.items() if n not in lora)
    wrapped = {n.split(".lora_")[0] for n in lora}  # every layer's attention output and feed-forward projections
    assert len(wrapped) == 2 * 3 and not any("value_encoder" in n for n in wrapped)
    indexing = FinetuneSettings(mode="indexing")
    tuner = FineTuner(cell_model(str(checkpoint), np.ones((4, N_GENES), np.float32), indexing), 5, indexing)
    before = {n: p.detach().clone() for n, p in tuner.base.named_parameters()}
    loss = tuner(torch.tensor([1, 2])).pow(2).sum()
    loss.backward()
    torch.optim.SGD([p for p in tuner.parameters() if p.requires_grad], lr=0.5).step()
    after = dict(tuner.base.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all("lora_B" in n for n in changed)  # B starts at zero and moves first; the base never


def test_isko_input_masks_exactly_the_perturbed_gene():
    profile = torch.arange(1, N_GENES + 1, dtype=torch.float32)
    genes = torch.tensor([0, 7, 29])
    x = isko_input(profile, genes, mask_value=0.0)
    assert x.shape == (3, N_GENES)
    for i, g in enumerate(genes.tolist()):
        assert x[i, g] == 0
        others = torch.arange(N_GENES) != g
        assert torch.equal(x[i, others], profile[others])


def _frozen_embedding(checkpoint: Path, cells: np.ndarray) -> np.ndarray:
    """The scfm producer's embedding: each gene's last hidden state averaged over the control cells."""
    model = DenseCellModel.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        return model(values=torch.as_tensor(cells)).last_hidden_state.mean(dim=0).numpy()


def test_isko_fine_tuning_beats_the_frozen_embedding_with_knn(checkpoint, cells):
    """A learnable signal: knocking a gene out lowers that gene alone by 2 (plus noise)."""
    rng = np.random.default_rng(1)
    y = np.diag(np.full(N_GENES, -2.0)) + 0.05 * rng.normal(size=(N_GENES, N_GENES))
    test = np.arange(N_GENES) % 5 == 0
    train_pos, test_pos = np.flatnonzero(~test), np.flatnonzero(test)
    settings = FinetuneSettings(mode="isko", epochs=40, learning_rates=(1e-2, 1e-3))
    pred, chosen = finetune_predict(
        cell_model(str(checkpoint), cells, settings), train_pos, y[~test], test_pos, settings
    )
    assert pred.shape == (test.sum(), N_GENES) and chosen["lr"] in (1e-2, 1e-3)
    assert set(chosen["val_mse"]) == {"0.01", "0.001"}
    knn_pred, _ = evaluator("knn").fit_predict(
        _frozen_embedding(checkpoint, cells)[~test], y[~test], _frozen_embedding(checkpoint, cells)[test]
    )
    fine, frozen = l2_per_perturbation(y[test], pred).mean(), l2_per_perturbation(y[test], knn_pred).mean()
    print(f"ISKO L2 {fine:.3f} vs frozen + kNN {frozen:.3f}, lr {chosen['lr']}")
    assert fine < 0.7 * frozen, (fine, frozen)


def test_indexing_trains_and_predicts_task_genes(checkpoint, cells):
    rng = np.random.default_rng(2)
    y = rng.normal(size=(12, 7))
    settings = FinetuneSettings(mode="indexing", epochs=3, learning_rates=(1e-3,), head=(32, 64))
    model = cell_model(str(checkpoint), cells, settings)
    pred, chosen = finetune_predict(model, np.arange(10), y[:10], np.array([10, 11]), settings)
    assert pred.shape == (2, 7) and np.isfinite(pred).all() and chosen["mode"] == "indexing"


def test_bad_mode_and_checkpoint_are_clear(tmp_path):
    from pertstore.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="mode"):
        FinetuneSettings(mode="gnn")
    with pytest.raises(InvalidInputError, match="checkpoint"):
        lora_model(str(tmp_path), FinetuneSettings())


def test_report_draws_fine_tuned_models_beside_each_evaluator():
    """Figure 4: the fine-tuned rows join the kNN figure (beside the frozen set); they are no figure of their own."""
    import pandas as pd
    from pertstore.consumers.reports._tables import families

    prim = pd.DataFrame(
        {
            "task": "t",
            "set": ["aido", "train_mean", "finetune(aido)", "finetune(aido)"],
            "evaluator": ["knn", "none", "ft-isko", "ft-indexing"],
            "value": [1.0, 2.0, 0.5, 3.0],
        }
    )
    drawn = families(prim)
    assert [ev for _, ev, _ in drawn] == ["knn"]
    assert set(drawn[0][2].evaluator) == {"knn", "none", "ft-isko", "ft-indexing"}
