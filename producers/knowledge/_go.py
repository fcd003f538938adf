"""Gene Ontology inputs: annotation and term tables, propagation to ancestors, the gene x term matrix.

Annotations are ``entrez_id, symbol, go_id, evidence, ontology`` rows (one per gene, term and
evidence code); terms are ``go_id, name, ontology, is_a, part_of`` with ``;``-separated parents.
Propagation follows ``is_a`` and ``part_of`` (the true-path rule: a gene annotated to a term is
annotated to all its ancestors).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pertstore.errors import InvalidInputError


def _read(path: str | Path, columns: set[str]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, sep="\t", dtype=str)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"{path}: not a readable tab-separated table: {e}") from e
    missing = columns - set(table.columns)
    if missing:
        raise InvalidInputError(f"{path}: lacks columns {sorted(missing)} (has {list(table.columns)})")
    return table


def read_annotations(path: str | Path, ontologies: list[str], exclude_evidence: list[str]) -> pd.DataFrame:
    """Unique ``entrez_id, go_id`` pairs of the chosen ontologies, without the excluded evidence codes."""
    table = _read(path, {"entrez_id", "go_id", "evidence", "ontology"}).dropna(subset=["entrez_id", "go_id"])
    keep = table.ontology.isin(ontologies) & ~table.evidence.isin(exclude_evidence)
    return table.loc[keep, ["entrez_id", "go_id"]].drop_duplicates().reset_index(drop=True)


def read_parents(path: str | Path) -> dict[str, list[str]]:
    """Each term's direct parents (``is_a`` and ``part_of``)."""
    table = _read(path, {"go_id", "is_a", "part_of"}).fillna("")
    parents = (table.is_a + ";" + table.part_of).str.split(";")
    return {t: [p for p in ps if p] for t, ps in zip(table.go_id, parents)}


def ancestors(parents: dict[str, list[str]]) -> dict[str, set[str]]:
    """Each term with all its ancestors (itself included); cycles are tolerated."""
    done: dict[str, set[str]] = {}

    def visit(term: str, path: set[str]) -> set[str]:
        if term in done:
            return done[term]
        out = {term}
        for p in parents.get(term, ()):
            if p not in path:
                out |= visit(p, path | {term})
        done[term] = out
        return out

    for term in parents:
        visit(term, set())
    return done


def gene_term_matrix(
    pairs: pd.DataFrame, genes: list[str], parents: dict[str, list[str]] | None, min_genes: int
) -> tuple[sp.csr_matrix, list[str]]:
    """Binary ``[genes, terms]`` matrix of ``pairs`` (columns ``gene, go_id``), propagated to ancestors
    when ``parents`` is given, keeping terms annotated to at least ``min_genes`` of ``genes``."""
    row = {g: i for i, g in enumerate(genes)}
    pairs = pairs[pairs.gene.isin(row.keys())]
    annotated = sorted(set(pairs.go_id))
    closure = ancestors(parents) if parents is not None else {}
    reach = [sorted(closure.get(t, {t})) for t in annotated]  # each term with its ancestors
    universe = sorted(set().union(*map(set, reach))) if reach else []
    col = {t: j for j, t in enumerate(universe)}
    up = sp.csr_matrix(
        (
            np.ones(sum(map(len, reach)), dtype=np.float32),
            (np.repeat(np.arange(len(annotated)), [len(r) for r in reach]), [col[t] for r in reach for t in r]),
        ),
        shape=(len(annotated), len(universe)),
    )
    term = {t: j for j, t in enumerate(annotated)}
    direct = sp.csr_matrix(
        (np.ones(len(pairs), dtype=np.float32), (pairs.gene.map(row).to_numpy(), pairs.go_id.map(term).to_numpy())),
        shape=(len(genes), len(annotated)),
    )
    matrix = (direct @ up).tocsr()
    matrix.data[:] = 1.0
    keep = np.flatnonzero(matrix.getnnz(axis=0) >= min_genes)
    return matrix[:, keep].tocsr(), [universe[j] for j in keep]
