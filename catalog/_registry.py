"""The entity registry: canonical ids for genes and molecules, and every alias that resolves to one.

Genes
    The canonical id is an Ensembl gene id: the first of the gene's Ensembl ids (database order)
    that belongs to no other Entrez gene. A gene with no such id is ``ENTREZ:<entrez id>``.
    Symbols, Entrez ids, all Ensembl gene and protein ids (version suffixes ignored) and the
    published aliases resolve to it, case-insensitively. An Ensembl gene id that org.Hs.eg.db lists
    under several genes resolves to one of them by a recorded rule (:data:`SHARED_ID_RULES`): the
    gene whose symbol Ensembl gives the id (``genes/tss_grch38.tsv.gz``, when registered with it),
    else the gene for which it is the only Ensembl id; otherwise it stays ambiguous.
Molecules
    The canonical id is the InChIKey of the structure RDKit parses from the SMILES as given
    (salts included). Names, the SMILES, Broad ids and other registered aliases resolve to it;
    a SMILES that is not registered still resolves, through RDKit, to its InChIKey.

A query resolves at the best (lowest) priority level where it matches; two different entities
at that level make it ambiguous, and it is reported as such, never picked silently.
"""

from __future__ import annotations

import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources

import pandas as pd

from pertstore.errors import InvalidInputError

GENE_COLUMNS = [
    "entity_id",
    "symbol",
    "name",
    "entrez_id",
    "ensembl_gene_ids",
    "ensembl_protein_ids",
    "aliases",
    "chromosome",
    "gene_type",
    "shared_ensembl",
]
SHARED_ID_RULES = {
    "ensembl": "Ensembl gives the id this gene's symbol (genes/tss_grch38.tsv.gz)",
    "sole-id": "the id is this gene's only Ensembl gene id",
}
"""Rules that give an Ensembl gene id listed under several genes to one of them; a gene's
``shared_ensembl`` field holds ``ID:rule`` for each such id it was given."""
MOLECULE_COLUMNS = ["entity_id", "name", "smiles", "canonical_smiles", "aliases"]
_ENSEMBL_VERSIONED = re.compile(r"^(ENS[A-Z]*[GTP]\d{6,})\.\d+$", re.IGNORECASE)


@dataclass
class Resolution:
    """How a list of ids resolved to canonical entity ids."""

    query: list[str]
    ids: list[str | None]
    """Canonical id for each query id (None when unresolved or ambiguous)."""
    unresolved: list[str] = field(default_factory=list)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)
    rules: dict[str, str] = field(default_factory=dict)
    """For a query id that several genes share and a rule gave to one: the rule (see :data:`SHARED_ID_RULES`)."""

    @property
    def n_resolved(self) -> int:
        return sum(i is not None for i in self.ids)

    def summary(self) -> str:
        return (
            f"{self.n_resolved}/{len(self.query)} resolved, {len(self.unresolved)} unresolved, "
            f"{len(self.ambiguous)} ambiguous"
        )


def _split(value: str) -> list[str]:
    return [v for v in str(value).split(";") if v] if value else []


def default_gene_table() -> pd.DataFrame:
    """The human gene table vendored with pertstore (org.Hs.eg.db 3.16.0)."""
    path = resources.files("pertstore.catalog") / "data" / "human_genes.tsv.gz"
    with resources.as_file(path) as p:
        return pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False)


def ensembl_assignment(path) -> pd.DataFrame:
    """``(ensembl_id, symbol)`` rows of Ensembl's own gene table (``genes/tss_grch38.tsv.gz``)."""
    try:
        t = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"{path}: not a readable Ensembl gene table ({e})") from e
    if missing := {"ensembl_id", "symbol"} - set(t.columns):
        raise InvalidInputError(f"{path}: Ensembl gene table lacks column(s) {sorted(missing)}")
    return t[["ensembl_id", "symbol"]]


