"""recipes/genes.yaml plans: every producer is registered and every parameter validates."""

from __future__ import annotations

from pathlib import Path

from pertstore.producers._spec import load_recipes

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "genes.yaml"


def test_genes_recipes_plan_at_the_papers_settings(store, data_dir):
    planned = store.jobs.plan(load_recipes(RECIPES, data_dir=str(data_dir)))
    by_source = {p.spec.source: p for p in planned}
    assert set(by_source) == {
        "string-spectral",
        "string-node2vec",
        "string-gcn",
        "string-gin",
        "string-wavegc",
        "genept",
        "genept-go-bp",
        "genept-go-cc",
        "genept-go-mf",
        "genept-go-all",
        "go-vae",
    }
    wave = by_source["string-wavegc"].recipe.params
    assert (wave["depth"], wave["scales"], wave["terms"], wave["lr"], wave["epochs"], wave["patience"]) == (
        2,
        3,
        7,
        0.001,
        200,
        30,
    )
    assert by_source["string-gcn"].recipe.params["val_fraction"] == 0.1
    gnn = by_source["string-gcn"].recipe.params  # train_gnn: combined >= 900, rescued; 256 dims, 3 layers
    assert (gnn["score"], gnn["threshold"], gnn["keep_at_least"], gnn["dims"], gnn["depth"], gnn["clip"]) == (
        "combined",
        900,
        10,
        256,
        3,
        1.0,
    )
    n2v = by_source["string-node2vec"].recipe.params  # SPACE: the full network, the producer's defaults
    assert (n2v["score"], n2v["threshold"], n2v["p"], n2v["q"], n2v["walk_length"], n2v["num_negative_samples"]) == (
        "combined",
        0,
        0.3,
        0.7,
        50,
        5,
    )
    assert by_source["string-spectral"].recipe.params["threshold"] == 400
    vae = by_source["go-vae"].recipe.params  # PerturbNet's GenotypeVAE; the paper's set is 256-dimensional
    assert (vae["latent"], vae["hidden"], vae["lr"], vae["batch_size"], vae["epochs"]) == (
        256,
        [512, 256],
        1e-4,
        128,
        300,
    )
    go_text = by_source["genept-go-all"].recipe.params
    assert (go_text["aspect"], go_text["backend"], go_text["model"]) == (
        "all",
        "sentence-transformers",
        "all-MiniLM-L6-v2",
    )
    assert len({p.recipe.version for p in planned}) == len(planned)
