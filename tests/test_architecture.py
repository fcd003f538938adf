"""The import contract of docs/architecture.md, checked on the source: layers only import downwards.

front ends (``pertstore.cli``, ``pertstore.api``, ``pertstore.client``, the demo)
  -> the facade (``pertstore.Store``)
  -> compute (``pertstore.producers``, ``pertstore.consumers``)
  -> data (``pertstore.store``, ``pertstore.catalog``)
  -> core (``pertstore.errors``, ``pertstore._config``, ``pertstore._dask``)

Imports needed only for type hints (under ``if TYPE_CHECKING:``) do not count.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {
    "store": "store",
    "catalog": "catalog",
    "producers": "producers",
    "consumers": "consumers",
    "api": "api",
}
RANK = {"core": 0, "data": 1, "compute": 2, "facade": 3, "front": 4}


def layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "pertstore":
        return None
    head = parts[1] if len(parts) > 1 else ""
    if head in ("errors", "_config", "_dask"):
        return "core"
    if head in ("store", "catalog"):
        return "data"
    if head in ("producers", "consumers"):
        return "compute"
    if head in ("", "_store", "_similarity"):
        return "facade"
    return "front"  # cli, api, client, _demo, testing


def modules() -> list[tuple[str, Path]]:
    found = []
    for package, folder in [("pertstore", "pertstore"), *((f"pertstore.{k}", v) for k, v in PACKAGE_DIRS.items())]:
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("").parts
            found.append((".".join([package, *rel]).removesuffix(".__init__"), path))
    return found


def runtime_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    out = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
    return out


def test_every_layer_imports_only_downwards():
    found = modules()
    assert len(found) > 100  # the scan sees the whole source tree
    upward = []
    for module, path in found:
        mine = layer(module)
        for line, imported in runtime_imports(path):
            theirs = layer(imported)
            if mine is not None and theirs is not None and RANK[theirs] > RANK[mine]:
                upward.append(f"{path.relative_to(ROOT)}:{line}: {mine} imports {theirs} ({imported})")
    assert not upward, "\n".join(upward)


def test_the_contract_catches_an_upward_import(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("from pertstore.consumers.tasks import list_tasks\n")
    assert layer("pertstore.catalog._rebuild") == "data"
    assert [layer(m) for _, m in runtime_imports(bad)] == ["compute"]


SQL = re.compile(
    r"\b(SELECT\s+[\w*(]|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|VIEW))"
)


def test_sql_is_written_only_in_the_catalog():
    """The catalog owns the database: no other package writes SQL (benchmarks and tests may)."""
    found = [
        f"{path.relative_to(ROOT)}"
        for module, path in modules()
        if not module.startswith("pertstore.catalog") and SQL.search(path.read_text())
    ]
    assert not found, found
    assert SQL.search('con.execute("SELECT key FROM aliases")')  # the pattern sees SQL


SUBPACKAGES = ("store", "catalog", "producers", "consumers", "api", "cli", "client")
CORE = {"pertstore._config", "pertstore._dask", "pertstore._store", "pertstore._similarity", "pertstore._demo"}
"""Modules of the root package every layer may name (settings, the Dask factory, the facade for type
hints, and the demo for the CLI)."""


def package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and parts[1] in SUBPACKAGES else "pertstore"


def test_no_private_name_crosses_a_package():
    """A package uses another through the names its ``__init__`` exports, never its private modules."""
    crossing = []
    for module, path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.level == 0
                and node.module.startswith("pertstore.")
            ):
                continue
            if package(node.module) == package(module) or node.module in CORE:
                continue
            private_module = any(p.startswith("_") for p in node.module.split(".")[2:])
            private_names = [a.name for a in node.names if a.name.startswith("_")]
            if private_module or private_names:
                crossing.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.module} {private_names or ''}")
    assert not crossing, "\n".join(crossing)
