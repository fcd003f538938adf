"""Drug-target encodings: ``drug-targets`` (binary or weighted target vectors) and ``fm-targets``
(the concatenated gene embeddings of a drug's targets, taken from any gene set of the store).

The targets table is either the Drug Repurposing Hub layout (``pert_iname`` and a ``|``-separated
``target`` column of gene symbols; every target has confidence 1.0) or a long table with columns
``drug``, ``target`` and optional ``confidence`` (1.0, 0.5, 0.25 or any value in (0, 1]). Drug
names resolve to registered molecules through the registry's aliases (a molecule listed under
several names gets the union of its targets, at the highest confidence); target symbols resolve to
genes through the gene registry.

``ranked: true`` is the paper's encoding: a molecule's targets ranked by confidence (highest first),
ties by canonical gene id, the first three weighted 1, 0.5 and 0.25 and the others left at 0.

What is recorded rather than guessed:
- a registered molecule the table does not describe has no row ("no targets in the table");
- a molecule none of whose targets resolves to a gene has no row, the reason lists the symbols;
  targets that do not resolve are dropped from molecules that keep others;
- ``fm-targets``: a molecule with fewer than ``min_targets`` targets in the gene set has no row,
  the reason names the missing targets. Slots beyond a molecule's available targets (fewer than
  ``n_targets``) hold the mean of its available target embeddings (``fill: mean``, the default) or
  zeros (``fill: zeros``); the policy is part of the recipe, so it is in the set's version.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
from pertstore.producers._base import Batch, Producer, ProducerContext
from pydantic import BaseModel, ConfigDict, Field

from pertstore.errors import InvalidInputError


@lru_cache(maxsize=4)
def read_targets(path: str) -> pd.DataFrame:
    """``drug, target, confidence`` rows from a targets table in either supported layout."""
    sep = "," if path.endswith(".csv") else "\t"
    table = pd.read_csv(path, sep=sep, dtype=str).fillna("")
    if {"pert_iname", "target"} <= set(table.columns):
        long = table[["pert_iname", "target"]].rename(columns={"pert_iname": "drug"})
        long = long.assign(target=long.target.str.split("|")).explode("target")
        long["confidence"] = 1.0
    elif {"drug", "target"} <= set(table.columns):
        long = table[["drug", "target"]].copy()
        conf = table["confidence"] if "confidence" in table.columns else pd.Series("1", index=table.index)
        long["confidence"] = pd.to_numeric(conf.replace("", "1"), errors="coerce")
        bad = long.index[~long.confidence.between(0, 1, inclusive="right")]
        if len(bad):
            row = bad[0]
            raise InvalidInputError(
                f"{path}: row {row + 2}: confidence {table.loc[row, 'confidence']!r} of "
                f"{table.loc[row, 'drug']!r} -> {table.loc[row, 'target']!r} is not in (0, 1]"
            )
    else:
        raise InvalidInputError(
            f"{path}: a targets table needs columns pert_iname + target (Repurposing Hub) "
            f"or drug + target [+ confidence]; found {list(table.columns)}"
        )
    long["drug"], long["target"] = long.drug.str.strip(), long.target.str.strip()
    return long[(long.drug != "") & (long.target != "")].reset_index(drop=True)


def molecule_targets(ctx: ProducerContext, path: str) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """``{molecule: {gene: confidence}}`` and ``{molecule: reason}`` for molecules left without targets."""
    table = read_targets(path)
    drugs = ctx.resolve(table.drug.unique().tolist(), "molecule")
    drug_ids = dict(zip(drugs.query, drugs.ids))
    symbols = table.target.unique().tolist()
    genes = dict(zip(symbols, ctx.resolve(symbols, "gene").ids))
    targets: dict[str, dict[str, float]] = {}
    unresolved: dict[str, set[str]] = {}
    for drug, symbol, conf in zip(table.drug, table.target, table.confidence):
        molecule = drug_ids.get(drug)
        if molecule is None:
            continue  # a drug that is not registered has no row to give
        gene = genes.get(symbol)
        if gene is None:
            unresolved.setdefault(molecule, set()).add(symbol)
            continue
        genes_of = targets.setdefault(molecule, {})
        genes_of[gene] = max(genes_of.get(gene, 0.0), float(conf))
    failed = {
        m: "no target resolves to a gene: " + ", ".join(sorted(s)) for m, s in unresolved.items() if m not in targets
    }
    return targets, failed


def _missing(molecules: list[str], described: set[str]) -> dict[str, str]:
    return {m: "no targets in the table" for m in molecules if m not in described}


RANK_WEIGHTS = (1.0, 0.5, 0.25)
"""The paper's weights of a drug's first, second and third target."""


def ranked_targets(genes: dict[str, float]) -> list[str]:
    """A molecule's target genes ranked: highest confidence first, ties by canonical gene id (``fm-targets``' order)."""
    return [g for g, _ in sorted(genes.items(), key=lambda gc: (-gc[1], gc[0]))]


class DrugTargetParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weighted: bool = False
    """Confidence-weighted entries instead of 0/1."""
    ranked: bool = False
    """The paper's weighting: the first three targets of :func:`ranked_targets` get 1, 0.5, 0.25, the rest 0.
    On the Repurposing Hub every confidence is 1, so the rank there is the gene-id order."""
    min_drugs: int = Field(1, ge=1)
    """Keep only targets hit by at least this many molecules (dims); molecules left with none fail."""


class DrugTargetProducer(Producer):
    """Binary or confidence-weighted vectors over the union of the molecules' target genes.

    Dimension ``j`` is the ``j``-th target gene in the order of canonical gene ids.
    """

    name = "drug-targets"
    kind = "molecule"
    Params = DrugTargetParams
    inputs = {"targets": "file"}
    chunked = False
    description = "binary, confidence- or rank-weighted (1/0.5/0.25) drug-target vectors over the union of target genes"

    def compute(self) -> Batch:
        targets, failed = molecule_targets(self.ctx, str(self.ctx.path("targets")))
        counts = pd.Series([g for genes in targets.values() for g in genes]).value_counts()
        columns = sorted(counts.index[counts >= self.params.min_drugs])
        if not columns:
            raise InvalidInputError(f"no target gene is hit by {self.params.min_drugs} or more molecules")
        where = {g: j for j, g in enumerate(columns)}
        ids, rows = [], []
        if self.params.weighted and self.params.ranked:
            raise InvalidInputError("drug-targets: choose one of weighted (confidences) and ranked (1, 0.5, 0.25)")
        for molecule in sorted(targets):
            kept = {g: c for g, c in targets[molecule].items() if g in where}
            if not kept:
                failed[molecule] = f"no target hit by {self.params.min_drugs} or more molecules"
                continue
            row = np.zeros(len(columns), dtype=np.float32)
            if self.params.ranked:
                for gene, weight in zip(ranked_targets(kept), RANK_WEIGHTS):
                    row[where[gene]] = weight
            for gene, conf in ({} if self.params.ranked else kept).items():
                row[where[gene]] = conf if self.params.weighted else 1.0
            ids.append(molecule)
            rows.append(row)
        registered = self.ctx.registry("molecule").entity_id.astype(str).tolist()
        failed.update(_missing(registered, set(targets) | set(failed)))
        return Batch(ids, np.vstack(rows), failed)


class FMTargetParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_targets: int = Field(3, ge=1, le=10)
    """Target slots concatenated (the paper: 3)."""
    min_targets: int = Field(1, ge=1)
    """Molecules with fewer targets in the gene set have no row."""
    fill: str = Field("mean", pattern="^(mean|zeros)$")
    """What fills the slots of a molecule with fewer than ``n_targets`` available targets."""


class FMTargetProducer(Producer):
    """Concatenated gene embeddings of up to ``n_targets`` targets per molecule (the paper's "FM target").

    Targets are ordered by confidence (highest first), then canonical gene id; only targets present
    in the input gene set count.
    """

    name = "fm-targets"
    kind = "molecule"
    Params = FMTargetParams
    inputs = {"targets": "file", "genes": "set"}
    chunked = False
    description = "concatenated embeddings of a drug's top targets, from any gene set"

    def compute(self) -> Batch:
        p = self.params
        genes = self.ctx.open_set("genes")
        if genes.card.kind != "gene":
            raise InvalidInputError(
                f"fm-targets needs a gene set as input 'genes', got {genes.card.kind} set {genes.card.source}"
            )
        targets, failed = molecule_targets(self.ctx, str(self.ctx.path("targets")))
        symbols = self.ctx.registry("gene").set_index("entity_id")["symbol"]
        ids, chosen = [], []
        for molecule in sorted(targets):
            ranked = ranked_targets(targets[molecule])
            positions = genes.positions(ranked)
            present = [pos for pos in positions if pos >= 0][: p.n_targets]
            if len(present) < p.min_targets:
                absent = [str(symbols.get(g, g)) for g, pos in zip(ranked, positions) if pos < 0]
                failed[molecule] = (
                    f"{len(present)} of its targets in set {genes.card.source} (needs "
                    f"{p.min_targets}); missing: {', '.join(absent[:10])}"
                )
                continue
            ids.append(molecule)
            chosen.append(present)
        registered = self.ctx.registry("molecule").entity_id.astype(str).tolist()
        failed.update(_missing(registered, set(targets) | set(failed)))
        dim = genes.card.dim
        if not ids:
            return Batch.empty(dim * p.n_targets, failed)
        table = genes.rows(np.array(sorted({pos for c in chosen for pos in c})))
        where = {pos: i for i, pos in enumerate(sorted({pos for c in chosen for pos in c}))}
        values = np.zeros((len(ids), p.n_targets, dim), dtype=np.float32)
        for i, present in enumerate(chosen):
            block = table[[where[pos] for pos in present]]
            values[i, : len(present)] = block
            if p.fill == "mean":
                values[i, len(present) :] = block.mean(axis=0)
        return Batch(ids, values.reshape(len(ids), -1), failed)
