"""Hardening of `pertstore serve` (issue 23) against a real server process: names cannot escape the store,
bad input gets a 4xx (never a 5xx or a traceback), bodies are capped by the bytes read, readers see no
machine details, tokens need the Bearer scheme, and slow clients are cut off."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import socket
import time

import anndata as ad
import httpx
import numpy as np
import pandas as pd
import pytest
from pertstore.api.app import MAX_BODY
from servers import api_server

from pertstore import Store

TOKEN = "hardening-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IDS = ["TP53", "BRCA1", "EGFR"]


@pytest.fixture(scope="module")
def server(_template_store, tmp_path_factory):
    """A served store holding one set ``ck``; yields ``(url, store root, a scratch folder)``."""
    base = tmp_path_factory.mktemp("hardening")
    root = base / "store"
    shutil.copytree(_template_store, root)
    with Store.open(root) as s:
        s.produce("checksum", source="ck", params={"limit": 50, "dim": 4})
    with api_server(str(root), env={"PERTSTORE_TOKEN": TOKEN}, args=["--header-timeout", "1"]) as url:
        yield url, root, base


def _files(root) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "catalog" not in p.name
    }


def _bad_request(response: httpx.Response) -> str:
    """The detail of a 4xx answer, checked for what must never reach a client."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    text = response.text
    assert "Traceback" not in text and "/tmp" not in text and str(socket.gethostname()) not in text, text
    return text


def _h5ad_bytes(tmp_path) -> bytes:
    path = tmp_path / "ok.h5ad"
    ad.AnnData(np.ones((3, 4), dtype=np.float32), obs=pd.DataFrame(index=IDS)).write_h5ad(path)
    return path.read_bytes()


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_tags_and_sources_cannot_escape_the_store(server):
    """Item 1: a tag like ``../../../sets/...`` (REST tag route, import, job recipes) is refused and nothing
    in or outside the store changes; published sets stay immutable."""
    url, root, base = server
    before = _files(root)
    version = httpx.get(f"{url}/v1/sets/ck").json()["version"]
    escapes = [f"../../../sets/ck/{version}/zarr", "../../../../../x", "..", "a/b"]
    for tag in escapes:
        recipe = (
            f"recipes:\n  - producer: checksum\n    source: ck2\n    params: {{limit: 20, dim: 4}}\n"
            f"    tags: [{json.dumps(tag)}]\n"
        )
        _bad_request(httpx.post(f"{url}/v1/jobs", json={"recipes": recipe}, headers=AUTH, timeout=30))
    for source in ("../../j", "j/../../k"):
        recipe = (
            f"recipes:\n  - producer: checksum\n    source: {json.dumps(source)}\n    params: {{limit: 20, dim: 4}}\n"
        )
        _bad_request(httpx.post(f"{url}/v1/jobs", json={"recipes": recipe}, headers=AUTH, timeout=30))
    for bad in ("..%2F..%2Fx", "nl%0A", "%2E%2E"):
        _bad_request(httpx.put(f"{url}/v1/sets/ck/tags/{bad}", json={"version": version}, headers=AUTH))
    assert not (base / "x.json").exists() and not list(base.glob("*.json"))
    after = _files(root)
    assert {k: v for k, v in after.items() if k.startswith("sets/")} == {
        k: v for k, v in before.items() if k.startswith("sets/")
    }
    assert httpx.post(f"{url}/v1/align", json={"sources": ["ck"], "ids": IDS}).status_code == 200


def test_names_ending_in_a_newline_are_refused(server):
    """Item 2: ``$`` matched before a final newline; every name is now matched whole."""
    url, _, _ = server
    csv = b"id,a,b\nTP53,1,2\nBRCA1,3,4\n"
    for params in ({"source": "rnl\n"}, {"source": "ok", "context": "ctx\n"}):
        detail = _bad_request(
            httpx.post(f"{url}/v1/import", params={**params, "format": "csv"}, content=csv, headers=AUTH)
        )
        assert "must be 1-128 letters" in detail
    version = httpx.get(f"{url}/v1/sets/ck").json()["version"]
    _bad_request(httpx.put(f"{url}/v1/sets/ck/tags/nl%0A", json={"version": version}, headers=AUTH))
    _bad_request(httpx.get(f"{url}/v1/sets/ck", params={"tag": "latest\n"}))
    assert "ok" not in {s["source"] for s in httpx.get(f"{url}/v1/sources").json()}


