"""Genome windows around transcription start sites: the TSS table and an indexed genome FASTA.

The genome (uncompressed FASTA) is read through pyfaidx. Its ``.fai`` index is used when it
sits beside the FASTA and is newer; otherwise one is built in ``<tmp>/pertstore-faidx/``, named by
the file's path, size and modification time: nothing is ever written beside the genome, whose
directory may be read-only (data directories are; root would bypass the permission bits).
Chromosome names are matched as written, else with the ``chr`` prefix added or removed
(``chr17`` ~ ``17``; ``chrM`` ~ ``MT``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd
from pertstore.store import file_stamp

from pertstore.errors import InvalidInputError

TSS_COLUMNS = ["ensembl_id", "symbol", "chromosome", "tss", "strand"]
_COMPLEMENT = str.maketrans("ACGTRYKMSWBDHVN", "TGCAYRMKSWVHDBN")


def read_tss(path: Path) -> pd.DataFrame:
    """The TSS table (tab-separated, optionally gzipped): ensembl_id, symbol, chromosome, tss (1-based), strand."""
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except Exception as e:  # pandas raises many types for unreadable files
        raise InvalidInputError(f"{path.name}: not a readable tab-separated TSS table: {e}") from e
    missing = [c for c in TSS_COLUMNS if c not in table.columns]
    if missing:
        raise InvalidInputError(
            f"{path.name}: a TSS table needs columns {TSS_COLUMNS}; missing {missing} (found {list(table.columns)})"
        )
    tss = pd.to_numeric(table.tss, errors="coerce")
    bad = table.index[tss.isna() | (tss < 1) | (tss % 1 != 0) | ~table.strand.isin(["+", "-"])]
    if len(bad):
        row = table.loc[bad[0]]
        raise InvalidInputError(
            f"{path.name}: line {bad[0] + 2}: tss {row.tss!r} / strand {row.strand!r}: "
            "expected a 1-based position and '+' or '-'"
        )
    return table.assign(tss=tss.astype(int))


def open_genome(path: Path):
    """The genome as a pyfaidx ``Fasta`` (upper-case strings), indexed where it can be (module docstring)."""
    from pyfaidx import Fasta, FastaIndexingError

    try:
        return Fasta(str(path), indexname=str(_index(path)), as_raw=True, sequence_always_upper=True, rebuild=False)
    except (FastaIndexingError, OSError, ValueError) as e:
        raise InvalidInputError(f"{path.name}: not a readable genome FASTA: {e}") from e


def _index(path: Path) -> Path:
    """A fresh ``.fai`` for ``path``: the one beside it, else one built (atomically) in the cache."""
    from pyfaidx import Faidx

    def fresh(index: Path) -> bool:
        return index.is_file() and index.stat().st_mtime >= path.stat().st_mtime

    beside = Path(f"{path}.fai")
    if fresh(beside):
        return beside
    cached = Path(tempfile.gettempdir()) / "pertstore-faidx" / f"{path.name}.{file_stamp(path)}.fai"
    if not fresh(cached):
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")
        Faidx(str(path), indexname=str(partial)).close()
        os.replace(partial, cached)  # concurrent workers each build their own and swap it in
    return cached


def contig_of(genome, chromosome: str) -> str | None:
    """The genome's name for ``chromosome``: as written, else with the ``chr`` prefix added or removed."""
    bare = chromosome[3:] if chromosome.lower().startswith("chr") else chromosome
    names = [chromosome, bare, f"chr{bare}"]
    if bare.upper() in ("M", "MT"):
        names += ["chrM", "MT", "M", "chrMT"]
    return next((n for n in names if n in genome), None)


def tss_window(tss: int, strand: str, window: int) -> tuple[int, int]:
    """0-based ``[start, end)`` holding the TSS at index ``window // 2`` of the strand's sequence.

    ``window // 2`` bases upstream, the TSS, the rest downstream, on either strand.
    """
    start = tss - 1 - window // 2 if strand == "+" else tss + window // 2 - window
    return start, start + window


def window_sequence(genome, chromosome: str, tss: int, strand: str, window: int) -> tuple[str, str]:
    """The window's sequence on the gene's strand (minus: reverse complement), or ``""`` and why not."""
    contig = contig_of(genome, chromosome)
    if contig is None:
        return "", f"chromosome {chromosome!r} is not in the genome"
    start, end = tss_window(tss, strand, window)
    length = len(genome[contig])
    where = f"window {contig}:{start + 1}-{end} ({strand})"
    if start < 0 or end > length:
        return "", f"{where} runs off the contig ({length:,} bp)"
    sequence = genome[contig][start:end]
    if not sequence.strip("N"):
        return "", f"{where} is all N"
    return (sequence.translate(_COMPLEMENT)[::-1] if strand == "-" else sequence), ""
