"""The ``pertstore`` command line: thin commands over :class:`pertstore.Store`."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from pertstore._config import get_settings
from pertstore._store import Store
from pertstore.errors import PertstoreError

app = typer.Typer(
    help="pertstore: an embedding feature store for perturbation-response prediction.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
catalog_app = typer.Typer(help="Catalog maintenance.", no_args_is_help=True)
registry_app = typer.Typer(help="The entity registry (genes, molecules).", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")
app.add_typer(registry_app, name="registry")
console = Console()
err = Console(stderr=True)
OUT_FORMATS = (".npz", ".parquet", ".csv", ".h5ad", ".arrow", ".feather")

StoreOpt = Annotated[
    Optional[str],
    typer.Option(
        "--store", "-s", help="Store URI, or a server's http(s):// URL [default: $PERTSTORE_STORE or ./pertstore-data]"
    ),
]
ContextOpt = Annotated[Optional[str], typer.Option("--context", "-c", help="Context (e.g. a cell line)")]
VersionOpt = Annotated[Optional[str], typer.Option("--version", "-v", help="Set version")]
TagOpt = Annotated[Optional[str], typer.Option("--tag", "-t", help="Tag [default: latest]")]


class Format(StrEnum):
    """How a listing is printed."""

    table = "table"
    tsv = "tsv"
    json = "json"


FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="table (full width when piped), tsv or json")]


def _open(store: str | None):
    """The store at ``store``, or a :class:`~pertstore.client.Client` of the server at an http(s) URL."""
    uri = store or get_settings().store
    if uri.startswith(("http://", "https://")):
        from pertstore.client import Client

        return Client(uri)
    return Store.open(uri)


def _local(store: str | None) -> Store:
    """A local (or object-store) store: for commands a server does not offer."""
    s = _open(store)
    if not isinstance(s, Store):
        s.close()
        raise PertstoreError(f"this command needs the store itself, not a server ({s.uri}); run it where the store is")
    return s


def _table(df: pd.DataFrame, title: str | None = None) -> Table:
    t = Table(title=title, show_lines=False)
    for c in df.columns:
        t.add_column(str(c))
    for row in df.itertuples(index=False):
        t.add_row(*[Text(_cell(v)) for v in row])  # Text: a value's brackets are not read as markup
    return t


def _cell(v) -> str:
    """One value as listed: lists and mappings as JSON, missing values empty, anything else as ``str``."""
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, default=str)
    return "" if v is None or (pd.api.types.is_scalar(v) and pd.isna(v)) else str(v)


def _print_table(table: Table) -> None:
    """Print a rich table: fitted to a terminal, at its full natural width anywhere else (files, CI logs)."""
    if console.is_terminal:
        console.print(table)
        return
    width = Measurement.get(console, console.options.update(width=1_000_000), table).maximum
    Console(file=sys.stdout, width=max(width, 80), no_color=True, highlight=False).print(table)


def _emit(df: pd.DataFrame, fmt: Format = Format.table, title: str | None = None) -> None:
    """Print a listing as a table, TSV (every value as is) or JSON records."""
    if fmt is Format.json:
        sys.stdout.write(
            json.dumps(json.loads(df.to_json(orient="records", date_format="iso", default_handler=str)), indent=2)
            + "\n"
        )
    elif fmt is Format.tsv:
        df.map(_cell).to_csv(sys.stdout, sep="\t", index=False)
    else:
        _print_table(_table(df, title=title))


def _check_out(out: Path | None) -> None:
    """Fail before any work when ``--out`` cannot be written: a missing folder or an unknown format."""
    if out is None:
        return
    if not out.parent.is_dir():
        raise typer.BadParameter(f"folder {out.parent} does not exist (create it first)", param_hint="--out")
    if out.suffix.lower() not in OUT_FORMATS:
        raise typer.BadParameter(
            f"unknown format {out.suffix!r}; use one of {', '.join(OUT_FORMATS)}", param_hint="--out"
        )


def _ids(ids: list[str], ids_file: Path | None) -> list[str]:
    out = list(ids)
    if ids_file is not None:
        out += [line.strip() for line in ids_file.read_text().splitlines() if line.strip()]
    if not out:
        raise typer.BadParameter("give ids as arguments or with --ids-file")
    return out


@app.command()
def init(
    uri: Annotated[Optional[str], typer.Argument(help="Store URI")] = None,
    genes: Annotated[bool, typer.Option(help="Register the vendored human gene table")] = True,
) -> None:
    """Create a store (and register the human genes)."""
    with console.status("creating the store" + (" and registering genes" if genes else "")):
        s = Store.init(uri or get_settings().store, genes=genes)
    with s:
        if genes:
            console.print(f"{s.catalog.n_entities('gene'):,} genes registered")
        console.print(f"store ready at [bold]{s.uri}[/] (catalog {s.catalog_path})")


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="h5ad, npz, parquet or csv file")],
    source: Annotated[str, typer.Option("--source", help="Source name")],
    kind: Annotated[str, typer.Option(help="gene or molecule")] = "gene",
    context: Annotated[str, typer.Option(help="Context, empty for global embeddings")] = "",
    field: Annotated[Optional[str], typer.Option(help="h5ad: X, obsm/KEY or varm/KEY; npz: values array")] = None,
    id_col: Annotated[Optional[str], typer.Option(help="Id column of a parquet/csv file")] = None,
    drop_unresolved: Annotated[bool, typer.Option(help="Skip ids that do not resolve instead of failing")] = False,
    drop_nonfinite: Annotated[bool, typer.Option(help="Skip rows holding NaN/inf instead of failing")] = False,
    tag: Annotated[Optional[list[str]], typer.Option(help="Tags to point at the new set")] = None,
    store: StoreOpt = None,
) -> None:
    """Import embeddings computed elsewhere as a new set."""
    with _local(store) as s, console.status(f"importing {file}"):
        card = s.import_file(
            file,
            source=source,
            kind=kind,
            context=context,
            field=field,
            id_col=id_col,
            drop_unresolved=drop_unresolved,
            drop_nonfinite=drop_nonfinite,
            tags=tag or (),
        )
    console.print(
        f"[green]{card.source}[/] version {card.version}: {card.n_rows:,} x {card.dim}"
        + (f", {len(card.failed)} id(s) skipped" if card.failed else "")
    )


@app.command()
def ls(
    source: Annotated[Optional[str], typer.Argument()] = None,
    context: ContextOpt = None,
    store: StoreOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """List sets."""
    with _open(store) as s:
        df = s.ls(source, context)
    df["created_at"] = df["created_at"].astype(str).str[:19]
    _emit(df, format, title=f"{len(df)} set(s)")


@app.command()
def show(
    source: str,
    context: ContextOpt = None,
    version: VersionOpt = None,
    tag: TagOpt = None,
    store: StoreOpt = None,
    format: Annotated[Format, typer.Option("--format", "-f", help="json, or table/tsv of fields")] = Format.json,
) -> None:
    """Show one set's card."""
    with _open(store) as s:
        card = s.show(source, context=context, version=version, tag=tag)
    attrs = json.loads(json.dumps(card.to_attrs(), default=str))
    if format is Format.json:
        sys.stdout.write(json.dumps(attrs, indent=2) + "\n")
    else:
        _emit(pd.DataFrame({"field": list(attrs), "value": [_cell(v) for v in attrs.values()]}), format)


