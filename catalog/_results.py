"""The catalog's benchmark results (``bench_results``, ``bench_errors``), kept in the store too.

Each save writes its rows to ``results/<task>/<task_version>/<stem>.results.parquet`` (and
``.errors.parquet``) before indexing them, so a catalog rebuild replays every save in order.
"""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pandas as pd
from pertstore.store import RESULTS_PREFIX, Storage, results_key

if TYPE_CHECKING:
    from pertstore.catalog._catalog import Catalog

RESULT_COLUMNS = [
    "task",
    "task_version",
    "context",
    "fold",
    "set",
    "set_version",
    "evaluator",
    "metric",
    "value",
    "chosen",
    "coverage",
    "seconds",
    "n_test",
    "n_test_covered",
    "n_train",
    "n_train_covered",
]
ERROR_COLUMNS = ["task", "task_version", "context", "fold", "set", "evaluator", "pert_id", "l2", "f1"]
"""Per-perturbation scores: LFC rows fill ``l2`` (``f1`` empty), DEG rows ``f1`` (``l2`` empty)."""


class ResultIndex:
    """Save and read benchmark results (``catalog.results``)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def rows(self, task: str | None = None) -> pd.DataFrame:
        """Every result row (of ``task``)."""
        sql = (
            "SELECT * FROM bench_results"
            + (" WHERE task = ?" if task else "")
            + " ORDER BY task, context, set, evaluator, fold, metric"
        )
        return self.catalog.query(sql, [task] if task else [])

    def errors(self, tasks: list[str]) -> pd.DataFrame:
        """Per-perturbation scores of ``tasks``."""
        if not tasks:
            return pd.DataFrame(columns=ERROR_COLUMNS)
        marks = ", ".join("?" for _ in tasks)
        return self.catalog.query(f"SELECT * FROM bench_errors WHERE task IN ({marks})", list(tasks))

    def done(self, task: str, version: str) -> set[tuple]:
        """``(context, fold, set, evaluator)`` already scored on a task version (a rerun skips them)."""
        df = self.catalog.query(
            "SELECT DISTINCT context, fold, set, evaluator FROM bench_results WHERE task = ? AND task_version = ?",
            [task, version],
        )
        return set(map(tuple, df.itertuples(index=False, name=None)))

    def save(self, storage: Storage, results: pd.DataFrame, errors: pd.DataFrame) -> None:
        """Keep result rows and per-perturbation scores in the store, then index them; the scores of a
        run computed again replace its earlier ones."""
        if results.empty:
            return
        results, errors = _typed_results(results), _typed_errors(errors)
        stem = f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"
        for (task, version), rows in results.groupby(["task", "task_version"], sort=False):
            key = results_key(str(task), str(version), stem)
            storage.write_bytes(f"{key}.results.parquet", _parquet(rows))
            mine = errors[(errors.task == task) & (errors.task_version == version)]
            if not mine.empty:
                storage.write_bytes(f"{key}.errors.parquet", _parquet(mine))
        with self.catalog.transaction() as con:
            _insert(con, results, errors)

    def reindex(self, storage: Storage) -> tuple[int, list[str]]:
        """Replay every save kept in ``storage``; returns the result rows indexed and one message per
        file skipped."""
        keys = sorted(
            (k for k in storage.walk(RESULTS_PREFIX) if k.endswith(".results.parquet")),
            key=lambda k: k.rsplit("/", 1)[-1],
        )
        problems, n = [], 0
        with self.catalog.transaction() as con:
            con.execute("DELETE FROM bench_results").fetchall()
            con.execute("DELETE FROM bench_errors").fetchall()
            for key in keys:
                errors_key = key.replace(".results.parquet", ".errors.parquet")
                try:
                    results = _typed_results(pd.read_parquet(io.BytesIO(storage.read_bytes(key))))
                    errors = (
                        _typed_errors(pd.read_parquet(io.BytesIO(storage.read_bytes(errors_key))))
                        if storage.exists(errors_key)
                        else _typed_errors(pd.DataFrame())
                    )
                except Exception as e:  # noqa: BLE001 - any unreadable file is reported and skipped
                    problems.append(f"{key}: results not restored ({type(e).__name__}: {e})")
                    continue
                _insert(con, results, errors)
                n += len(results)
        return n, problems


def _typed_results(results: pd.DataFrame) -> pd.DataFrame:
    return results.reindex(columns=RESULT_COLUMNS).astype({c: "Int64" for c in RESULT_COLUMNS[-4:]})


def _typed_errors(errors: pd.DataFrame) -> pd.DataFrame:
    return errors.reindex(columns=ERROR_COLUMNS).astype({"l2": "float64", "f1": "float64"})


def _parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def _insert(con, results: pd.DataFrame, errors: pd.DataFrame) -> None:
    """Index rows; a run scored again (same task version, context, fold, set, evaluator) replaces its rows."""
    con.register("new_results", results)
    try:
        con.execute(
            "DELETE FROM bench_results r USING (SELECT DISTINCT task, task_version, context, fold, set, "
            "evaluator FROM new_results) k WHERE r.task = k.task AND r.task_version = k.task_version "
            "AND r.context = k.context AND r.fold = k.fold AND r.set = k.set "
            "AND r.evaluator = k.evaluator"
        ).fetchall()
        con.execute("INSERT INTO bench_results SELECT * FROM new_results").fetchall()
    finally:
        con.unregister("new_results")
    if errors.empty:
        return
    con.register("new_errors", errors)
    try:
        con.execute(
            "DELETE FROM bench_errors e USING (SELECT DISTINCT task, task_version, context, fold, set, "
            "evaluator FROM new_errors) k WHERE e.task = k.task AND e.task_version = k.task_version "
            "AND e.context = k.context AND e.fold = k.fold AND e.set = k.set "
            "AND e.evaluator = k.evaluator"
        ).fetchall()
        con.execute(
            "INSERT INTO bench_errors SELECT task, task_version, context, fold, set, evaluator, pert_id, l2, "
            "f1 FROM new_errors"
        ).fetchall()
    finally:
        con.unregister("new_errors")