def gene_registry(table: pd.DataFrame, ensembl: pd.DataFrame | None = None) -> pd.DataFrame:
    """Registry rows (:data:`GENE_COLUMNS`) from a table shaped like ``genes/human_genes.tsv.gz``.

    ``ensembl``: Ensembl's ``(ensembl_id, symbol)`` assignment (:func:`ensembl_assignment`), used to
    give an Ensembl id listed under several genes to the one Ensembl names.
    """
    need = {"entrez_id", "symbol", "ensembl_gene_ids"}
    if missing := need - set(table.columns):
        raise InvalidInputError(f"gene table lacks column(s) {sorted(missing)}")
    t = table.copy()
    for c in GENE_COLUMNS[1:]:
        if c not in t.columns:
            t[c] = ""
    t = t.fillna("")
    owners: dict[str, set[str]] = {}
    for entrez, ens in zip(t.entrez_id, t.ensembl_gene_ids):
        for e in _split(ens):
            owners.setdefault(e, set()).add(entrez)

    def canonical(entrez: str, ens: str) -> str:
        for e in _split(ens):
            if len(owners[e]) == 1:
                return e
        return f"ENTREZ:{entrez}"

    t["entity_id"] = [canonical(a, b) for a, b in zip(t.entrez_id, t.ensembl_gene_ids)]
    given = _shared_ids(t, {e: o for e, o in owners.items() if len(o) > 1}, ensembl)
    t["shared_ensembl"] = [
        ";".join(f"{e}:{rule}" for e, rule in sorted(given.get(entrez, {}).items())) for entrez in t.entrez_id
    ]
    return t[GENE_COLUMNS].reset_index(drop=True)


def _shared_ids(
    t: pd.DataFrame, shared: dict[str, set[str]], ensembl: pd.DataFrame | None
) -> dict[str, dict[str, str]]:
    """``{entrez id: {shared Ensembl id: rule}}``: which gene each shared id goes to, and by what rule."""
    symbol = {e: s.upper() for e, s in zip(t.entrez_id, t.symbol)}
    n_ids = {e: len(_split(ids)) for e, ids in zip(t.entrez_id, t.ensembl_gene_ids)}
    named = (
        {}
        if ensembl is None
        else dict(zip(ensembl.ensembl_id.astype(str).str.upper(), ensembl.symbol.astype(str).str.upper()))
    )
    given: dict[str, dict[str, str]] = {}
    for e, genes in shared.items():
        by_symbol = [g for g in genes if e.upper() in named and symbol[g] == named[e.upper()]]
        sole = [g for g in genes if n_ids[g] == 1]
        if len(by_symbol) == 1:
            given.setdefault(by_symbol[0], {})[e] = "ensembl"
        elif len(sole) == 1:
            given.setdefault(sole[0], {})[e] = "sole-id"
    return given


def gene_aliases(reg: pd.DataFrame) -> pd.DataFrame:
    """Alias rows ``(key, namespace, priority, entity_id)`` of a gene registry.

    An Ensembl id that several genes share and a rule gave to one of them is that gene's alias at the
    Ensembl level (namespace ``ensembl_gene:<rule>``); the other genes keep it one level lower.
    """
    given = {
        e.upper(): rule
        for field_ in reg.get("shared_ensembl", pd.Series([], dtype=str))
        for e, _, rule in (x.partition(":") for x in _split(field_))
    }
    rows: list[tuple[str, str, int, str]] = []
    for r in reg.itertuples(index=False):
        eid = r.entity_id
        mine = {e.upper() for e, _, _ in (x.partition(":") for x in _split(getattr(r, "shared_ensembl", "")))}
        rows.append((eid.upper(), "canonical", 0, eid))
        if r.symbol:
            rows.append((r.symbol.upper(), "symbol", 1, eid))
        if r.entrez_id:
            rows.append((r.entrez_id, "entrez", 1, eid))
            rows.append((f"ENTREZ:{r.entrez_id}", "entrez", 1, eid))
        for e in (x.upper() for x in _split(r.ensembl_gene_ids)):
            if e in mine:
                rows.append((e, f"ensembl_gene:{given[e]}", 2, eid))
            elif e in given:
                rows.append((e, "ensembl_gene:shared", 3, eid))
            else:
                rows.append((e, "ensembl_gene", 2, eid))
        rows += [(p.upper(), "ensembl_protein", 2, eid) for p in _split(r.ensembl_protein_ids)]
        rows += [(a.upper(), "alias", 3, eid) for a in _split(r.aliases) if a.upper() != r.symbol.upper()]
    return pd.DataFrame(rows, columns=["key", "namespace", "priority", "entity_id"]).drop_duplicates()


