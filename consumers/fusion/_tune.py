"""Optuna search of the fusion model (depth, learning rate, the context-injection toggle), resumable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pertstore.consumers.fusion._model import FusionConfig
from pertstore.consumers.fusion._train import FusionInputs, FusionPredictor

from pertstore.errors import InvalidInputError, NotFoundError

#: The search space: encoder depth, learning rate (log) and whether the cell line is added to every
#: token (the reference's ``add_cell_line_to_tokens``) or injected the base model's other way.
DEPTH = (1, 8)
LR = (1e-5, 1e-2)
N_TRIALS = 100


def _injection_choices(base: FusionConfig) -> list[str]:
    return ["add", base.context_injection if base.context_injection != "add" else "token"]


def _url(storage: str | Path) -> str:
    return str(storage) if "://" in str(storage) else f"sqlite:///{Path(storage).resolve()}"


def tune(
    x: FusionInputs,
    y: np.ndarray,
    *,
    groups=None,
    base: FusionConfig | None = None,
    n_trials: int = N_TRIALS,
    storage: str | Path | None = None,
    study_name: str = "fusion",
    seed: int = 0,
    progress=None,
) -> dict:
    """Search depth, learning rate and context injection; each trial scores its best validation loss.

    With ``storage`` (a SQLite path or an Optuna storage URL) the study is kept with ``base`` and a
    second call continues it up to ``n_trials`` finished trials. Returns the best parameters.
    """
    import optuna

    base = base or FusionConfig()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name,
        storage=None if storage is None else _url(storage),
        load_if_exists=True,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
    )
    study.set_user_attr("base", base.model_dump())

    def objective(trial: optuna.Trial) -> float:
        config = base.model_copy(
            update={
                "depth": trial.suggest_int("depth", *DEPTH),
                "lr": trial.suggest_float("lr", *LR, log=True),
                "context_injection": trial.suggest_categorical("context_injection", _injection_choices(base)),
            }
        )
        loss = FusionPredictor(config).fit(x, y, groups=groups).best_val_loss
        if progress is not None:
            progress(trial.number, loss)
        return loss

    remaining = n_trials - len([t for t in study.trials if t.state.is_finished()])
    if remaining > 0:
        study.optimize(objective, n_trials=remaining)
    return dict(study.best_params)


def stored_best(storage: str | Path, study_name: str) -> tuple[FusionConfig, dict]:
    """The best configuration of a stored study (its base with the best trial's parameters) and
    ``{study, trial, val_loss, n_trials}``."""
    import optuna

    if "://" not in str(storage) and not Path(storage).exists():
        raise NotFoundError(f"no fusion study {study_name!r}: run `pertstore fusion tune` first")
    try:
        study = optuna.load_study(study_name=study_name, storage=_url(storage))
    except KeyError:
        raise NotFoundError(f"no fusion study {study_name!r}: run `pertstore fusion tune` first") from None
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise InvalidInputError(f"fusion study {study_name!r} has no finished trial yet")
    best = study.best_trial
    config = FusionConfig(**{**study.user_attrs["base"], **best.params})
    return config, {"study": study_name, "trial": best.number, "val_loss": best.value, "n_trials": len(done)}
