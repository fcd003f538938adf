"""``fingerprint``: RDKit molecular fingerprints of the registered molecules.

Variants (the paper's names): ``maccs`` (167 keys), ``rdkit`` (topological paths), ``ecfp2``
(Morgan radius 1), ``ecfp4`` (Morgan radius 2), ``secfp`` (RDKit's MHFP encoder, SMILES-extended
connectivity), ``avalon``, ``erg`` (extended reduced graph, 315 floats).

Standardisation: the SMILES is parsed, the largest organic fragment kept (salts and mixtures lose
their counter-ions and solvents) and charges neutralised where possible (RDKit's
``rdMolStandardize``). A molecule whose SMILES does not parse is a failure with the reason.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pertstore.producers._base import Batch, Producer

VARIANTS = ("maccs", "rdkit", "ecfp2", "ecfp4", "secfp", "avalon", "erg")
FIXED_SIZE = {"maccs": 167, "erg": 315}


class FingerprintParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variant: str = Field("ecfp4", pattern="^(" + "|".join(VARIANTS) + ")$")
    n_bits: int = Field(2048, ge=64, le=16384)
    """Length of hashed fingerprints (ignored by maccs and erg)."""
    radius: int | None = Field(None, ge=1, le=6)
    """Morgan/SECFP radius; default: 1 for ecfp2, 2 for ecfp4, 3 for secfp."""
    counts: bool = False
    """Count fingerprints instead of bits (rdkit, ecfp*, avalon)."""
    chirality: bool = False
    """Include chirality (ecfp*, secfp)."""
    standardise: bool = True


def standardise(smiles: str, enabled: bool = True):
    """The RDKit molecule of ``smiles``: largest fragment, neutralised; None if it does not parse."""
    from rdkit import Chem
    from rdkit.Chem.MolStandardize import rdMolStandardize

    mol = Chem.MolFromSmiles(smiles) if smiles else None
    if mol is None or not enabled:
        return mol
    mol = rdMolStandardize.LargestFragmentChooser(preferOrganic=True).choose(mol)
    return rdMolStandardize.Uncharger().uncharge(mol)


def fingerprint(mol, params: FingerprintParams) -> np.ndarray:
    """One molecule's fingerprint as float32."""
    from rdkit.Chem import MACCSkeys, rdFingerprintGenerator, rdReducedGraphs

    v = params.variant
    if v == "maccs":
        return np.array(list(MACCSkeys.GenMACCSKeys(mol)), dtype=np.float32)
    if v == "erg":
        return np.asarray(rdReducedGraphs.GetErGFingerprint(mol), dtype=np.float32)
    if v == "avalon":
        from rdkit.Avalon import pyAvalonTools

        fp = (pyAvalonTools.GetAvalonCountFP(mol, nBits=params.n_bits) if params.counts
              else pyAvalonTools.GetAvalonFP(mol, nBits=params.n_bits))
        return _dense(fp, params.n_bits)
    if v == "secfp":
        from rdkit.Chem import rdMHFPFingerprint

        encoder = rdMHFPFingerprint.MHFPEncoder(2048, 42)
        bits = encoder.EncodeSECFPMol(mol, radius=params.radius or 3, rings=True, isomeric=params.chirality,
                                      kekulize=False, min_radius=1, length=params.n_bits)
        return np.array(list(bits), dtype=np.float32)
    if v == "rdkit":
        gen = rdFingerprintGenerator.GetRDKitFPGenerator(fpSize=params.n_bits)
    else:
        radius = params.radius or (1 if v == "ecfp2" else 2)
        gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=params.n_bits,
                                                        includeChirality=params.chirality)
    fp = gen.GetCountFingerprintAsNumPy(mol) if params.counts else gen.GetFingerprintAsNumPy(mol)
    return fp.astype(np.float32)


def _dense(fp, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.float32)
    if hasattr(fp, "GetNonzeroElements"):
        for i, c in fp.GetNonzeroElements().items():
            out[i] = c
    else:
        out[list(fp.GetOnBits())] = 1
    return out


class FingerprintProducer(Producer):
    """RDKit fingerprints of every registered molecule (chunked over molecules)."""

    name = "fingerprint"
    kind = "molecule"
    Params = FingerprintParams
    description = "RDKit fingerprints: maccs, rdkit, ecfp2, ecfp4, secfp, avalon, erg"
    chunk_size = 512

    @classmethod
    def libraries(cls) -> dict[str, str]:
        import rdkit

        return {"rdkit": rdkit.__version__}

    def entities(self) -> list[str]:
        return self.ctx.registry("molecule")["entity_id"].astype(str).tolist()

    def compute_chunk(self, ids: list[str]) -> Batch:
        reg = self.ctx.registry("molecule").set_index("entity_id")
        ok, rows, failed = [], [], {}
        for entity in ids:
            smiles = str(reg.at[entity, "smiles"] or "")
            mol = standardise(smiles, self.params.standardise)
            if mol is None or mol.GetNumAtoms() == 0:
                failed[entity] = f"SMILES does not parse: {smiles[:80]!r}" if smiles else "no SMILES"
                continue
            ok.append(entity)
            rows.append(fingerprint(mol, self.params))
        dim = FIXED_SIZE.get(self.params.variant, self.params.n_bits)
        return Batch(ok, np.array(rows, dtype=np.float32).reshape(len(ok), dim), failed)
