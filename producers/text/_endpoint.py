"""Text embeddings from an OpenAI-compatible ``/embeddings`` endpoint (OpenAI, Azure-style proxies, vLLM, ...).

The endpoint's base URL and key come from the settings (``PERTSTORE_TEXT_ENDPOINT_URL``,
``PERTSTORE_TEXT_ENDPOINT_KEY``), never from recipes, so they never reach a set's card. Texts go in
requests of ``batch_size``; a request that fails with a connection error, 408, 409, 429 or 5xx is
retried ``text_endpoint_retries`` times with exponential backoff; any other answer is an error that
quotes the server.
"""

from __future__ import annotations

import time

import httpx
import numpy as np

from pertstore._config import get_settings
from pertstore.errors import InvalidInputError, PertstoreError

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class EndpointError(PertstoreError):
    """The embedding endpoint refused or failed a request."""


def endpoint() -> tuple[str, str]:
    """The ``/embeddings`` URL and the key of the settings; an error naming the setting that is missing."""
    s = get_settings()
    if not s.text_endpoint_url:
        raise InvalidInputError(
            "the openai text backend needs the endpoint's base URL: set PERTSTORE_TEXT_ENDPOINT_URL "
            "(e.g. https://api.openai.com/v1)"
        )
    if s.text_endpoint_key is None or not s.text_endpoint_key.get_secret_value():
        raise InvalidInputError("the openai text backend needs an API key: set PERTSTORE_TEXT_ENDPOINT_KEY")
    return s.text_endpoint_url.rstrip("/") + "/embeddings", s.text_endpoint_key.get_secret_value()


def _post(client: httpx.Client, url: str, body: dict, retries: int, backoff: float) -> dict:
    for attempt in range(retries + 1):
        try:
            r = client.post(url, json=body)
        except httpx.TransportError as e:
            problem = f"{type(e).__name__}: {e}"
        else:
            if r.status_code == 200:
                return r.json()
            problem = f"HTTP {r.status_code}: {r.text[:300]}"
            if r.status_code not in RETRY_STATUS:
                raise EndpointError(f"embedding endpoint {url} refused model {body['model']!r}: {problem}")
        if attempt < retries:
            time.sleep(backoff * 2**attempt)
    raise EndpointError(f"embedding endpoint {url} failed {retries + 1} times; last: {problem}")


def encode_endpoint(texts: list[str], *, model: str, batch_size: int, dimensions: int | None = None) -> np.ndarray:
    """Embed ``texts`` as float32 rows with the configured OpenAI-compatible endpoint."""
    url, key = endpoint()
    s = get_settings()
    rows: list[np.ndarray] = []
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(headers=headers, timeout=s.text_endpoint_timeout) as client:
        for i in range(0, len(texts), batch_size):
            part = texts[i : i + batch_size]
            body: dict = {"model": model, "input": part, "encoding_format": "float"}
            if dimensions is not None:
                body["dimensions"] = dimensions
            answer = _post(client, url, body, s.text_endpoint_retries, s.text_endpoint_backoff)
            try:
                data = sorted(answer["data"], key=lambda d: d["index"])
                values = np.asarray([d["embedding"] for d in data], dtype=np.float32)
            except (KeyError, TypeError, ValueError) as e:
                raise EndpointError(
                    f"embedding endpoint {url}: unexpected answer ({e!r}); expected OpenAI's "
                    "{'data': [{'index', 'embedding'}, ...]}"
                ) from e
            if values.ndim != 2 or len(values) != len(part):
                raise EndpointError(
                    f"embedding endpoint {url} returned {values.shape[0]} vectors for {len(part)} texts"
                )
            rows.append(values)
    if not rows:
        return np.zeros((0, 0), dtype=np.float32)
    if len({r.shape[1] for r in rows}) > 1:
        raise EndpointError(
            f"embedding endpoint {url} returned vectors of different sizes {sorted({r.shape[1] for r in rows})}"
        )
    return np.concatenate(rows)
