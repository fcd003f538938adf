"""Property-based fuzzing of the OpenAPI document with schemathesis against a running server: never a 5xx."""

from __future__ import annotations

import shutil

import hypothesis.strategies as st
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from servers import api_server

from pertstore import Store

TOKEN = "fuzz-token"


@pytest.fixture(scope="module")
def operations(_template_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz") / "store"
    shutil.copytree(_template_store, root)
    with Store.open(root) as s:
        s.produce("checksum", source="ck", params={"limit": 500, "dim": 4})
    with api_server(str(root), env={"PERTSTORE_TOKEN": TOKEN}) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        yield [op.ok() for op in schema.get_all_operations()]


def test_openapi_fuzzing_never_gives_a_server_error(operations):
    """Valid and invalid bodies, paths and queries for every route, with and without the token: never a 5xx."""
    assert len(operations) >= 15
    strategies = [
        op.as_strategy(mode) for op in operations for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ]
    seen = set()

    @given(case=st.one_of(strategies), authorised=st.booleans())
    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case, authorised):
        headers = {"Authorization": f"Bearer {TOKEN}"} if authorised else {}
        response = case.call(headers=headers, timeout=60)
        seen.add(case.operation.label)
        assert response.status_code < 500, (
            case.method,
            case.path,
            case.path_parameters,
            case.query,
            case.body,
            response.text[:300],
        )

    check()
    assert len(seen) >= 10
