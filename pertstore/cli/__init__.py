"""The ``pertstore`` console script."""

from pertstore.cli._main import app, main

__all__ = ["app", "main"]
