"""One settings object shared by the Python facade, the CLI and the API."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """pertstore settings; each field reads ``PERTSTORE_<NAME>`` from the environment."""

    model_config = SettingsConfigDict(env_prefix="PERTSTORE_", extra="ignore")

    store: str = "./pertstore-data"
    """URI of the store root (a local path, ``file://``, ``s3://bucket/prefix`` or ``memory://``)."""
    catalog: str | None = None
    """Path of the DuckDB catalog; default: ``<store>/catalog.duckdb`` for local stores."""
    data_dir: str | None = None
    """Folder holding the public data files (see the README)."""
    token: str | None = Field(None, repr=False)
    """Bearer token of the REST API: ``pertstore serve`` needs it for writes, the Python client sends it."""
    device: str | None = None
    """Torch device of the model producers (``cuda``, ``cpu``, ``cuda:1``); default: ``cuda`` when available."""
    text_runtime: str = "onnx"
    """Runtime of the sentence-transformer text encoders: ``onnx`` (ONNX Runtime, faster on CPU) or ``torch``."""
    cache_bytes: int = 4 * 2**30
    """Memory budget of a long-lived process: decoded rows, ids, row maps and the alias index together."""
    read_threads: int = 8
    """Threads that fetch and decode chunks in parallel."""
    max_plan_recipes: int = 1000
    """Most recipes one job may plan (sweeps times contexts); bigger recipe files are refused."""
    text_endpoint_url: str | None = None
    """Base URL of an OpenAI-compatible embeddings API for ``backend: openai`` text sets
    (e.g. ``https://api.openai.com/v1``; requests go to ``<url>/embeddings``)."""
    text_endpoint_key: SecretStr | None = None
    """API key of that endpoint (sent as a bearer token; never written to recipes or cards)."""
    text_endpoint_timeout: float = 60.0
    """Seconds one embeddings request may take."""
    text_endpoint_retries: int = 5
    """Retries of a request that failed with a connection error, 408, 409, 429 or 5xx."""
    text_endpoint_backoff: float = 1.0
    """Seconds before the first retry; doubled for each further one."""


def get_settings() -> Settings:
    """Settings read from the environment now (not cached: tests change the environment)."""
    return Settings()
