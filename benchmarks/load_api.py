"""Load test: 32 concurrent clients fetch aligned embeddings while a job publishes a new version.

A bounded asyncio client (httpx) runs ``--clients`` workers against ``pertstore serve`` on loopback
for ``--seconds``. Each request aligns 200 random gene ids from three sets, one of which (``live``)
gets a new version from a job submitted through the API half a second in. Synthetic data (the
``random`` producer). Every answer is checked afterwards against the two versions of ``live``:
rows must equal exactly the version the answer names (old or new, never a mix, never missing).
Prints errors, p50/p99 latency and throughput.

    python benchmarks/load_api.py [--clients 32] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from pertstore.store import from_arrow  # noqa: E402
from servers import api_server  # noqa: E402

from pertstore import Store  # noqa: E402

TOKEN = "load-token"
SOURCES = ["live", "other-a", "other-b"]
NEW_VERSION = (
    "recipes:\n  - {producer: random, source: live, params: {dim: 64, seed: 2, kind_of_ids: protein-coding}}\n"
)


def build(root: Path) -> list[str]:
    with Store.init(root) as store:
        store.register_genes()
        store.produce("random", source="live", params={"dim": 64, "seed": 1, "kind_of_ids": "protein-coding"})
        store.produce("random", source="other-a", params={"dim": 128, "seed": 3, "kind_of_ids": "protein-coding"})
        store.produce("random", source="other-b", params={"dim": 32, "seed": 4, "kind_of_ids": "protein-coding"})
        return [str(i) for i in store.get("live").entity.values]


async def reader(http: httpx.AsyncClient, genes: list[str], seed: int, stop: float, log: list) -> None:
    rng = np.random.default_rng(seed)
    while time.monotonic() < stop:
        ids = [genes[i] for i in rng.choice(len(genes), 200, replace=False)]
        t = time.perf_counter()
        try:
            r = await http.post(
                "/v1/align",
                json={"sources": SOURCES, "ids": ids},
                headers={"Accept": "application/vnd.apache.arrow.stream"},
            )
            ok = r.status_code == 200
            body = r.content if ok else r.text
        except httpx.HTTPError as e:
            ok, body = False, repr(e)
        log.append((time.perf_counter() - t, ok, ids, body))


async def run(url: str, genes: list[str], clients: int, seconds: float) -> tuple[list, float, str]:
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        log: list = []
        start = time.monotonic()
        readers = [asyncio.create_task(reader(http, genes, i, start + seconds, log)) for i in range(clients)]
        await asyncio.sleep(0.5)
        r = await http.post("/v1/jobs", json={"recipes": NEW_VERSION}, headers={"Authorization": f"Bearer {TOKEN}"})
        job = r.json()["job_id"]
        await asyncio.gather(*readers)
        elapsed = time.monotonic() - start
        while (state := (await http.get(f"/v1/jobs/{job}")).json()["state"]) not in ("done", "failed", "cancelled"):
            await asyncio.sleep(0.5)
        return log, elapsed, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        genes = build(root)
        with Store.open(root) as s:
            old = s.show("live").version
        with api_server(str(root), env={"PERTSTORE_TOKEN": TOKEN}) as url:
            log, elapsed, state = asyncio.run(run(url, genes, args.clients, args.seconds))
        with Store.open(root, read_only=True) as s:
            versions = {v: s.get("live", version=v).to_pandas() for v in s.ls("live").version}
    new = next(v for v in versions if v != old)
    errors = [body for _, ok, _, body in log if not ok]
    seen = {old: 0, new: 0}
    mismatched = 0
    for _, ok, ids, body in log:
        if not ok:
            continue
        ds = from_arrow(pa.ipc.open_stream(pa.py_buffer(body)).read_all())
        version = ds.attrs["versions"]["live"]
        seen[version] += 1
        want = versions[version].loc[ds["entity_id"].values].to_numpy()
        if not (ds["covered"].values.all() and np.array_equal(ds["live"].values, want)):
            mismatched += 1
    latencies = sorted(t for t, ok, _, _ in log if ok)
    print(f"{args.clients} clients x {elapsed:.1f} s, job publishing a new version of 'live': {state}")
    print(f"requests: {len(log):,}  errors: {len(errors)}  answers mixing or missing rows: {mismatched}")
    print(f"answers from the old version: {seen[old]:,}, from the new one: {seen[new]:,}")
    print(
        f"latency p50 {statistics.median(latencies) * 1e3:.1f} ms, p99 {latencies[int(0.99 * (len(latencies) - 1))] * 1e3:.1f} ms;"
        f" throughput {len(latencies) / elapsed:.0f} requests/s"
    )
    if errors:
        print("first error:", errors[0][:300])
    if errors or mismatched or state != "done" or not seen[new]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
