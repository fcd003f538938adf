"""``drug-text``: sentence embeddings of a text describing each drug.

The text: ``"Drug: <name>. SMILES: <smiles>. Targets: <t1, t2, ...>. Mechanism of action: <moa>.
Clinical phase: <phase>."``, each part present only when known. Names, targets, mechanisms and
phases come from an annotation table in the Drug Repurposing Hub layout (``pert_iname, smiles,
target`` with ``|``-separated genes, ``moa``, ``clinical_phase``), matched to registered molecules
by name (through the registry's aliases); a registered molecule without annotation is described by
its name and SMILES. Embedded by the text model of the parameters (:mod:`._backend`): the packaged
all-MiniLM-L6-v2 by default, a local ``model_path``, or an OpenAI-compatible endpoint.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
from pertstore.producers._base import Batch, Producer
from pertstore.producers.text._backend import TextModelParams, check_backend, embed
from pertstore.producers.text._sentence import text_libraries

from pertstore.errors import InvalidInputError


class DrugTextParams(TextModelParams):
    annotated_only: bool = False
    """Embed only molecules the annotation table describes."""


@lru_cache(maxsize=4)
def _annotations(path: str) -> pd.DataFrame:
    table = pd.read_csv(path, sep="\t", dtype=str).fillna("")
    if "pert_iname" not in table.columns:
        raise InvalidInputError(f"{path}: expected the Drug Repurposing Hub layout (a pert_iname column)")
    return table


def describe(name: str, smiles: str, row: pd.Series | None) -> str:
    """The prompt of one drug."""
    parts = [f"Drug: {name}."] if name else []
    if smiles:
        parts.append(f"SMILES: {smiles}.")
    if row is not None:
        if row.get("target"):
            parts.append("Targets: " + ", ".join(row["target"].split("|")) + ".")
        if row.get("moa"):
            parts.append(f"Mechanism of action: {row['moa']}.")
        if row.get("clinical_phase"):
            parts.append(f"Clinical phase: {row['clinical_phase']}.")
    return " ".join(parts)


_TEXTS: dict[tuple[str, str], dict[str, str]] = {}


class DrugTextProducer(Producer):
    """Text embeddings of drug descriptions."""

    name = "drug-text"
    kind = "molecule"
    Params = DrugTextParams
    inputs = {"annotations": "file"}
    description = "sentence embedding of name, SMILES, targets, MoA and clinical phase"
    chunk_size = 1024

    @classmethod
    def libraries(cls) -> dict[str, str]:
        return text_libraries()

    def _texts(self) -> dict[str, str]:
        key = (str(self.ctx.path("annotations")), self.params.annotated_only, self.ctx.storage.uri)
        if key not in _TEXTS:
            table = _annotations(key[0])
            res = self.ctx.resolve(table.pert_iname.tolist(), "molecule")
            by_entity = {e: row for e, (_, row) in zip(res.ids, table.iterrows()) if e is not None}
            reg = self.ctx.registry("molecule")
            texts = {}
            for entity, name, smiles in zip(reg.entity_id, reg.name.fillna(""), reg.smiles.fillna("")):
                row = by_entity.get(entity)
                if row is None and self.params.annotated_only:
                    continue
                texts[entity] = describe(str(name), str(smiles), row)
            _TEXTS[key] = texts
        return _TEXTS[key]

    def entities(self) -> list[str]:
        check_backend(self.params)
        return list(self._texts())

    def compute_chunk(self, ids: list[str]) -> Batch:
        texts = self._texts()
        values = embed([texts[e] for e in ids], self.params, self.ctx.device)
        return Batch(ids, values.astype(np.float32))
