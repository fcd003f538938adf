"""What every route depends on: the served store and its settings, and bearer-token auth.

Auth is FastAPI's ``HTTPBearer`` security scheme (declared in ``/openapi.json``): every write needs
the server's token as ``Authorization: Bearer <token>``, compared in constant time and never logged;
reads are open unless the server was started with ``--protect-reads``.
"""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pertstore._store import Store

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="The server's token (PERTSTORE_TOKEN): needed by every write, and by reads "
    "when the server runs with --protect-reads",
)


@dataclass
class ApiState:
    """The served store and how it is served (one per application, in ``app.state.pertstore``)."""

    store: Store
    token: str | None
    protect_reads: bool = False
    scheduler: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Serialises the routes that write to the store."""


def api_state(request: Request) -> ApiState:
    return request.app.state.pertstore


State = Annotated[ApiState, Depends(api_state)]


def token_holder(state: State, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> bool:
    """Whether the request carries the server's token as ``Authorization: Bearer <token>``."""
    return (
        bool(state.token)
        and credentials is not None
        and hmac.compare_digest(credentials.credentials.encode(), state.token.encode())
    )


Owner = Annotated[bool, Depends(token_holder)]


def _check(state: ApiState, owner: bool) -> None:
    if not state.token:
        raise HTTPException(403, "writes are disabled: the server has no token configured (PERTSTORE_TOKEN)")
    if not owner:
        raise HTTPException(
            401,
            "a valid bearer token is required (header 'Authorization: Bearer <token>')",
            headers={"WWW-Authenticate": "Bearer"},
        )


def write_auth(state: State, owner: Owner) -> None:
    """Every write needs the token (403 when the server has none, 401 when it is missing or wrong)."""
    _check(state, owner)


def read_auth(state: State, owner: Owner) -> None:
    """Reads need the token only when the server protects them."""
    if state.protect_reads:
        _check(state, owner)


READS = [Depends(read_auth)]
WRITES = [Depends(write_auth)]