@app.command()
def align(
    sources: Annotated[list[str], typer.Argument(help="Source names")],
    ids: Annotated[Optional[list[str]], typer.Option("--id", "-i", help="An entity id (repeatable)")] = None,
    ids_file: Annotated[Optional[Path], typer.Option(help="File with one id per line")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Write .npz/.parquet/.csv/.h5ad/.arrow")] = None,
    context: ContextOpt = None,
    tag: TagOpt = None,
    store: StoreOpt = None,
) -> None:
    """Fetch the embeddings of ids from several sources, aligned row by row."""
    from pertstore.store import write_aligned

    _check_out(out)
    with _open(store) as s:
        ds = s.align(sources, _ids(ids or [], ids_file), context=context, tag=tag)
    cov = ds["covered"].values.sum(axis=0)
    t = Table(title=f"{ds.sizes['entity']} ids")
    for c in ("source", "version", "dim", "covered"):
        t.add_column(c)
    for j, src in enumerate(sources):
        t.add_row(src, ds.attrs["versions"][src], str(ds.sizes[f"{src}_dim"]), f"{cov[j]}/{ds.sizes['entity']}")
    _print_table(t)
    if ds.attrs["unresolved"]:
        console.print(f"[yellow]unresolved:[/] {', '.join(ds.attrs['unresolved'][:20])}")
    for q, cands in ds.attrs["ambiguous"].items():
        console.print(f"[yellow]ambiguous:[/] {q} -> {', '.join(cands)}")
    if out is not None:
        console.print(f"wrote {write_aligned(ds, out)}")


@app.command()
def neighbors(
    args: Annotated[
        list[str],
        typer.Argument(
            help="SOURCE and query ids; with --compare: SOURCE_A SOURCE_B [ids, default every shared entity]"
        ),
    ],
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=1000, help="Neighbours per query")] = 20,
    metric: Annotated[str, typer.Option(help="cosine (score: similarity) or euclidean (distance)")] = "cosine",
    method: Annotated[
        str, typer.Option(help="exact, index (approximate HNSW, kept in the store) or auto (exact up to 100,000 rows)")
    ] = "auto",
    compare: Annotated[
        bool, typer.Option("--compare", help="Per entity, the share of its top-k neighbours two sets agree on")
    ] = False,
    restrict_file: Annotated[
        Optional[Path], typer.Option(help="File with one id per line: only these entities are candidates")
    ] = None,
    ids_file: Annotated[Optional[Path], typer.Option(help="File with one query id per line")] = None,
    context: ContextOpt = None,
    tag: TagOpt = None,
    store: StoreOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """Which entities a set places nearest to each query id, or how two sets agree."""
    with _local(store) as s:
        if compare:
            if len(args) < 2:
                raise typer.BadParameter("--compare needs two sources: SOURCE_A SOURCE_B [ids]")
            query = list(args[2:]) + (_ids([], ids_file) if ids_file else [])
            df = s.compare_neighbors(args[0], args[1], query or None, k=k, metric=metric, context=context)
            title = (
                f"top-{k} neighbours shared by {args[0]} and {args[1]} over {df.attrs['n_shared']:,} shared "
                f"entities: mean {df.attrs['mean_overlap']:.3f}"
            )
        else:
            df = s.neighbors(
                args[0],
                _ids(args[1:], ids_file),
                k=k,
                metric=metric,
                context=context,
                tag=tag,
                restrict_to=_ids([], restrict_file) if restrict_file else None,
                method=method,
            )
            title = f"{args[0]} {df.attrs['version']}: {k} nearest by {metric} ({df.attrs['method']})"
    _emit(df, format, title=title)
    if compare and format is not Format.table:
        err.print(title)
    for what in ("unresolved", "missing", "restrict_ignored"):
        if df.attrs.get(what):
            err.print(f"[yellow]{what.replace('_', ' ')}:[/] {', '.join(df.attrs[what][:20])}")
    for q, cands in df.attrs.get("ambiguous", {}).items():
        err.print(f"[yellow]ambiguous:[/] {q} -> {', '.join(cands)}")


