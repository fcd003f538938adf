"""Optuna tuning of the fusion model: depth (1-8) and learning rate (1e-5..1e-3, log) on one fold."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pertstore.consumers.fusion._model import FusionConfig
from pertstore.consumers.fusion._train import FusionInputs, FusionPredictor


def tune(x: FusionInputs, y: np.ndarray, *, base: FusionConfig | None = None, n_trials: int = 20,
         storage: str | Path | None = None, study_name: str = "fusion", seed: int = 0) -> dict:
    """Search depth and learning rate, scoring each trial by its best validation loss.

    With ``storage`` (a path to a SQLite file or an Optuna storage URL) the study is kept and a
    second call continues it; trials already run are not repeated. Returns the best parameters.
    """
    import optuna

    base = base or FusionConfig()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = None
    if storage is not None:
        url = str(storage) if "://" in str(storage) else f"sqlite:///{Path(storage).resolve()}"
    study = optuna.create_study(study_name=study_name, storage=url, load_if_exists=True, direction="minimize",
                                sampler=optuna.samplers.TPESampler(seed=seed))

    def objective(trial: "optuna.Trial") -> float:
        config = base.model_copy(update={"depth": trial.suggest_int("depth", 1, 8),
                                         "lr": trial.suggest_float("lr", 1e-5, 1e-3, log=True)})
        return FusionPredictor(config).fit(x, y).best_val_loss

    remaining = n_trials - len([t for t in study.trials if t.state.is_finished()])
    if remaining > 0:
        study.optimize(objective, n_trials=remaining)
    return dict(study.best_params)
