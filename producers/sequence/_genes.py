"""Gene ids of sequence records (FASTA headers, TSS rows) through the store's registry."""

from __future__ import annotations

import logging

from pertstore.producers._base import ProducerContext


def resolve_first(ctx: ProducerContext, key_lists: list[list[str]]) -> list[tuple[str | None, str]]:
    """Per list of ids: the gene of the first id that resolves to exactly one gene, or None and why."""
    unique = list(dict.fromkeys(k for keys in key_lists for k in keys))
    res = ctx.resolve(unique, "gene")
    found = dict(zip(unique, res.ids))
    out: list[tuple[str | None, str]] = []
    for keys in key_lists:
        gene = next((found[k] for k in keys if found[k]), None)
        ambiguous = [f"{k} -> {', '.join(res.ambiguous[k])}" for k in keys if k in res.ambiguous]
        why = (
            ""
            if gene
            else (
                "ambiguous: " + "; ".join(ambiguous)
                if ambiguous
                else f"not in the gene registry (tried {', '.join(keys) or 'no id'})"
            )
        )
        out.append((gene, why))
    return out


def log_unmapped(log: logging.Logger, what: str, unmapped: list[tuple[str, str]], total: int) -> None:
    """One warning summarising the records skipped because they give no gene (no row to give, no failure)."""
    if unmapped:
        examples = "; ".join(f"{name}: {why}" for name, why in unmapped[:5])
        log.warning("%s: %d of %d skipped (e.g. %s)", what, len(unmapped), total, examples)
