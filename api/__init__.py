"""The REST API (FastAPI) over the Store facade; ``pertstore serve`` runs it."""

from pertstore.api.app import create_app

__all__ = ["create_app"]
