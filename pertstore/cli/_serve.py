"""``pertstore serve``: the REST API over a store (uvicorn)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Optional

import typer
from uvicorn.protocols.http.h11_impl import H11Protocol

from pertstore.cli._main import StoreOpt, _open


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol that closes a connection whose request headers are not complete
    ``header_timeout`` seconds after it opened (or after its previous response): a slow client
    dribbling headers cannot hold a connection open."""

    header_timeout: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._header_timer.cancel()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if getattr(self, "_header_timer", None) is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late, self.cycle)

    def _headers_late(self, cycle) -> None:
        if self.cycle is cycle and not self.transport.is_closing():  # no request's headers arrived since
            self.transport.close()


def serve(
    store: StoreOpt = None,
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    scheduler: Annotated[Optional[str], typer.Option(help="Dask scheduler for submitted jobs")] = None,
    protect_reads: Annotated[bool, typer.Option(help="Require the token for reads too")] = False,
    header_timeout: Annotated[
        float,
        typer.Option(min=0.1, help="Seconds a client has to send a request's headers before its connection is closed"),
    ] = 10.0,
) -> None:
    """Serve the store over HTTP (/v1, OpenAPI at /openapi.json); writes need PERTSTORE_TOKEN."""
    import uvicorn

    from pertstore.api import create_app

    s = _open(store)
    protocol = type("Protocol", (HeaderTimeoutProtocol,), {"header_timeout": header_timeout})
    uvicorn.run(
        create_app(s, protect_reads=protect_reads, scheduler=scheduler),
        host=host,
        port=port,
        log_level="info",
        http=protocol,
    )
