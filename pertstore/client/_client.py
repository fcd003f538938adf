"""A thin Python client of the pertstore REST API with the read methods of :class:`pertstore.Store`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import pandas as pd
import xarray as xr

from pertstore._config import get_settings
from pertstore.catalog import Resolution
from pertstore.errors import ConflictError, InvalidInputError, NotFoundError, PertstoreError
from pertstore.producers import TERMINAL, JobProgress, RecipeProgress
from pertstore.store import SetCard, from_arrow

ARROW = "application/vnd.apache.arrow.stream"
_ERRORS = {
    404: NotFoundError,
    409: ConflictError,
    400: InvalidInputError,
    413: InvalidInputError,
    422: InvalidInputError,
}


class Client:
    """A pertstore server at ``url`` (``http://host:8000``); ``token`` defaults to ``$PERTSTORE_TOKEN``.

    ``ls``, ``show``, ``resolve``, ``align`` and ``get`` answer like the same methods of
    :class:`pertstore.Store`; bulk embeddings travel as Arrow. ``jobs`` submits and watches jobs.
    """

    def __init__(
        self, url: str, *, token: str | None = None, timeout: float = 120.0, http: httpx.Client | None = None
    ) -> None:
        self.url = url.rstrip("/")
        token = token if token is not None else get_settings().token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = http or httpx.Client(base_url=self.url, timeout=timeout)
        self._http.headers.update(headers)
        self.jobs = RemoteJobs(self)
        self.release_catalog = False
        """Accepted for symmetry with :class:`pertstore.Store` (the server owns the catalog)."""

    @property
    def uri(self) -> str:
        return self.url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        """Send a request under ``/v1``; a 4xx/5xx answer raises the matching pertstore error."""
        response = self._http.request(method, f"/v1{path}", **kwargs)
        if response.status_code >= 400:
            _raise(response, method, path)
        return response

    def _json(self, method: str, path: str, **kwargs):
        return self.request(method, path, **kwargs).json()

    # ---- catalog -------------------------------------------------------------------------------

    def health(self) -> dict:
        return self._json("GET", "/health")

    def sources(self) -> pd.DataFrame:
        return pd.DataFrame(self._json("GET", "/sources"))

    def contexts(self) -> list[str]:
        return self._json("GET", "/contexts")

    def coverage(self) -> pd.DataFrame:
        return pd.DataFrame(self._json("GET", "/coverage"))

    def ls(self, source: str | None = None, context: str | None = None) -> pd.DataFrame:
        """Published sets, every page fetched."""
        return pd.DataFrame(self._pages("/sets", {"source": source, "context": context}))

    def recipes(self, source: str | None = None, producer: str | None = None) -> pd.DataFrame:
        return pd.DataFrame(self._pages("/recipes", {"source": source, "producer": producer}))

    def tags(self, source: str | None = None) -> pd.DataFrame:
        return pd.DataFrame(self._json("GET", "/tags", params=_drop_none({"source": source})))

    def _pages(self, path: str, params: dict, limit: int = 1000) -> list[dict]:
        items, offset = [], 0
        while True:
            page = self._json("GET", path, params=_drop_none({**params, "offset": offset, "limit": limit}))
            items += page["items"]
            offset += limit
            if offset >= page["total"]:
                return items

    def show(
        self, source: str, *, context: str | None = None, version: str | None = None, tag: str | None = None
    ) -> SetCard:
        """The card of one set."""
        params = _drop_none({"context": context, "version": version, "tag": tag})
        return SetCard.model_validate(self._json("GET", f"/sets/{source}", params=params))

    def tag(self, source: str, version: str, tag: str) -> None:
        """Point ``tag`` of ``source`` at ``version`` (needs the token)."""
        self.request("PUT", f"/sets/{source}/tags/{tag}", json={"version": version})

    def import_file(
        self,
        path: str | Path,
        *,
        source: str,
        kind: str = "gene",
        context: str = "",
        field: str | None = None,
        id_col: str | None = None,
    ) -> SetCard:
        """Upload an embedding file (h5ad, npz, parquet, csv) as a new set (needs the token)."""
        path = Path(path)
        params = _drop_none(
            {
                "source": source,
                "kind": kind,
                "context": context,
                "format": path.suffix.lstrip("."),
                "field": field,
                "id_col": id_col,
            }
        )
        doc = self._json(
            "POST",
            "/import",
            params=params,
            content=path.read_bytes(),
            headers={"content-type": "application/octet-stream"},
        )
        return SetCard.model_validate(doc)

    # ---- entities and embeddings ---------------------------------------------------------------

    def resolve(self, ids: Sequence[str], kind: str = "gene") -> Resolution:
        doc = self._json("POST", "/resolve", json={"ids": list(ids), "kind": kind})
        return Resolution(query=list(ids), ids=doc["ids"], unresolved=doc["unresolved"], ambiguous=doc["ambiguous"])

    def align(
        self,
        sources: str | Sequence[str],
        ids: Sequence[str],
        *,
        context: str | None = None,
        version: str | dict[str, str] | None = None,
        tag: str | dict[str, str] | None = None,
    ) -> xr.Dataset:
        """Embeddings of ``ids`` from several sources, as :meth:`pertstore.Store.align` returns them."""
        sources = [sources] if isinstance(sources, str) else list(sources)
        body = _drop_none(
            {"sources": sources, "ids": [str(i) for i in ids], "context": context, "version": version, "tag": tag}
        )
        return self._arrow("/align", body)

    def get(
        self,
        source: str,
        ids: Sequence[str],
        *,
        context: str | None = None,
        version: str | None = None,
        tag: str | None = None,
    ) -> xr.DataArray:
        """One set's rows for ``ids`` (NaN where absent), dims ``(entity, dim)`` as :meth:`Store.get`."""
        body = _drop_none({"ids": [str(i) for i in ids], "context": context, "version": version, "tag": tag})
        return self._arrow(f"/sets/{source}/embeddings", body)[source].rename({f"{source}_dim": "dim"})

    def _arrow(self, path: str, body: dict) -> xr.Dataset:
        import pyarrow as pa

        with self._http.stream("POST", f"/v1{path}", json=body, headers={"Accept": ARROW}) as response:
            if response.status_code >= 400:
                response.read()
                _raise(response, "POST", path)
            data = b"".join(response.iter_raw(chunk_size=4 * 2**20))
        return from_arrow(pa.ipc.open_stream(pa.py_buffer(data)).read_all())


class RemoteJobs:
    """Jobs of the server's store (``client.jobs``): the same calls as ``store.jobs``."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, recipes: str | Path, *, max_failed_fraction: float = 0.05, scheduler: str | None = None) -> str:
        """Submit a recipes file (path or YAML text); the server runs it (on its own scheduler)."""
        text = Path(recipes).read_text() if isinstance(recipes, Path) or _is_file(recipes) else str(recipes)
        doc = self._client._json("POST", "/jobs", json={"recipes": text, "max_failed_fraction": max_failed_fraction})
        return doc["job_id"]

    def submit(
        self,
        recipes: str | Path,
        *,
        max_failed_fraction: float = 0.05,
        timeout: float | None = None,
        progress: Callable[[JobProgress], None] | None = None,
    ) -> JobProgress:
        """Submit and wait for the job to end."""
        return self.wait(
            self.create(recipes, max_failed_fraction=max_failed_fraction), timeout=timeout, progress=progress
        )

    def run(
        self,
        job_id: str,
        *,
        scheduler: str | None = None,
        n_workers: int | None = None,
        progress: Callable[[JobProgress], None] | None = None,
    ) -> JobProgress:
        """Wait for a submitted job (the server already runs it)."""
        return self.wait(job_id, progress=progress)

    def resume(self, job_id: str, *, progress: Callable[[JobProgress], None] | None = None, **_ignored) -> JobProgress:
        self._client.request("POST", f"/jobs/{job_id}/resume")
        return self.wait(job_id, progress=progress)

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll: float = 0.5,
        progress: Callable[[JobProgress], None] | None = None,
    ) -> JobProgress:
        """Poll the job until it is done, failed or cancelled."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.progress(job_id)
            if progress is not None:
                progress(state)
            if state.state in TERMINAL:
                return state
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {state.state} after {timeout} s")
            time.sleep(poll)

    def progress(self, job_id: str) -> JobProgress:
        st = self._client._json("GET", f"/jobs/{job_id}")
        fields = RecipeProgress.__dataclass_fields__
        recipes = [
            RecipeProgress(**{k: v for k, v in r.items() if k in fields and k != "failed"}) for r in st["recipes"]
        ]
        return JobProgress(job_id, st["state"], recipes)

    def status(self, job_id: str) -> dict:
        st = self._client._json("GET", f"/jobs/{job_id}")
        return {**st, "recipes": pd.DataFrame(st["recipes"])}

    def ls(self) -> pd.DataFrame:
        return pd.DataFrame(self._client._json("GET", "/jobs"))

    def failures(self, job_id: str) -> pd.DataFrame:
        return pd.DataFrame(
            self._client._json("GET", f"/jobs/{job_id}/failures"), columns=["source", "version", "entity_id", "reason"]
        )

    def cancel(self, job_id: str) -> str:
        return self._client._json("POST", f"/jobs/{job_id}/cancel")["state"]


def _raise(response: httpx.Response, method: str, path: str) -> None:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text
    error = _ERRORS.get(response.status_code, PertstoreError)
    raise error(f"{method} {path}: {response.status_code} {detail}")


def _is_file(value: str) -> bool:
    return "\n" not in value and len(value) < 4096 and Path(value).is_file()


def _drop_none(values: dict) -> dict:
    return {k: v for k, v in values.items() if v is not None}
