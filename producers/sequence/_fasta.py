"""Protein FASTA files: records, the gene ids their headers name, and residue checks.

Header forms understood (the ids are tried in this order; the first that resolves to one gene wins):

- UniProt: ``>sp|P04637|P53_HUMAN Cellular tumor antigen p53 OS=Homo sapiens OX=9606 GN=TP53 ...``
  (``tr|`` too): the ``GN=`` gene name, then the accession.
- Ensembl pep: ``>ENSP00000269305.8 pep chromosome:GRCh38:17:... gene:ENSG00000141510.18 ...
  gene_symbol:TP53 ...``: the ``gene:`` id, then ``gene_symbol:``, then the protein id.
- Anything else: the first word, as a symbol, Entrez id, Ensembl gene or protein id (version
  suffixes ignored) or alias.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path

from pertstore.errors import InvalidInputError

_UNIPROT = re.compile(r"^(?:sp|tr)\|(?P<accession>[^|]+)\|")
_TAGS = [re.compile(r"(?:^|\s)GN=(\S+)"), re.compile(r"(?:^|\s)gene:(\S+)"), re.compile(r"(?:^|\s)gene_symbol:(\S+)")]
_INVALID = re.compile(r"[^ACDEFGHIKLMNPQRSTVWYXUZOB]")


def read_fasta(path: str | Path) -> Iterator[tuple[str, str]]:
    """``(header, sequence)`` of each record (header without ``>``); gzip-compressed files are read as such."""
    path = Path(path)
    header, lines = None, []
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
        with gzip.open(path, "rt") if gzipped else open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if line.startswith(">"):
                    if header is not None:
                        yield header, "".join(lines)
                    header, lines = line[1:].strip(), []
                elif line and header is None:
                    raise InvalidInputError(
                        f"{path.name}: line {n}: sequence before the first '>' header; not a FASTA file"
                    )
                elif line:
                    lines.append(line)
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise InvalidInputError(f"{path.name}: not a readable (optionally gzipped) FASTA file: {e}") from e
    if header is not None:
        yield header, "".join(lines)


def record_id(header: str) -> str:
    """The first word of a header (``sp|P04637|P53_HUMAN``, ``ENSP00000269305.8``, ``TP53``)."""
    words = header.split(maxsplit=1)
    return words[0] if words else ""


def gene_keys(header: str) -> list[str]:
    """The ids a header names for its gene, best first (see the module docstring)."""
    keys = [m.group(1) for rx in _TAGS for m in [rx.search(header)] if m]
    first = record_id(header)
    uniprot = _UNIPROT.match(first)
    keys.append(uniprot["accession"] if uniprot else first)
    return [k for k in dict.fromkeys(keys) if k]


def normalise(sequence: str) -> str:
    """Upper case, without the terminal stop ``*``."""
    sequence = sequence.upper()
    return sequence[:-1] if sequence.endswith("*") else sequence


def residue_problem(sequence: str) -> str | None:
    """Why a (normalised) sequence cannot be embedded, or None: the 20 amino acids and X/U/Z/O/B only."""
    if not sequence:
        return "empty sequence"
    bad = _INVALID.search(sequence)
    return None if bad is None else f"invalid letter {bad.group()!r} at residue {bad.start() + 1}"
