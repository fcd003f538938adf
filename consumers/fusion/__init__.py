"""Fusion: the reference's attention model over many embedding sources, trained jointly over contexts."""

from pertstore.consumers.fusion._data import (
    TaskInputs,
    control_features_from_set,
    control_features_from_table,
    plan_config,
    study_name,
    study_storage,
    task_inputs,
)
from pertstore.consumers.fusion._model import EncoderLayer, FusionConfig, FusionModel
from pertstore.consumers.fusion._train import (
    FusionInputs,
    FusionPredictor,
    class_weights,
    deg_loss,
    inputs_from_store,
    lfc_loss,
    validation_split,
)
from pertstore.consumers.fusion._tune import stored_best, tune

__all__ = [
    "EncoderLayer",
    "FusionConfig",
    "FusionInputs",
    "FusionModel",
    "FusionPredictor",
    "TaskInputs",
    "class_weights",
    "control_features_from_set",
    "control_features_from_table",
    "deg_loss",
    "inputs_from_store",
    "lfc_loss",
    "plan_config",
    "stored_best",
    "study_name",
    "study_storage",
    "task_inputs",
    "tune",
    "validation_split",
]
