"""Perturbation tasks from single-cell data: batch-aware LFC, DEG labels, experimental error, folds.

Read cells with :func:`read_perturbation_data`, compute targets with :func:`lfc`
or :func:`deg`, their error with :func:`experimental_error`, or all of it
(plus folds) with :func:`build_task`; :func:`import_task` reads precomputed
tasks. A :class:`Task` exports to AnnData and round-trips through Zarr v3.
"""

from ._bootstrap import ExperimentalError, experimental_error
from ._deg import deg
from ._folds import make_folds
from ._groups import Targets
from ._ingest import PerturbationData, read_perturbation_data
from ._lfc import lfc
from ._task import Task, build_task, import_task

__all__ = [
    "ExperimentalError",
    "PerturbationData",
    "Targets",
    "Task",
    "build_task",
    "deg",
    "experimental_error",
    "import_task",
    "lfc",
    "make_folds",
    "read_perturbation_data",
]
