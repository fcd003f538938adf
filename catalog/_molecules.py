"""Building the molecule registry from tables of names and SMILES."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from pertstore.catalog._registry import MOLECULE_COLUMNS

from pertstore.errors import InvalidInputError


def molecule_registry(
    table: pd.DataFrame, *, name_col: str = "name", smiles_col: str = "smiles", alias_cols: Sequence[str] = ()
) -> tuple[pd.DataFrame, list[str]]:
    """Registry rows (:data:`MOLECULE_COLUMNS`) from a table with a name and a SMILES per row.

    Returns the registry and one message per row that could not be registered (row, name, why).
    Rows of the same structure merge into one entity; their names become aliases.
    """
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")  # type: ignore[attr-defined]
    for col in [name_col, smiles_col, *alias_cols]:
        if col not in table.columns:
            raise InvalidInputError(f"molecule table lacks column {col!r} (has {list(table.columns)})")
    rows: dict[str, dict] = {}
    failures: list[str] = []
    for i, rec in enumerate(table.fillna("").to_dict("records")):
        name, smiles = str(rec[name_col]).strip(), str(rec[smiles_col]).strip()
        mol = parse_smiles(smiles) if smiles else None
        key = Chem.MolToInchiKey(mol) if mol is not None else ""
        if not key:
            why = "no SMILES" if not smiles else ("SMILES does not parse" if mol is None else "no InChI exists")
            short = smiles if len(smiles) <= 60 else smiles[:57] + "..."
            failures.append(f"row {i} ({name!r}, SMILES {short!r}): {why}")
            continue
        extra = [str(rec[c]).strip() for c in alias_cols if str(rec[c]).strip()]
        entry = rows.setdefault(
            key,
            {
                "entity_id": key,
                "name": name,
                "smiles": smiles,
                "canonical_smiles": Chem.MolToSmiles(mol),
                "aliases": [],
            },
        )
        for alias in ([name] if name != entry["name"] else []) + extra:
            if alias not in entry["aliases"]:
                entry["aliases"].append(alias)
    frame = pd.DataFrame(list(rows.values()), columns=MOLECULE_COLUMNS)
    frame["aliases"] = frame["aliases"].map(";".join)
    return frame, failures


def parse_smiles(smiles: str):
    """An RDKit molecule from SMILES; a ChemAxon extension block (`` |...|``) RDKit rejects is dropped."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None and " |" in smiles:
        mol = Chem.MolFromSmiles(smiles.split(" |", 1)[0])
    return mol


def merge_registry(old: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    """Union of two registries of one kind; for an entity in both, the old row wins and aliases are unioned."""
    if old is None or old.empty:
        return new.reset_index(drop=True)
    new_only = new[~new.entity_id.isin(old.entity_id)]
    merged = pd.concat([old, new_only], ignore_index=True)
    if "aliases" in merged.columns:
        extra = new[new.entity_id.isin(old.entity_id)].set_index("entity_id")
        label = "name" if "name" in extra.columns else "symbol"

        def union(row: pd.Series) -> str:
            if row.entity_id not in extra.index:
                return row.aliases
            have = [a for a in row.aliases.split(";") if a]
            add = [
                a
                for a in [extra.at[row.entity_id, label], *extra.at[row.entity_id, "aliases"].split(";")]
                if a and a not in have and a != row[label]
            ]
            return ";".join(have + add)

        merged["aliases"] = merged.apply(union, axis=1)
    return merged


def read_sciplex3(path: str | Path) -> pd.DataFrame:
    """The sci-Plex 3 compound list (``molecules/sciplex3_drugs.tsv``) as ``name, smiles`` rows.

    The DMSO ``control`` rows are not molecules to embed and are left out.
    """
    t = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    return t[t["name"] != "control"][["name", "smiles"]].reset_index(drop=True)


def read_repurposing_hub(path: str | Path) -> pd.DataFrame:
    """The Drug Repurposing Hub (``molecules/repurposing_hub.tsv.gz``) as ``name, smiles, broad_id,
    compound_id`` rows."""
    t = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    out = t.rename(columns={"pert_iname": "name"})[["name", "smiles", "broad_id"]].copy()
    out["compound_id"] = out["broad_id"].str[:13]
    return out
