"""Liveness and readiness: ``/v1/health`` (always open) and ``/v1/ready`` (the catalog answers)."""

from __future__ import annotations

from fastapi import APIRouter
from pertstore.api._deps import Owner, State
from pertstore.api._models import Health, Ready

router = APIRouter(prefix="/v1", tags=["health"])


@router.get("/health")
def health() -> Health:
    return Health(status="ok")


@router.get("/ready", response_model_exclude_none=True)
def ready(state: State, owner: Owner) -> Ready:
    """Ready once the catalog answers; token holders also see the store's URI."""
    state.store.catalog.ping()
    return Ready(status="ready", store=state.store.uri if owner else None)
