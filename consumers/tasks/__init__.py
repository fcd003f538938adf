"""Perturbation tasks from single-cell data: batch-aware LFC, DEG labels, experimental error, folds.

Read cells with :func:`read_perturbation_data`, compute targets with :func:`lfc`
or :func:`deg`, their error with :func:`experimental_error`, or all of it
(plus folds) with :func:`build_task`; :func:`import_task` reads precomputed
tasks. A :class:`Task` exports to AnnData and round-trips through Zarr v3;
:func:`save_task` / :func:`load_task` / :func:`list_tasks` keep tasks in a
store (``tasks/<name>/<version>``, indexed in the catalog).
"""

from ._bootstrap import ExperimentalError, experimental_error
from ._build import build_per_dose, build_task
from ._deg import deg
from ._folds import make_folds
from ._groups import Targets
from ._import import deg_table_task, import_task
from ._ingest import PerturbationData, read_perturbation_data
from ._lfc import lfc
from ._presets import PRESETS, Preset, get_preset
from ._registry import Tasks, list_tasks, load_task, save_task, task_version
from ._task import Task

__all__ = [
    "PRESETS",
    "ExperimentalError",
    "Preset",
    "PerturbationData",
    "Targets",
    "Task",
    "Tasks",
    "build_per_dose",
    "build_task",
    "deg_table_task",
    "deg",
    "experimental_error",
    "get_preset",
    "import_task",
    "lfc",
    "list_tasks",
    "load_task",
    "make_folds",
    "read_perturbation_data",
    "save_task",
    "task_version",
]
