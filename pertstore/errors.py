"""Exceptions raised by pertstore. Every message names the offending file, id, row or name."""

from __future__ import annotations


class PertstoreError(Exception):
    """Base class of every error pertstore raises on purpose."""


class InvalidInputError(PertstoreError, ValueError):
    """Input data (a file, a matrix, a list of ids) is malformed."""


class NotFoundError(PertstoreError, KeyError):
    """A source, version, tag, context or entity does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConflictError(PertstoreError):
    """The request contradicts what is already stored (e.g. dims of an existing source)."""


class CorruptedSetError(PertstoreError):
    """A stored embedding set failed an integrity check."""
