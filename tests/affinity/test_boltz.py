"""Boltz-2 affinity producer: input YAML in Boltz's schema, output parsing, and a clear stop without Boltz."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from pertstore.producers.affinity.boltz import PanelProtein, affinity_matrix, write_inputs

from pertstore.errors import InvalidInputError

PANEL = [
    PanelProtein(name="ABL1-kinase", sequence="GAMDPSSPNYDKWEMERTDITMKHKLGGGQYGEVYEGVWKKYSLTVAVKTLKE"),
    PanelProtein(name="EGFR-fragment", sequence="FKKIKVLGSGAFGTVYKGLWIPEGEKVKIPVAIKELREATSPK"),
]
MOLECULES = [("AAA", "Cc1ccc(NC(=O)c2ccccc2)cc1"), ("BBB", "CC(=O)Oc1ccccc1C(=O)O")]


def test_inputs_follow_boltz_schema(tmp_path):
    names = write_inputs(tmp_path / "in", MOLECULES, PANEL, msa="empty")
    assert len(names) == 4 and sorted(p.name for p in (tmp_path / "in").iterdir()) == [
        f"{n}.yaml" for n in sorted(names)
    ]
    doc = yaml.safe_load((tmp_path / "in" / "m00001_p000.yaml").read_text())
    assert doc["version"] == 1
    protein, ligand = doc["sequences"][0]["protein"], doc["sequences"][1]["ligand"]
    assert protein == {"id": "A", "sequence": PANEL[0].sequence, "msa": "empty"}
    assert ligand == {"id": "B", "smiles": MOLECULES[1][1]}
    assert doc["properties"] == [{"affinity": {"binder": "B"}}]
    server = write_inputs(tmp_path / "srv", MOLECULES[:1], PANEL[:1], msa="server")
    assert (
        "msa"
        not in yaml.safe_load((tmp_path / "srv" / f"{next(iter(server))}.yaml").read_text())["sequences"][0]["protein"]
    )


def test_outputs_parse_into_one_entry_per_panel_member(tmp_path):
    names = write_inputs(tmp_path / "inputs", MOLECULES, PANEL, msa="empty")
    results = tmp_path / "boltz_results_inputs"
    rng = np.random.default_rng(0)
    expected = rng.normal(size=(2, 2)).astype(np.float32)
    for name, (i, j) in names.items():
        if (i, j) == (1, 1):
            continue  # Boltz failed on this pair: no file
        folder = results / "predictions" / name
        folder.mkdir(parents=True)
        (folder / f"affinity_{name}.json").write_text(
            json.dumps(
                {
                    "affinity_pred_value": float(expected[i, j]),
                    "affinity_probability_binary": 0.25 * (i + j),
                    "affinity_pred_value1": 0.0,
                    "affinity_probability_binary1": 0.0,
                    "affinity_pred_value2": 0.0,
                    "affinity_probability_binary2": 0.0,
                }
            )
        )
    values = affinity_matrix(results, names, 2, 2, "affinity_pred_value")
    np.testing.assert_array_equal(values[0], expected[0])
    assert values[1, 0] == expected[1, 0] and np.isnan(values[1, 1])
    probs = affinity_matrix(results, names, 2, 2, "affinity_probability_binary")
    np.testing.assert_array_equal(probs[0], [0.0, 0.25])


def test_without_boltz_the_producer_stops_before_any_work(store, monkeypatch):
    store.register_molecules(pd.DataFrame({"name": ["aspirin"], "smiles": [MOLECULES[1][1]]}))
    monkeypatch.setenv("PATH", "/nonexistent")
    params = {"panel": [p.model_dump() for p in PANEL]}
    with pytest.raises(InvalidInputError, match="needs the Boltz-2 command 'boltz'"):
        store.produce("boltz-affinity", source="boltz", params=params)
    bad = {"panel": [{"name": "x", "sequence": "MKT1"}]}
    with pytest.raises(InvalidInputError, match="outside the amino-acid alphabet"):
        store.produce("boltz-affinity", source="boltz", params=bad)
    assert "boltz" not in set(store.ls().source)