def test_bad_input_gets_a_4xx_not_a_5xx(server, tmp_path):
    """Item 4: lone surrogates, broken files, wrong formats and path-like names: a 4xx naming the problem."""
    url, root, _ = server
    before = _files(root)
    for route, body in (("align", '{"sources": ["ck"], "ids": ["\\ud800"]}'), ("resolve", '{"ids": ["\\ud800"]}')):
        r = httpx.post(f"{url}/v1/{route}", content=body.encode(), headers={"Content-Type": "application/json"})
        assert "ids" in _bad_request(r)
    good = _h5ad_bytes(tmp_path)
    flipped = bytearray(good)
    for i in range(0, len(flipped), 97):
        flipped[i] ^= 0xFF
    obj = io.BytesIO()
    np.savez(obj, ids=np.array(IDS), values=np.array([[1], "a", None], dtype=object))
    uploads = {
        "h5ad": [good[: len(good) // 2], bytes(flipped), b"garbage" * 100],
        "npz": [b"PK\x03\x04garbage", _npz(ids=np.array(IDS), values=np.array(["a", "b", "c"])), obj.getvalue()],
        "parquet": [b"PAR1garbagePAR1", gzip.compress(b"x" * 100)],
        "csv": [b"\xff\xfe\x00garbage,\x00\n\x00"],
    }
    for fmt, bodies in uploads.items():
        for content in bodies:
            r = httpx.post(f"{url}/v1/import", params={"source": "up", "format": fmt}, content=content, headers=AUTH)
            detail = _bad_request(r)
            assert fmt == "csv" or "upload." in detail, detail
    for params in (
        {"source": "up", "format": "xlsx"},
        {"source": "../../x", "format": "csv"},
        {"source": "up", "context": "../x", "format": "csv"},
    ):
        _bad_request(httpx.post(f"{url}/v1/import", params=params, content=b"id,a\nTP53,1\n", headers=AUTH))
    assert _files(root).keys() == before.keys()


def test_body_cap_counts_the_bytes_read_and_ids_have_a_maximum_length(server):
    """Item 5: a chunked body (no Content-Length) over the cap is refused with 413 as soon as it passes the
    cap; an id longer than the maximum is a 422."""
    url, _, _ = server
    sent = 0

    def chunks():
        nonlocal sent
        head = b'{"sources": ["ck"], "ids": ["'
        yield head
        sent += len(head)
        while sent < 4 * MAX_BODY:
            sent += 2**16
            yield b"A" * 2**16

    try:
        r = httpx.post(f"{url}/v1/align", content=chunks(), headers={"Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 413, r.text[:200]
    except httpx.TransportError:  # the server answered 413 and closed while the client was still sending
        pass
    assert sent < 4 * MAX_BODY, "the server read the whole oversized body"
    r = httpx.post(f"{url}/v1/align", json={"sources": ["ck"], "ids": ["A" * 5_000]})
    assert r.status_code == 422
    r = httpx.post(f"{url}/v1/resolve", json={"ids": ["A" * 5_000]})
    assert r.status_code == 422


def test_readers_see_no_machine_details(server):
    """Item 6: a failed job's error quotes its input file and paths; readers see only the error's kind,
    no host or pid; /v1/ready shows the store path only to token holders; import errors name the upload."""
    url, root, base = server
    secret = base / "secret.tsv"
    secret.write_text("TOPSECRET-alpha\tTOPSECRET-beta\nroot:x:0:0\n")
    recipe = f"recipes:\n  - producer: string-spectral\n    source: leak\n    inputs: {{network: {json.dumps(str(secret))}}}\n"
    job_id = httpx.post(f"{url}/v1/jobs", json={"recipes": recipe}, headers=AUTH, timeout=30).json()["job_id"]
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/v1/jobs/{job_id}", headers=AUTH).json()["state"] not in ("failed", "done"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    owner = httpx.get(f"{url}/v1/jobs/{job_id}", headers=AUTH).json()
    assert owner["state"] == "failed" and "TOPSECRET" in owner["error"]  # the token holder sees everything
    for view in (httpx.get(f"{url}/v1/jobs/{job_id}").text, httpx.get(f"{url}/v1/jobs").text):
        for leak in ("TOPSECRET", str(base), socket.gethostname(), '"pid"', '"host"'):
            assert leak not in view, (leak, view[:500])
    assert "InvalidInputError" in httpx.get(f"{url}/v1/jobs/{job_id}").json()["error"]
    assert str(root) not in httpx.get(f"{url}/v1/ready").text
    assert httpx.get(f"{url}/v1/ready", headers=AUTH).json()["store"] == str(root)


def test_tokens_need_the_bearer_scheme(server):
    """Item 11: a raw token (no ``Bearer``) or another scheme is refused."""
    url, _, _ = server
    version = httpx.get(f"{url}/v1/sets/ck").json()["version"]
    for header in (TOKEN, f"Basic {TOKEN}", f"Bearer{TOKEN}", "Bearer", f"Bearer {TOKEN}x"):
        r = httpx.put(f"{url}/v1/sets/ck/tags/t1", json={"version": version}, headers={"Authorization": header})
        assert r.status_code == 401, header
    assert httpx.put(f"{url}/v1/sets/ck/tags/t1", json={"version": version}, headers=AUTH).status_code == 200


def test_slow_clients_are_cut_off(server):
    """Item 11: a client that does not finish its headers within --header-timeout (1 s here) is disconnected,
    one that does is served."""
    url, _, _ = server
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
        slow.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        assert slow.recv(1024) == b""  # closed by the server, nothing answered
        assert time.monotonic() - started < 4
    with socket.create_connection(("127.0.0.1", port), timeout=5) as ok:
        ok.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ok.recv(1024).startswith(b"HTTP/1.1 200")
