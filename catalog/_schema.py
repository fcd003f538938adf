"""The catalog's DuckDB schema, as an ordered list of migrations.

Each migration has a unique name, runs once, in a transaction, and records its name in
``schema_migrations``. Add a migration at the end of :data:`MIGRATIONS` under a new name; never
edit a released one. Names (not positions) identify migrations, so features developed side by
side each add their own without renumbering.
"""

from __future__ import annotations

import duckdb

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_sets",
        """
    CREATE TABLE sources (
        source      VARCHAR PRIMARY KEY,
        kind        VARCHAR NOT NULL,
        dim         INTEGER NOT NULL,
        created_at  TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE sets (
        source      VARCHAR NOT NULL,
        version     VARCHAR NOT NULL,
        kind        VARCHAR NOT NULL,
        context     VARCHAR NOT NULL,
        dim         INTEGER NOT NULL,
        n_rows      INTEGER NOT NULL,
        chunk_rows  INTEGER NOT NULL,
        producer    VARCHAR NOT NULL,
        recipe      JSON NOT NULL,
        checksum    VARCHAR NOT NULL,
        n_failed    INTEGER NOT NULL,
        path        VARCHAR NOT NULL,
        created_at  TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (source, version)
    );
    CREATE TABLE tags (
        source      VARCHAR NOT NULL,
        context     VARCHAR NOT NULL,
        tag         VARCHAR NOT NULL,
        version     VARCHAR NOT NULL,
        updated_at  TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (source, context, tag)
    );
    CREATE TABLE entities (
        entity_id   VARCHAR NOT NULL,
        kind        VARCHAR NOT NULL,
        label       VARCHAR NOT NULL,
        description VARCHAR NOT NULL,
        PRIMARY KEY (kind, entity_id)
    );
    CREATE TABLE aliases (
        kind        VARCHAR NOT NULL,
        key         VARCHAR NOT NULL,
        namespace   VARCHAR NOT NULL,
        priority    INTEGER NOT NULL,
        entity_id   VARCHAR NOT NULL
    );
    CREATE INDEX aliases_key ON aliases (kind, key);
    CREATE TABLE set_entities (
        source      VARCHAR NOT NULL,
        version     VARCHAR NOT NULL,
        entity_id   VARCHAR NOT NULL,
        position    INTEGER NOT NULL
    );
    CREATE VIEW contexts AS
        SELECT context, count(*) AS n_sets, count(DISTINCT source) AS n_sources
        FROM sets WHERE context <> '' GROUP BY context;
    CREATE VIEW coverage AS
        SELECT s.source, s.version, s.context, s.kind, s.n_rows,
               count(e.entity_id) AS n_registered,
               (SELECT count(*) FROM entities x WHERE x.kind = s.kind) AS n_kind
        FROM sets s
        LEFT JOIN set_entities se ON se.source = s.source AND se.version = s.version
        LEFT JOIN entities e ON e.kind = s.kind AND e.entity_id = se.entity_id
        GROUP BY ALL;
    """,
    ),
    (
        "0002_jobs",
        """
    CREATE TABLE jobs (
        job_id        VARCHAR PRIMARY KEY,
        state         VARCHAR NOT NULL,
        submitted_at  TIMESTAMPTZ NOT NULL,
        started_at    TIMESTAMPTZ,
        finished_at   TIMESTAMPTZ,
        updated_at    TIMESTAMPTZ NOT NULL,
        n_recipes     INTEGER NOT NULL,
        items_total   BIGINT NOT NULL,
        items_done    BIGINT NOT NULL,
        items_failed  BIGINT NOT NULL,
        max_failed_fraction DOUBLE NOT NULL,
        scheduler     VARCHAR NOT NULL,
        host          VARCHAR NOT NULL,
        pid           INTEGER NOT NULL,
        error         VARCHAR,
        plan          JSON NOT NULL
    );
    CREATE TABLE job_recipes (
        job_id        VARCHAR NOT NULL,
        position      INTEGER NOT NULL,
        source        VARCHAR NOT NULL,
        version       VARCHAR NOT NULL,
        context       VARCHAR NOT NULL,
        producer      VARCHAR NOT NULL,
        state         VARCHAR NOT NULL,
        items_total   BIGINT NOT NULL,
        items_done    BIGINT NOT NULL,
        items_failed  BIGINT NOT NULL,
        items_reused  BIGINT NOT NULL,
        seconds       DOUBLE NOT NULL,
        error         VARCHAR,
        PRIMARY KEY (job_id, position)
    );
    CREATE TABLE job_failures (
        job_id        VARCHAR NOT NULL,
        source        VARCHAR NOT NULL,
        version       VARCHAR NOT NULL,
        entity_id     VARCHAR NOT NULL,
        reason        VARCHAR NOT NULL
    );
    """,
    ),
    (
        "0003_tasks",
        """
    CREATE TABLE tasks (
        name        VARCHAR NOT NULL,
        version     VARCHAR NOT NULL,
        kind        VARCHAR NOT NULL,
        n_perts     INTEGER NOT NULL,
        n_genes     INTEGER NOT NULL,
        contexts    VARCHAR NOT NULL,
        recipe      JSON NOT NULL,
        path        VARCHAR NOT NULL,
        created_at  TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE VIEW latest_tasks AS
        SELECT * FROM tasks
        QUALIFY row_number() OVER (PARTITION BY name ORDER BY created_at DESC, version) = 1;
    """,
    ),
    (
        "0004_bench",
        """
    CREATE TABLE bench_results (
        task          VARCHAR NOT NULL,
        task_version  VARCHAR NOT NULL,
        context       VARCHAR NOT NULL,
        fold          INTEGER NOT NULL,
        set           VARCHAR NOT NULL,
        set_version   VARCHAR NOT NULL,
        evaluator     VARCHAR NOT NULL,
        metric        VARCHAR NOT NULL,
        value         DOUBLE,
        chosen        VARCHAR NOT NULL,
        coverage      DOUBLE,
        seconds       DOUBLE NOT NULL
    );
    CREATE TABLE bench_errors (
        task          VARCHAR NOT NULL,
        task_version  VARCHAR NOT NULL,
        context       VARCHAR NOT NULL,
        fold          INTEGER NOT NULL,
        set           VARCHAR NOT NULL,
        evaluator     VARCHAR NOT NULL,
        pert_id       VARCHAR NOT NULL,
        l2            DOUBLE NOT NULL
    );
    """,
    ),
    (
        "0005_bench_coverage",
        """
    ALTER TABLE bench_results ADD COLUMN n_test INTEGER;
    ALTER TABLE bench_results ADD COLUMN n_test_covered INTEGER;
    ALTER TABLE bench_results ADD COLUMN n_train INTEGER;
    ALTER TABLE bench_results ADD COLUMN n_train_covered INTEGER;
    """,
    ),
    # per-perturbation DEG scores for the report's paired tests: LFC rows fill l2 (f1 NULL), DEG rows f1 (l2 NULL)
    (
        "0006_bench_errors_f1",
        """
    ALTER TABLE bench_errors ADD COLUMN f1 DOUBLE;
    ALTER TABLE bench_errors ALTER COLUMN l2 DROP NOT NULL;
    """,
    ),
]


def first(result: duckdb.DuckDBPyConnection) -> tuple | None:
    """The first row of a result, fetched completely (DuckDB refuses new work on a half-read result)."""
    rows = result.fetchall()
    return rows[0] if rows else None


def applied(con: duckdb.DuckDBPyConnection) -> set[str]:
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMPTZ)"
    ).fetchall()
    return {r[0] for r in con.execute("SELECT name FROM schema_migrations").fetchall()}


def migrate(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply the migrations this catalog lacks; returns the names of all migrations in force."""
    done = applied(con)
    for name, sql in MIGRATIONS:
        if name in done:
            continue
        con.execute("BEGIN TRANSACTION").fetchall()
        try:
            con.execute(sql).fetchall()
            con.execute("INSERT INTO schema_migrations VALUES (?, now())", [name]).fetchall()
            con.execute("COMMIT").fetchall()
        except Exception:
            con.execute("ROLLBACK").fetchall()
            raise
    return [name for name, _ in MIGRATIONS]
