"""The DuckDB catalog, the entity registry and id resolution."""

from pertstore.catalog._catalog import Catalog
from pertstore.catalog._jobs import JobIndex, RecipeRow
from pertstore.catalog._molecules import (
    merge_registry,
    molecule_registry,
    parse_smiles,
    read_repurposing_hub,
    read_sciplex3,
)
from pertstore.catalog._rebuild import job_record_problems, parse_registry, read_registry, read_tags, rebuild
from pertstore.catalog._registry import Resolution, default_gene_table, ensembl_assignment, gene_registry
from pertstore.catalog._schema import MIGRATIONS, migrate
from pertstore.catalog._states import JobState, RecipeState
from pertstore.catalog._tasks import TaskEntry, TaskIndex

__all__ = [
    "Catalog",
    "JobIndex",
    "JobState",
    "MIGRATIONS",
    "RecipeRow",
    "RecipeState",
    "Resolution",
    "TaskEntry",
    "TaskIndex",
    "default_gene_table",
    "ensembl_assignment",
    "gene_registry",
    "job_record_problems",
    "merge_registry",
    "migrate",
    "molecule_registry",
    "parse_registry",
    "parse_smiles",
    "read_registry",
    "read_repurposing_hub",
    "read_sciplex3",
    "read_tags",
    "rebuild",
]
