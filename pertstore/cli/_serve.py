"""``pertstore serve``: the REST API over a store (uvicorn)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from pertstore.cli._main import StoreOpt, _open


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(store: StoreOpt = None,
          host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="Port")] = 8000,
          scheduler: Annotated[Optional[str], typer.Option(help="Dask scheduler for submitted jobs")] = None,
          protect_reads: Annotated[bool, typer.Option(help="Require the token for reads too")] = False) -> None:
    """Serve the store over HTTP (/v1, OpenAPI at /openapi.json); writes need PERTSTORE_TOKEN."""
    import uvicorn

    from pertstore.api import create_app

    s = _open(store)
    uvicorn.run(create_app(s, protect_reads=protect_reads, scheduler=scheduler), host=host, port=port,
                log_level="info")
