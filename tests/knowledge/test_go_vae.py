"""go-vae: GO propagation and term filtering on a hand-made ontology; the GenotypeVAE's forward pass and
loss equal PerturbNet's formula computed here in numpy; the set on real GO annotations places genes of
the same biological process closer than random pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from pertstore.producers.knowledge._go import gene_term_matrix, read_annotations, read_parents
from pertstore.producers.knowledge.go_vae import GenotypeVAE, GOVAEParams, train_vae, training_rows

from pertstore.errors import InvalidInputError


def _ontology(tmp_path):
    terms = pd.DataFrame(
        {
            "go_id": ["A", "B", "C", "D"],
            "name": ["a", "b", "c", "d"],
            "ontology": ["BP"] * 4,
            "is_a": [None, "A", "B", "A"],
            "part_of": [None, None, "D", None],
        }
    )
    terms.to_csv(tmp_path / "terms.tsv", sep="\t", index=False)
    ann = pd.DataFrame(
        {
            "entrez_id": ["1", "2", "3", "3", "4"],
            "symbol": ["g1", "g2", "g3", "g3", "g4"],
            "go_id": ["C", "B", "D", "A", "E"],
            "evidence": ["IDA", "IMP", "IEA", "ND", "IDA"],
            "ontology": ["BP", "BP", "BP", "BP", "MF"],
        }
    )
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
    params = GOVAEParams(latent=4, hidden=[16, 8], epochs=3, batch_size=32)
    a = train_vae(x, params)
    np.testing.assert_array_equal(a, train_vae(x, params))
    assert a.shape == (200, 4) and not np.array_equal(a, train_vae(x, params.model_copy(update={"seed": 1})))


def test_go_vae_set_groups_genes_of_a_biological_process(store, data_dir, tmp_path):
    full = pd.read_csv(data_dir / "genes" / "go_annotations_human.tsv.gz", sep="\t", dtype=str)
    genes = pd.Series(full.entrez_id.unique()).sample(1500, random_state=0)
    subset = full[full.entrez_id.isin(set(genes))]
    subset.to_csv(tmp_path / "ann.tsv", sep="\t", index=False)
    params = {"latent": 16, "hidden": [128, 64], "epochs": 30, "min_genes": 10, "gene_types": [], "lr": 3e-3}
    card = store.produce(
        "go-vae",
        source="go-vae",
        params=params,
        max_failed_fraction=1.0,
        inputs={"annotations": str(tmp_path / "ann.tsv"), "terms": str(data_dir / "genes" / "go_terms.tsv.gz")},
    )
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
    same = [float(unit[pos[a]] @ unit[pos[b]]) for m in members for i, a in enumerate(m) for b in m[i + 1 :]]
    rng = np.random.default_rng(0)
    idx = np.flatnonzero(ok.to_numpy())
    ra, rb = rng.choice(idx, len(same)), rng.choice(idx, len(same))
    random = (unit[ra] * unit[rb]).sum(1)
    assert len(members) > 20
    assert np.mean(same) > np.mean(random) + 0.2, (np.mean(same), np.mean(random))


def test_defaults_are_perturbnets_genotype_vae():
    p = GOVAEParams()
    assert (p.hidden, p.latent, p.negative_slope, p.dropout, p.batch_norm, p.noise_scale, p.beta) == (
        [512, 256],
        256,
        0.2,
        0.2,
        True,
        1e-2,
        1.0,
    )
    assert (p.lr, p.batch_size, p.epochs, p.or_probability, p.holdout, p.split_seed) == (1e-4, 128, 300, 0.5, 0.2, 123)


def _reference_loss(model: GenotypeVAE, x: np.ndarray, eps: np.ndarray, train: bool) -> tuple[float, np.ndarray]:
    """PerturbNet's GenotypeVAE forward pass and ``vae_loss``, written out in numpy from the module's weights."""
    w = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}

    def block(h, lin, bn):
        h = h @ w[f"{lin}.weight"].T + w[f"{lin}.bias"]
        if train:
            mean, var = h.mean(0), h.var(0)  # batch statistics, biased variance
        else:
            mean, var = w[f"{bn}.running_mean"], w[f"{bn}.running_var"]
        h = (h - mean) / np.sqrt(var + 1e-5) * w[f"{bn}.weight"] + w[f"{bn}.bias"]
        return np.where(h > 0, h, 0.2 * h)  # LeakyReLU(0.2); dropout p = 0 in this test

    h = block(block(x, "encoder.0", "encoder.1"), "encoder.4", "encoder.5")
    mu = h @ w["mu.weight"].T + w["mu.bias"]
    logvar = h @ w["logvar.weight"].T + w["logvar.bias"]
    z = np.exp(0.5 * logvar) * (1e-2 * eps) + mu
    d = block(block(z, "decoder.0", "decoder.1"), "decoder.4", "decoder.5")
    probs = 1 / (1 + np.exp(-(d @ w["decoder.8.weight"].T + w["decoder.8.bias"])))
    xent = -np.sum(x * np.maximum(np.log(probs), -100) + (1 - x) * np.maximum(np.log(1 - probs), -100))
    kl = -0.5 * np.sum(1 + logvar - mu**2 - np.exp(logvar))
    return xent + kl, mu


@pytest.mark.parametrize("train", [True, False])
def test_forward_and_loss_equal_perturbnets_formula(train):
    rng = np.random.default_rng(3)
    x = (rng.random((12, 30)) < 0.3).astype(np.float32)
    eps = rng.standard_normal((12, 5)).astype(np.float32)
    torch.manual_seed(0)
    model = GenotypeVAE(30, GOVAEParams(hidden=[16, 8], latent=5, dropout=0.0)).double()
    with torch.no_grad():  # non-trivial running statistics for evaluation mode
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    model.train(train)
    xt, et = torch.from_numpy(x).double(), torch.from_numpy(eps).double()
    loss = float(model.loss(xt, et).detach())
    ref, ref_mu = _reference_loss(model, x.astype(np.float64), eps.astype(np.float64), train)
    np.testing.assert_allclose(loss, ref, rtol=1e-10)
    np.testing.assert_allclose(model.encode(xt)[0].detach().numpy(), ref_mu, rtol=1e-10, atol=1e-12)
    assert [type(m).__name__ for m in model.encoder] == ["Linear", "BatchNorm1d", "LeakyReLU", "Dropout"] * 2
    assert isinstance(model.decoder[-1], torch.nn.Sigmoid)


def test_training_steps_or_two_batches_half_of_the_time():
    rng = np.random.default_rng(0)
    steps = [training_rows(rng, 1000, 128, 0.5) for _ in range(2000)]
    paired = [s for s in steps if s[1] is not None]
    assert 0.45 < len(paired) / len(steps) < 0.55
    first, second = paired[0]
    assert len(first) == len(second) == 128 and not set(first) & set(second)  # drawn without replacement
    assert all(len(set(s[0])) == 128 for s in steps if s[1] is None)
    assert training_rows(rng, 1000, 128, 0.0)[1] is None
