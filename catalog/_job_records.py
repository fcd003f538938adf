"""Job records kept in the store (``jobs/<job_id>.json``), so a catalog rebuild keeps every job.

The catalog's ``jobs``, ``job_recipes`` and ``job_failures`` rows of one job are written as one JSON
document whenever the job changes state; :func:`restore` puts them back when the catalog is rebuilt.
"""

from __future__ import annotations

import json

import duckdb
import pandas as pd

RECORD_ENCODING = {"encoding-type": "pertstore-job-record", "encoding-version": "0.1.0"}
_TABLES = ("jobs", "job_recipes", "job_failures")


def export(con: duckdb.DuckDBPyConnection, job_id: str) -> bytes:
    """The catalog's rows of job ``job_id`` as one JSON document."""
    doc: dict = dict(RECORD_ENCODING)
    for table in _TABLES:
        rows = con.execute(f"SELECT * FROM {table} WHERE job_id = ?", [job_id]).df()
        doc[table] = json.loads(rows.to_json(orient="records", date_format="iso", date_unit="us"))
    return json.dumps(doc, separators=(",", ":")).encode()


def check(raw: bytes, where: str) -> dict:
    """The record's document; ``ValueError`` naming ``where`` when it is not a readable job record."""
    try:
        doc = json.loads(raw)
        if (
            not isinstance(doc, dict)
            or doc.get("encoding-type") != RECORD_ENCODING["encoding-type"]
            or not doc.get("jobs")
            or "job_id" not in doc["jobs"][0]
        ):
            raise ValueError("not a pertstore job record")
    except (ValueError, TypeError, IndexError, KeyError) as e:
        raise ValueError(f"{where}: job record not restored ({e})") from e
    return doc


def restore(con: duckdb.DuckDBPyConnection, raw: bytes, where: str) -> str:
    """Insert a job record's rows, replacing the job's rows if any (call within a transaction);
    returns the job id. Raises ``ValueError`` naming ``where`` when the record cannot be read."""
    doc = check(raw, where)
    try:
        job_id = str(doc["jobs"][0]["job_id"])
        for table in _TABLES:
            con.execute(f"DELETE FROM {table} WHERE job_id = ?", [job_id]).fetchall()
            rows = pd.DataFrame(doc.get(table) or [])
            if rows.empty:
                continue
            columns = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
            con.register("_job_rows", rows.reindex(columns=columns))
            try:
                con.execute(f"INSERT INTO {table} SELECT * FROM _job_rows").fetchall()
            finally:
                con.unregister("_job_rows")
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, duckdb.Error) as e:
        raise ValueError(f"{where}: job record not restored ({e})") from e
    return job_id
