"""recipes/molecules.yaml plans: every producer is registered, every parameter validates, the paper's settings."""

from __future__ import annotations

from pathlib import Path

from pertstore.producers._spec import load_recipes

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "molecules.yaml"


def test_molecules_recipes_plan_at_the_papers_settings(store, data_dir):
    specs = load_recipes(RECIPES, data_dir=str(data_dir))
    fm = [s for s in specs if s.producer == "fm-targets"]  # reads a stored gene set: planned once it exists
    assert [s.inputs["genes"] for s in fm] == ["set:string-spectral"]
    planned = store.jobs.plan([s for s in specs if s.producer != "fm-targets"])
    by_source = {p.spec.source: p for p in planned}
    fingerprints = {"maccs", "ecfp2", "ecfp4", "fcfp", "topological", "secfp", "avalon", "erg", "rdkit"}
    targets = {"drug-targets", "drug-targets-weighted", "drug-targets-ranked"}
    assert set(by_source) == fingerprints | targets | {"drug-text"}
    assert by_source["topological"].recipe.params["variant"] == "topological"
    assert by_source["drug-targets-ranked"].recipe.params["ranked"] is True  # the paper's 1 / 0.5 / 0.25
    assert len({p.recipe.version for p in planned}) == len(planned)
