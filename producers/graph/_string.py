"""Reading STRING networks and recombining evidence channels with STRING's scoring rule.

STRING combines the channel scores ``s_i`` (probabilities, 0-1000 in the files) as: remove the
prior ``p = 0.041`` from each, ``s_i' = max((s_i - p) / (1 - p), 0)``; combine as independent
evidence, ``s' = 1 - prod_i (1 - s_i')``; add the prior back, ``s = s' + p (1 - s')``
(von Mering et al. 2005; Szklarczyk et al. 2019). The symbol-keyed v12 table splits most channels
into a direct and a ``_transferred`` score (evidence transferred from other organisms), while
STRING's ``protein.links.detailed`` files give one score per channel; here both parts of a
channel enter the rule as separate pieces of evidence, which is how STRING builds the per-channel
scores of its detailed files from them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pertstore.errors import InvalidInputError

PRIOR = 0.041
CHANNELS = (
    "neighborhood",
    "fusion",
    "cooccurence",
    "homology",
    "coexpression",
    "experiments",
    "database",
    "textmining",
)


def combine_scores(scores: np.ndarray, prior: float = PRIOR) -> np.ndarray:
    """STRING's combined score of ``[edges, channels]`` scores on the 0-1000 scale (returns 0-1000)."""
    s = np.asarray(scores, dtype=np.float64) / 1000.0
    s = np.clip((s - prior) / (1 - prior), 0.0, None)
    combined = 1.0 - np.prod(1.0 - s, axis=1)
    return 1000.0 * (combined + prior * (1.0 - combined))


def keep_at_least(a: np.ndarray, b: np.ndarray, score: np.ndarray, threshold: float, k: int) -> np.ndarray:
    """Rows kept by ``train_gnn/filter_by_score_adaptive.py``: ``score >= threshold``, then each node rescued to
    ``min(k, its rows)`` rows by its best rows below the threshold (ties in file order), with their reverse rows.

    Rows are counted as the file lists them: STRING's own files list each pair twice, so the reference's
    ``keep20`` there keeps about 10 partners per protein; on a file listing each pair once, ``k = 10`` is alike.
    """
    above = np.asarray(score) >= threshold
    if k <= 0:
        return above
    nodes = pd.Index(pd.unique(np.concatenate([a, b])))
    ia, ib = nodes.get_indexer(a), nodes.get_indexer(b)

    def count(m: np.ndarray) -> np.ndarray:
        return np.bincount(ia[m], minlength=len(nodes)) + np.bincount(ib[m], minlength=len(nodes))

    needed = np.minimum(k, count(np.ones_like(above))) - count(above)
    below = np.flatnonzero(~above)
    # each below row listed under its first then its second protein, best score first, then file order
    node, row = np.column_stack([ia[below], ib[below]]).ravel(), np.repeat(below, 2)
    order = np.lexsort((np.arange(len(node)), -np.repeat(score[below], 2), node))
    node, row = node[order], row[order]
    rank = np.arange(len(node)) - np.searchsorted(node, node)
    rescued = row[rank < needed[node]]
    keep = above.copy()
    keep[rescued] = True
    reverse = pd.MultiIndex.from_arrays([ib[below], ia[below]]).isin(
        pd.MultiIndex.from_arrays([ia[rescued], ib[rescued]])
    )
    keep[below[reverse]] = True
    return keep


def read_string(
    path: str | Path,
    channels: tuple[str, ...] = ("experiments", "coexpression", "database"),
    threshold: float = 400.0,
    score: str = "channels",
    keep: int = 0,
) -> pd.DataFrame:
    """Edges ``a, b, score`` (0-1000) of a STRING table kept by the graph rules.

    ``score="channels"`` recombines ``channels`` with STRING's rule, ``"combined"`` takes the file's
    ``combined_score``; rows with ``score >= threshold`` are kept, and with ``keep > 0`` each protein is
    rescued to ``keep`` rows as :func:`keep_at_least`. Reads the symbol-keyed v12 table (``entrez_a,
    entrez_b`` and direct/``_transferred`` columns) or STRING's ``protein.links[.detailed]`` files
    (``protein1, protein2``, space separated).
    """
    path = Path(path)
    try:
        table = (
            pd.read_csv(path, sep=None, engine="python")
            if path.suffix not in (".gz", ".tsv")
            else pd.read_csv(path, sep=r"\s+" if "protein.links" in path.name else "\t")
        )
    except (OSError, pd.errors.ParserError) as e:
        raise InvalidInputError(f"{path}: not a readable STRING table: {e}") from e
    if len(table.columns) == 1 and " " in table.columns[0]:  # a protein.links file under another name
        table = pd.read_csv(path, sep=" ")
    if {"entrez_a", "entrez_b"} <= set(table.columns):
        a, b = table.entrez_a.astype(str), table.entrez_b.astype(str)
    elif {"protein1", "protein2"} <= set(table.columns):
        a = table.protein1.astype(str).str.split(".", n=1).str[-1]
        b = table.protein2.astype(str).str.split(".", n=1).str[-1]
    else:
        raise InvalidInputError(
            f"{path}: expected entrez_a/entrez_b or protein1/protein2 columns, got {list(table.columns)}"
        )
    if score == "combined":
        if "combined_score" not in table.columns:
            raise InvalidInputError(f"{path}: no combined_score column for score 'combined'")
        values = table.combined_score.to_numpy(dtype=np.float64)
    elif score == "channels":
        cols = []
        for ch in channels:
            if ch not in CHANNELS:
                raise InvalidInputError(f"unknown STRING channel {ch!r}; channels: {', '.join(CHANNELS)}")
            names = (ch, f"{ch}_transferred") + (("experimental",) if ch == "experiments" else ())  # detailed files
            found = [c for c in names if c in table.columns]
            if not found:
                raise InvalidInputError(f"{path}: no column for channel {ch!r}")
            cols += found
        values = combine_scores(table[cols].to_numpy())
    else:
        raise InvalidInputError(f"unknown score {score!r}; scores: channels, combined")
    kept = keep_at_least(a.to_numpy(), b.to_numpy(), values, threshold, keep)
    return pd.DataFrame({"a": a[kept].to_numpy(), "b": b[kept].to_numpy(), "score": values[kept]})


def gene_graph(edges: pd.DataFrame, resolve) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, dict[str, str]]:
    """Map edge endpoints to canonical genes: ``(nodes, rows, cols, weights, unmapped)``.

    ``resolve(ids)`` returns a Resolution; unmapped ids are reported, duplicate edges keep the
    highest score, self-loops are dropped.
    """
    ids = pd.unique(np.concatenate([edges.a.to_numpy(), edges.b.to_numpy()]))
    res = resolve(list(ids))
    mapping = dict(zip(ids, res.ids))
    unmapped = {i: "not in the gene registry" for i, e in mapping.items() if e is None}
    a = edges.a.map(mapping)
    b = edges.b.map(mapping)
    ok = a.notna() & b.notna() & (a != b)
    frame = pd.DataFrame({"a": a[ok], "b": b[ok], "score": edges.score[ok]})
    swap = frame.a > frame.b
    frame.loc[swap, ["a", "b"]] = frame.loc[swap, ["b", "a"]].to_numpy()
    frame = frame.groupby(["a", "b"], sort=False).score.max().reset_index()
    nodes = sorted(set(frame.a) | set(frame.b))
    index = {n: i for i, n in enumerate(nodes)}
    return (
        nodes,
        frame.a.map(index).to_numpy(),
        frame.b.map(index).to_numpy(),
        frame.score.to_numpy() / 1000.0,
        unmapped,
    )
