"""The catalog's DuckDB schema, as an ordered list of migrations.

Each migration runs once, in a transaction, and records its number in ``schema_version``.
Add a migration at the end of :data:`MIGRATIONS`; never edit a released one.
"""

from __future__ import annotations

import duckdb

MIGRATIONS: list[str] = [
    # 1: sets, tags, entities and coverage
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
]


def first(result: duckdb.DuckDBPyConnection) -> tuple | None:
    """The first row of a result, fetched completely (DuckDB refuses new work on a half-read result)."""
    rows = result.fetchall()
    return rows[0] if rows else None


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)").fetchall()
    row = first(con.execute("SELECT max(version) FROM schema_version"))
    return int(row[0] or 0)


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Apply the migrations this catalog lacks; returns the schema version now in force."""
    have = current_version(con)
    for number, sql in enumerate(MIGRATIONS[have:], start=have + 1):
        con.execute("BEGIN TRANSACTION").fetchall()
        try:
            con.execute(sql).fetchall()
            con.execute("INSERT INTO schema_version VALUES (?, now())", [number]).fetchall()
            con.execute("COMMIT").fetchall()
        except Exception:
            con.execute("ROLLBACK").fetchall()
            raise
    return len(MIGRATIONS)