@app.command()
def export(
    source: str,
    out: Annotated[Path, typer.Option(help="Write .npz/.parquet/.csv/.h5ad/.arrow")],
    context: ContextOpt = None,
    version: VersionOpt = None,
    tag: TagOpt = None,
    store: StoreOpt = None,
) -> None:
    """Export a whole set to a file."""
    from pertstore.store import write_aligned

    _check_out(out)
    with _local(store) as s:
        ids = s.open_set(source, context=context, version=version, tag=tag).ids
        ds = s.align([source], ids, context=context, version=version, tag=tag)
    console.print(f"wrote {len(ids):,} rows to {write_aligned(ds, out)}")


@app.command()
def tag(source: str, version: str, name: str, store: StoreOpt = None) -> None:
    """Point a tag of a source at a version."""
    with _open(store) as s:
        s.tag(source, version, name)
    console.print(f"{source}:{name} -> {version}")


@app.command()
def resolve(
    ids: Annotated[list[str], typer.Argument()],
    kind: str = "gene",
    store: StoreOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """Resolve ids of any namespace to canonical entity ids."""
    with _open(store) as s:
        res = s.resolve(ids, kind)
    df = pd.DataFrame(
        {
            "query": res.query,
            "entity_id": [i or "" for i in res.ids],
            "status": [
                ("ok" + (f" ({res.rules[q]})" if q in res.rules else ""))
                if i
                else ("ambiguous: " + ",".join(res.ambiguous[q]) if q in res.ambiguous else "unresolved")
                for q, i in zip(res.query, res.ids)
            ],
        }
    )
    _emit(df, format)


@app.command()
def verify(store: StoreOpt = None) -> None:
    """Re-check every set's chunks and checksums; exit 1 if anything is corrupted."""
    with _local(store) as s:
        report = s.verify(progress=True)
    bad = [r for r in report["sets"] if not r.ok]
    for r in bad:
        for p in r.problems:
            err.print(f"[red]{r.key}[/]: {p}")
    for p in report["catalog"]:
        err.print(f"[red]catalog[/]: {p}")
    for k in report["indexed"]:
        console.print(f"indexed {k} (published but not yet in the catalog)")
    if report["staging"]:
        console.print(
            f"{len(report['staging'])} unpublished staging area(s), invisible to readers: "
            + ", ".join(report["staging"][:5])
        )
    n = len(report["sets"])
    if bad or report["catalog"]:
        err.print(f"[red]{len(bad)} of {n} set(s) corrupted[/]")
        raise typer.Exit(1)
    console.print(f"[green]{n} set(s) verified, all clean[/]")


@catalog_app.command("rebuild")
def catalog_rebuild(store: StoreOpt = None) -> None:
    """Recreate the catalog from the store alone."""
    with _local(store) as s:
        counts = s.rebuild_catalog(progress=True)
    problems = counts.pop("problems", [])
    for p in problems:
        err.print(f"[yellow]skipped[/]: {p}")
    console.print(", ".join(f"{v:,} {k}" for k, v in counts.items()))


@registry_app.command("genes")
def registry_genes(
    table: Annotated[Optional[Path], typer.Option(help="Gene table (default: the vendored one)")] = None,
    ensembl: Annotated[
        Optional[Path],
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Ensembl's gene table (ensembl_id, symbol), which settles Ensembl ids several genes "
            "share [default: genes/tss_grch38.tsv.gz of $PERTSTORE_DATA_DIR when there]",
        ),
    ] = None,
    store: StoreOpt = None,
) -> None:
    """Register genes."""
    from pertstore.catalog import ensembl_assignment

    with _local(store) as s:
        n = s.register_genes(
            None if table is None else pd.read_csv(table, sep="\t", dtype=str, keep_default_na=False),
            ensembl=None if ensembl is None else ensembl_assignment(ensembl),
        )
    console.print(f"{n:,} genes registered")