def molecule_aliases(reg: pd.DataFrame) -> pd.DataFrame:
    """Alias rows of a molecule registry (names upper-cased; SMILES kept exact, they are case-sensitive)."""
    rows: list[tuple[str, str, int, str]] = []
    for r in reg.itertuples(index=False):
        eid = r.entity_id
        rows.append((eid, "canonical", 0, eid))
        if r.name:
            rows.append((r.name.upper(), "name", 1, eid))
        for s in {r.smiles, r.canonical_smiles} - {""}:
            rows.append((s, "smiles", 1, eid))
        rows += [(a.upper(), "alias", 2, eid) for a in _split(r.aliases)]
    return pd.DataFrame(rows, columns=["key", "namespace", "priority", "entity_id"]).drop_duplicates()


def entity_rows(kind: str, reg: pd.DataFrame) -> pd.DataFrame:
    """``(entity_id, kind, label, description)`` for the catalog's entities table."""
    if kind == "gene":
        label, desc = reg.symbol, reg.name
    else:
        label, desc = reg.name, reg.smiles
    return pd.DataFrame(
        {"entity_id": reg.entity_id, "kind": kind, "label": label.fillna(""), "description": desc.fillna("")}
    )


def aliases_for(kind: str, reg: pd.DataFrame) -> pd.DataFrame:
    return gene_aliases(reg) if kind == "gene" else molecule_aliases(reg)


def _keys_of(raw: str) -> set[str]:
    """The keys one query id is looked up under: as given, upper-cased, without an Ensembl version."""
    s = str(raw).strip()
    keys = {s, s.upper()}
    if m := _ENSEMBL_VERSIONED.match(s):
        keys.add(m.group(1).upper())
    keys.discard("")
    return keys


def probe_keys(query: list[str]) -> pd.DataFrame:
    """``(pos, key)`` for every key each query id is looked up under."""
    return pd.DataFrame([(pos, k) for pos, raw in enumerate(query) for k in _keys_of(raw)], columns=["pos", "key"])


ANSWER_BYTES = 64 * 2**20
"""Most bytes of resolver answers an :class:`AliasIndex` keeps (least recently used dropped first;
a warm align of 2,000 ids: 18 ms of resolving without them, about 2 ms with them)."""
ANSWER_MAX_CHARS = 512
"""Query strings longer than this are resolved but their answers are not kept (no registered alias
is that long; a flood of long ids must not fill the memory)."""
_ANSWER_OVERHEAD = 200
"""Bytes of one kept answer besides its query string: its dictionary slot, list and LRU links."""
_KEY_OVERHEAD = 64
"""Bytes of one alias key besides its string and the dictionary's table: its ``(priority, *entities)`` tuple."""


class AliasIndex:
    """Every alias of one entity kind in memory, for long-lived processes that resolve often.

    Maps each key to its best (lowest) priority and the entities at that priority; resolving is
    then dictionary lookups, with the same answers as the catalog's join (:func:`pick`). Answers
    found are kept per query string, up to ``answer_bytes`` (least recently used dropped first).
    """

    def __init__(self, rows: Iterable[tuple[str, int, str]], *, answer_bytes: int = ANSWER_BYTES) -> None:
        best: dict[str, tuple] = {}
        entities: dict[str, str] = {}  # one string object per entity, however many keys name it
        for key, priority, entity in rows:
            entity = entities.setdefault(entity, entity)
            current = best.get(key)
            if current is None or priority < current[0]:
                best[key] = (priority, entity)
            elif priority == current[0] and entity not in current[1:]:
                best[key] = current + (entity,)
        self._best = best
        self.nbytes = (
            sys.getsizeof(best)
            + sum(sys.getsizeof(k) + _KEY_OVERHEAD for k in best)
            + sum(sys.getsizeof(e) for e in entities)
        )
        """Estimated memory of the index itself (the answers it keeps are :attr:`answer_nbytes`)."""
        self.answer_bytes = answer_bytes
        self._answers: OrderedDict[str, list[str]] = OrderedDict()
        """Entities found for each query string already resolved (the index never changes)."""
        self.answer_nbytes = 0
        self._lock = threading.Lock()

    def resolve(self, query: list[str]) -> Resolution:
        ids: list[str | None] = [None] * len(query)
        ambiguous: dict[str, list[str]] = {}
        answers = self._answers
        new: dict[str, list[str]] = {}
        with self._lock:
            for pos, raw in enumerate(query):
                found = answers.get(raw)
                if found is None:
                    found = new.get(raw)
                    if found is None:
                        found = new[raw] = self._lookup(raw)
                else:
                    answers.move_to_end(raw)
                if len(found) == 1:
                    ids[pos] = found[0]
                elif found:
                    ambiguous[query[pos]] = found
            self._keep(new)
        unresolved = [q for pos, q in enumerate(query) if ids[pos] is None and q not in ambiguous]
        return Resolution(query=list(query), ids=ids, unresolved=unresolved, ambiguous=ambiguous)

    def _keep(self, new: dict[str, list[str]]) -> None:
        """Keep the answers of short query strings, dropping the least recently used over budget."""
        answers = self._answers
        for raw, found in new.items():
            if len(raw) > ANSWER_MAX_CHARS:
                continue
            answers[raw] = found
            self.answer_nbytes += _answer_nbytes(raw, found)
        while self.answer_nbytes > self.answer_bytes and answers:
            raw, found = answers.popitem(last=False)
            self.answer_nbytes -= _answer_nbytes(raw, found)

    def _lookup(self, raw: str) -> list[str]:
        """The entities at the best priority among ``raw``'s keys (empty: unresolved)."""
        hits = [self._best[k] for k in _keys_of(raw) if k in self._best]
        if not hits:
            return []
        top = min(h[0] for h in hits)
        return sorted(set().union(*(h[1:] for h in hits if h[0] == top)))


