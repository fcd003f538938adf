"""The DuckDB catalog, the entity registry and id resolution."""

from pertstore.catalog._catalog import Catalog
from pertstore.catalog._molecules import merge_registry, molecule_registry, read_repurposing_hub, read_sciplex3
from pertstore.catalog._registry import Resolution, default_gene_table, gene_registry
from pertstore.catalog._schema import MIGRATIONS, migrate
from pertstore.catalog._jobs import JobIndex, RecipeRow
from pertstore.catalog._states import JobState, RecipeState
from pertstore.catalog._tasks import TaskEntry, TaskIndex

__all__ = [
    "MIGRATIONS", "Catalog", "JobIndex", "JobState", "RecipeRow", "RecipeState", "Resolution", "TaskEntry", "TaskIndex", "default_gene_table",
    "gene_registry", "merge_registry", "migrate", "molecule_registry", "read_repurposing_hub", "read_sciplex3",
]
