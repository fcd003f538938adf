"""What ``bench run`` runs: a task, sets, evaluators and their settings (one :class:`Plan` per run)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pertstore.errors import InvalidInputError

GENERATIVE = ("flow", "diffusion", "schrodinger", "gears")
"""Evaluators trained on the task's cells (:mod:`pertstore.consumers.generative`); they need ``Plan.cells``."""


@dataclass
class Plan:
    """What to run: a task, sets, evaluators, optional subsets of contexts and folds."""

    task: str
    sets: list[str]
    evaluators: list[str] = field(default_factory=lambda: ["knn"])
    contexts: list[str] | None = None
    folds: list[int] | None = None
    controls: bool = True
    coverage: str = "train_mean"
    min_coverage: float = 0.0
    """Refuse a set covering less than this fraction of a context's perturbations (none at all is always refused)."""
    tag: str | None = None
    fusion: dict = field(default_factory=dict)
    """FusionConfig settings for the ``fusion`` evaluator (trained jointly over the contexts)."""
    model_options: dict = field(default_factory=dict)
    """Options of the cell-model evaluators (:mod:`pertstore.consumers.finetune`): ``ft-isko`` / ``ft-indexing``
    (``model_path``, ``cells``, ...), ``ft-gnn`` (``network``, ``pretrain_*``), and of the cross-context
    ``state`` (``cells``, ``state_*``)."""
    setting: str = "perturbation"
    """``perturbation`` (unseen perturbations, the paper's protocol) or a cross-context setting, ``zeroshot`` or
    ``fewshot`` (unseen context; ``contexts`` = the held-out ones; :mod:`pertstore.consumers.crosscontext`)."""
    cells: str | None = None
    """The file the task was built from (checked by SHA-256), for the generative evaluators."""
    generative: dict = field(default_factory=dict)
    """GenerativeConfig settings for the generative evaluators (:data:`GENERATIVE`)."""
    gears: dict = field(default_factory=dict)
    """GearsConfig settings for the ``gears`` evaluator."""

    @classmethod
    def from_yaml(cls, path) -> list[Plan]:
        """A YAML plan: ``runs: [{task, sets, evaluators, contexts, folds}, ...]``."""
        import yaml

        doc = yaml.safe_load(open(path))
        runs = doc.get("runs") if isinstance(doc, dict) else None
        if not runs:
            raise InvalidInputError(f"{path}: expected a list under 'runs:'")
        return [cls(**r) for r in runs]