def _answer_nbytes(raw: str, found: list[str]) -> int:
    """Memory of one kept answer: its query string (entity strings are the index's own)."""
    return sys.getsizeof(raw) + _ANSWER_OVERHEAD + 8 * len(found)


def pick(query: list[str], hits: pd.DataFrame) -> Resolution:
    """Turn alias hits ``(pos, priority, entity_id)`` into a :class:`Resolution`."""
    ids: list[str | None] = [None] * len(query)
    ambiguous: dict[str, list[str]] = {}
    if len(hits):
        best = hits[hits.priority == hits.groupby("pos").priority.transform("min")][["pos", "entity_id"]]
        best = best.drop_duplicates().sort_values(["pos", "entity_id"])
        counts = best.groupby("pos").entity_id.transform("size")
        for pos, eid in zip(best.pos[counts == 1].tolist(), best.entity_id[counts == 1].tolist()):
            ids[pos] = eid
        for pos, group in best[counts > 1].groupby("pos").entity_id:
            ambiguous[query[pos]] = group.tolist()
    unresolved = [q for pos, q in enumerate(query) if ids[pos] is None and q not in ambiguous]
    return Resolution(query=list(query), ids=ids, unresolved=unresolved, ambiguous=ambiguous)


def rules_from_hits(res: Resolution, hits: pd.DataFrame) -> Resolution:
    """Record in ``res.rules`` the rule behind each query id resolved through an alias of namespace
    ``ensembl_gene:<rule>`` (an Ensembl id several genes share), from the catalog join's ``hits``."""
    for pos, namespace, entity in zip(hits.pos.tolist(), hits.namespace.tolist(), hits.entity_id.tolist()):
        rule = namespace.split(":", 1)[1] if namespace.startswith("ensembl_gene:") else None
        if rule in SHARED_ID_RULES and res.ids[pos] == entity:
            res.rules[res.query[pos]] = f"{rule}: {SHARED_ID_RULES[rule]}"
    return res


def note_rules(res: Resolution, given: dict[str, tuple[str, str]]) -> Resolution:
    """Record in ``res.rules`` the rule that resolved each query id that several genes share.

    ``given`` maps a shared Ensembl id (upper case) to ``(entity id, rule)``, from the aliases of
    namespace ``ensembl_gene:<rule>``.
    """
    winners = {eid for eid, _ in given.values()}
    for q, eid in zip(res.query, res.ids):
        if eid not in winners:  # one set lookup per id: resolving stays as fast for everything else
            continue
        for k in _keys_of(q):
            hit = given.get(k)
            if hit is not None and hit[0] == eid:
                res.rules[q] = f"{hit[1]}: {SHARED_ID_RULES[hit[1]]}"
    return res
