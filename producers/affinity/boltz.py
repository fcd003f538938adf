"""``boltz-affinity``: a molecule's predicted affinities to a panel of proteins, by Boltz-2.

For each molecule and each panel protein (or fragment) one Boltz input file is written in Boltz's
YAML schema (``version: 1``; a ``protein`` chain ``A`` with the sequence, a ``ligand`` chain ``B``
with the SMILES, ``properties: [affinity: {binder: B}]``), ``boltz predict`` runs on the chunk's
folder, and ``predictions/<name>/affinity_<name>.json`` is read back. The embedding has one entry
per panel member: ``affinity_pred_value`` (Boltz's log10 IC50 in uM, lower binds tighter; the
default) or ``affinity_probability_binary`` (``value`` parameter).

MSAs: ``msa: empty`` runs single-sequence mode (no network needed; Boltz's documented
``msa: empty``), ``msa: server`` passes ``--use_msa_server`` (needs network). Boltz needs its own
weights (downloaded by ``boltz`` into its cache, or ``--cache``) and, in practice, a GPU: without
the ``boltz`` command or a GPU the producer stops before any work with a message saying so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import yaml
from pertstore.producers._base import Batch, Producer
from pydantic import BaseModel, ConfigDict, Field

from pertstore.errors import InvalidInputError

VALUES = ("affinity_pred_value", "affinity_probability_binary")
_VALID_RESIDUES = re.compile(r"^[ACDEFGHIKLMNPQRSTVWYXBZUO]+$")


class PanelProtein(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    sequence: str


class BoltzParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    panel: list[PanelProtein] = Field(min_length=1)
    """The proteins (or fragments) every molecule is scored against, in embedding order."""
    value: str = Field("affinity_pred_value", pattern="^(" + "|".join(VALUES) + ")$")
    msa: str = Field("empty", pattern="^(empty|server)$")
    command: str = "boltz"
    extra_args: list[str] = Field(default_factory=list)
    """More ``boltz predict`` options, e.g. ``["--diffusion_samples_affinity", "5"]``."""
    allow_cpu: bool = False
    """Run without a GPU (Boltz supports ``--accelerator cpu``; very slow)."""


def input_document(sequence: str, smiles: str, msa: str) -> dict:
    """One Boltz input: protein chain A, ligand chain B, affinity of B."""
    protein: dict = {"id": "A", "sequence": sequence}
    if msa == "empty":
        protein["msa"] = "empty"
    return {
        "version": 1,
        "sequences": [{"protein": protein}, {"ligand": {"id": "B", "smiles": smiles}}],
        "properties": [{"affinity": {"binder": "B"}}],
    }


def write_inputs(
    folder: Path, molecules: list[tuple[str, str]], panel: list[PanelProtein], msa: str
) -> dict[str, tuple[int, int]]:
    """Write one YAML per (molecule, panel member); returns ``{input name: (molecule row, panel column)}``."""
    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for i, (_, smiles) in enumerate(molecules):
        for j, protein in enumerate(panel):
            name = f"m{i:05d}_p{j:03d}"
            (folder / f"{name}.yaml").write_text(
                yaml.safe_dump(input_document(protein.sequence, smiles, msa), sort_keys=False)
            )
            names[name] = (i, j)
    return names


def read_affinity(results: Path, name: str) -> dict | None:
    """Boltz's affinity JSON of input ``name`` under a results folder, or None when it is absent."""
    path = results / "predictions" / name / f"affinity_{name}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def affinity_matrix(
    results: Path, names: dict[str, tuple[int, int]], n_molecules: int, n_panel: int, value: str
) -> np.ndarray:
    """``[molecules, panel]`` of ``value`` (NaN where Boltz wrote no affinity)."""
    out = np.full((n_molecules, n_panel), np.nan, dtype=np.float32)
    for name, (i, j) in names.items():
        doc = read_affinity(results, name)
        if doc is not None and doc.get(value) is not None:
            out[i, j] = float(doc[value])
    return out


def check_boltz(params: BoltzParams) -> None:
    """Fail before any work when Boltz cannot run here."""
    if shutil.which(params.command) is None:
        raise InvalidInputError(
            f"boltz-affinity needs the Boltz-2 command {params.command!r} (pip install boltz; "
            "its weights download to ~/.boltz on first use, or pass --cache) and a GPU"
        )
    if not params.allow_cpu:
        import torch

        if not torch.cuda.is_available():
            raise InvalidInputError(
                "boltz-affinity needs a GPU (none is visible); set allow_cpu: true to run "
                "Boltz on the CPU anyway (hours per molecule)"
            )


class BoltzAffinityProducer(Producer):
    """Boltz-2 affinities of each molecule to a protein panel."""

    name = "boltz-affinity"
    kind = "molecule"
    Params = BoltzParams
    description = "Boltz-2 predicted affinities to a panel of proteins (needs boltz and a GPU)"
    chunk_size = 16

    def entities(self) -> list[str]:
        for protein in self.params.panel:
            if not _VALID_RESIDUES.match(protein.sequence.upper()):
                raise InvalidInputError(
                    f"boltz-affinity: panel protein {protein.name!r} has letters outside the amino-acid alphabet"
                )
        check_boltz(self.params)
        return self.ctx.registry("molecule")["entity_id"].astype(str).tolist()

    def compute_chunk(self, ids: list[str]) -> Batch:
        p = self.params
        smiles_of = self.ctx.registry("molecule").set_index("entity_id")["smiles"]
        molecules = [(e, str(smiles_of.get(e) or "")) for e in ids]
        failed = {e: "no SMILES" for e, s in molecules if not s}
        molecules = [(e, s) for e, s in molecules if s]
        with tempfile.TemporaryDirectory(prefix="pertstore-boltz-") as tmp:
            inputs = Path(tmp) / "inputs"
            names = write_inputs(inputs, molecules, p.panel, p.msa)
            cmd = [
                p.command,
                "predict",
                str(inputs),
                "--out_dir",
                tmp,
                *(["--use_msa_server"] if p.msa == "server" else []),
                *(["--accelerator", "cpu"] if self.ctx.device == "cpu" else []),
                *p.extra_args,
            ]
            run = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            values = affinity_matrix(
                Path(tmp) / f"boltz_results_{inputs.name}", names, len(molecules), len(p.panel), p.value
            )
        ok = ~np.isnan(values).any(axis=1)
        for (entity, _), good in zip(molecules, ok):
            if not good:
                failed[entity] = (
                    f"boltz wrote no affinity for every panel member (exit {run.returncode}): "
                    f"{run.stderr.strip()[-300:]}"
                )
        return Batch([e for (e, _), good in zip(molecules, ok) if good], values[ok], failed)
