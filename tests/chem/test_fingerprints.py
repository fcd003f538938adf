"""RDKit fingerprint producer: identical bits to direct RDKit calls, standardisation, failures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pertstore.producers.chem.fingerprints import VARIANTS, FingerprintParams, fingerprint, standardise
from rdkit import Chem
from rdkit.Chem import MACCSkeys, rdFingerprintGenerator

DRUGS = pd.DataFrame(
    {
        "name": ["aspirin", "caffeine", "imatinib mesylate", "dexamethasone"],
        "smiles": [
            "CC(=O)Oc1ccccc1C(=O)O",
            "Cn1cnc2c1c(=O)n(C)c(=O)n2C",
            "Cc1ccc(NC(=O)c2ccc(CN3CCN(C)CC3)cc2)cc1Nc1nccc(-c2cccnc2)n1.CS(=O)(=O)O",
            "C[C@@H]1C[C@H]2[C@@H]3CCC4=CC(=O)C=C[C@]4(C)[C@@]3(F)[C@@H](O)C[C@]2(C)[C@@]1(O)C(=O)CO",
        ],
    }
)


@pytest.fixture
def mol_store(store):
    store.register_molecules(DRUGS)
    return store


def test_ecfp4_and_maccs_equal_direct_rdkit(mol_store):
    mol_store.produce("fingerprint", source="ecfp4", params={"variant": "ecfp4"})
    mol_store.produce("fingerprint", source="maccs", params={"variant": "maccs"})
    got = mol_store.get("ecfp4", ["aspirin", "caffeine"]).values
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2000)  # molfeat FPVecTransformer length
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


# molfeat (not installed here) as FPVecTransformer(kind, length=2000) calls RDKit: FP_DEF_PARAMS of
# molfeat/calc/fingerprints.py, the length put in the method's size key, FPCalculator.__call__'s calls.
_MOLFEAT = {
    "ecfp2": (
        rdFingerprintGenerator.GetMorganGenerator,
        {"radius": 1, "fpSize": 2000, "includeChirality": False, "useBondTypes": True, "countSimulation": False},
    ),
    "ecfp4": (
        rdFingerprintGenerator.GetMorganGenerator,
        {"radius": 2, "fpSize": 2000, "includeChirality": False, "useBondTypes": True, "countSimulation": False},
    ),
    "fcfp": (
        rdFingerprintGenerator.GetMorganGenerator,
        {
            "radius": 2,
            "fpSize": 2000,
            "includeChirality": False,
            "useBondTypes": True,
            "countSimulation": False,
            "atomInvariantsGenerator": rdFingerprintGenerator.GetMorganFeatureAtomInvGen(),
        },
    ),
    "topological": (
        rdFingerprintGenerator.GetTopologicalTorsionGenerator,
        {"includeChirality": False, "torsionAtomCount": 4, "countSimulation": True, "fpSize": 2000},
    ),
    "rdkit": (
        rdFingerprintGenerator.GetRDKitFPGenerator,
        {
            "minPath": 1,
            "maxPath": 7,
            "useHs": True,
            "branchedPaths": True,
            "useBondOrder": True,
            "countSimulation": False,
            "fpSize": 2000,
            "numBitsPerFeature": 2,
        },
    ),
}


def _molfeat(variant: str, mol) -> np.ndarray:
    from rdkit.Avalon import pyAvalonTools
    from rdkit.Chem import rdMHFPFingerprint, rdMolDescriptors, rdReducedGraphs

    def bits(fp):
        out = np.zeros(fp.GetNumBits())
        out[list(fp.GetOnBits())] = 1
        return out

    if variant in _MOLFEAT:
        make, params = _MOLFEAT[variant]
        return bits(make(**params).GetFingerprint(mol))
    if variant == "maccs":
        return bits(rdMolDescriptors.GetMACCSKeysFingerprint(mol))
    if variant == "avalon":
        return bits(
            pyAvalonTools.GetAvalonFP(
                mol, nBits=2000, isQuery=False, resetVect=False, bitFlags=pyAvalonTools.avalonSimilarityBits
            )
        )
    if variant == "secfp":
        return bits(
            rdMHFPFingerprint.MHFPEncoder(128, 0).EncodeSECFPMol(
                mol, radius=3, rings=True, isomeric=False, kekulize=False, min_radius=1, length=2000
            )
        )
    return np.asarray(rdReducedGraphs.GetErGFingerprint(mol, atomTypes=0, fuzzIncrement=0.3, minPath=1, maxPath=15))


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_equals_molfeats_rdkit_call_on_the_sciplex_drugs(data_dir, variant):
    drugs = pd.read_csv(data_dir / "molecules" / "sciplex3_drugs.tsv", sep="\t")
    mols = [m for m in (Chem.MolFromSmiles(s) for s in drugs.smiles.dropna()) if m is not None]
    assert len(mols) > 150
    params = FingerprintParams(variant=variant)
    got = np.array([fingerprint(m, params) for m in mols])
    expected = np.array([_molfeat(variant, m) for m in mols])
    assert got.shape == expected.shape == (len(mols), {"maccs": 167, "erg": 315}.get(variant, 2000))
    np.testing.assert_array_equal(got, expected.astype(np.float32))
    assert (got != 0).any(axis=1).mean() > 0.9


def test_topological_is_the_torsion_fingerprint_not_rdkits_paths():
    mol = standardise(DRUGS.smiles[3])
    topological = fingerprint(mol, FingerprintParams(variant="topological"))
    torsions = rdFingerprintGenerator.GetTopologicalTorsionGenerator(fpSize=2000, countSimulation=True)
    np.testing.assert_array_equal(topological, torsions.GetFingerprintAsNumPy(mol).astype(np.float32))
    assert not np.array_equal(topological, fingerprint(mol, FingerprintParams(variant="rdkit")))