@registry_app.command("molecules")
def registry_molecules(
    table: Annotated[Path, typer.Argument(help="TSV/CSV with name and SMILES columns")],
    name_col: str = "name",
    smiles_col: str = "smiles",
    alias_col: Annotated[Optional[list[str]], typer.Option(help="Extra alias columns")] = None,
    store: StoreOpt = None,
) -> None:
    """Register molecules from a table of names and SMILES."""
    sep = "," if table.suffix == ".csv" else "\t"
    df = pd.read_csv(table, sep=sep, dtype=str, keep_default_na=False)
    with _local(store) as s:
        n, failures = s.register_molecules(df, name_col=name_col, smiles_col=smiles_col, alias_cols=alias_col or ())
    for f in failures:
        err.print(f"[yellow]skipped[/] {table}: {f}")
    console.print(f"{n:,} molecules registered")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where the demo store goes")] = Path("demo-output"),
    data_dir: Annotated[Optional[Path], typer.Option(help="Data directory [default: $PERTSTORE_DATA_DIR]")] = None,
) -> None:
    """Build a store from real data and run an aligned fetch (see the README)."""
    from pertstore._demo import run_demo

    run_demo(out, data_dir or (Path(get_settings().data_dir) if get_settings().data_dir else None), console=console)


#: Command groups that live in their own modules; each defines ``register(app)``.
EXTENSIONS = ("_jobs", "_tasks", "_bench", "_serve", "_fusion")


def _register_extensions() -> None:
    import importlib

    for name in EXTENSIONS:
        try:
            module = importlib.import_module(f"pertstore.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"pertstore.cli.{name}":
                raise
            continue
        module.register(app)


_register_extensions()


def main() -> None:
    try:
        app()
    except PertstoreError as e:
        err.print(f"[red]error:[/] {e}")
        raise SystemExit(2) from None
