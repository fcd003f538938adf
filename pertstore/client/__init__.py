"""A Python client of the pertstore REST API: ``Client("http://host:8000").align([...], genes)``."""

from pertstore.client._client import Client, RemoteJobs

__all__ = ["Client", "RemoteJobs"]
