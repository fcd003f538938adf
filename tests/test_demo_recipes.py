"""recipes/demo.yaml plans: the sets issue 11 names, every producer registered, every parameter valid."""

from __future__ import annotations

from pertstore.producers._spec import load_recipes

from pertstore._demo import RECIPES


def test_demo_recipes_plan_every_set_the_demo_promises(store, data_dir):
    planned = store.jobs.plan(load_recipes(RECIPES, data_dir=str(data_dir)))
    sources = {p.spec.source for p in planned}
    assert {
        "string-spectral",
        "string-node2vec",
        "string-gin",
        "go-vae",
        "control-pca",
        "random-gene-128",
        "ecfp4",
        "maccs",
        "rdkit",
        "drug-text",
        "drug-targets",
        "random-molecule-128",
    } <= sources
    contexts = {p.recipe.context for p in planned if p.spec.source == "control-pca"}
    assert contexts == {"THP-1", "A172", "T98G", "U87MG", "k562"}
    assert len({(p.spec.source, p.recipe.version) for p in planned}) == len(planned)
