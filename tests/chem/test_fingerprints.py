"""RDKit fingerprint producer: identical bits to direct RDKit calls, standardisation, failures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem
from rdkit.Chem import MACCSkeys, rdFingerprintGenerator

from pertstore.producers.chem.fingerprints import VARIANTS, FingerprintParams, fingerprint, standardise

DRUGS = pd.DataFrame({
    "name": ["aspirin", "caffeine", "imatinib mesylate", "dexamethasone"],
    "smiles": ["CC(=O)Oc1ccccc1C(=O)O", "Cn1cnc2c1c(=O)n(C)c(=O)n2C",
               "Cc1ccc(NC(=O)c2ccc(CN3CCN(C)CC3)cc2)cc1Nc1nccc(-c2cccnc2)n1.CS(=O)(=O)O",
               "C[C@@H]1C[C@H]2[C@@H]3CCC4=CC(=O)C=C[C@]4(C)[C@@]3(F)[C@@H](O)C[C@]2(C)[C@@]1(O)C(=O)CO"],
})


@pytest.fixture
def mol_store(store):
    store.register_molecules(DRUGS)
    return store


def test_ecfp4_and_maccs_equal_direct_rdkit(mol_store):
    mol_store.produce("fingerprint", source="ecfp4", params={"variant": "ecfp4"})
    mol_store.produce("fingerprint", source="maccs", params={"variant": "maccs"})
    got = mol_store.get("ecfp4", ["aspirin", "caffeine"]).values
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    for row, smi in zip(got, DRUGS.smiles[:2]):
        np.testing.assert_array_equal(row, gen.GetFingerprintAsNumPy(Chem.MolFromSmiles(smi)).astype(np.float32))
    maccs = mol_store.get("maccs", ["caffeine"]).values[0]
    np.testing.assert_array_equal(maccs, np.array(list(MACCSkeys.GenMACCSKeys(Chem.MolFromSmiles(DRUGS.smiles[1])))))


def test_salts_are_stripped_before_fingerprinting():
    salt = standardise(DRUGS.smiles[2])
    base = Chem.MolFromSmiles(DRUGS.smiles[2].split(".")[0])
    assert Chem.MolToSmiles(salt) == Chem.MolToSmiles(base)
    assert standardise("not a smiles") is None


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_has_its_size(variant):
    p = FingerprintParams(variant=variant, n_bits=1024)
    fp = fingerprint(standardise(DRUGS.smiles[3]), p)
    assert fp.shape == ({"maccs": (167,), "erg": (315,)}.get(variant, (1024,))) and fp.any()


def test_unparsable_smiles_are_failures(mol_store, monkeypatch):
    from pertstore.producers.chem import fingerprints as fp_mod

    real = fp_mod.standardised
    monkeypatch.setattr(fp_mod, "standardised", lambda s, e=True: None if s.startswith("Cn1") else real(s, e))
    card = mol_store.produce("fingerprint", source="ecfp2", params={"variant": "ecfp2"}, max_failed_fraction=0.5)
    assert len(card.failed) == 1 and "does not parse" in next(iter(card.failed.values()))
    assert card.n_rows == 3


def test_chemaxon_extended_smiles_are_read_like_the_registry():
    plain = "CN1[C@H]2CC[C@@H]1C[C@@H](C2)OC(=O)c1cc(Cl)cc(Cl)c1"
    extended = plain + " |r,THB:0:1:3.4:6.7.8|"
    params = FingerprintParams(variant="ecfp4")
    np.testing.assert_array_equal(fingerprint(standardise(extended), params), fingerprint(standardise(plain), params))
