"""Fusion: an attention model over many embedding sources, trained jointly over contexts."""

from pertstore.consumers.fusion._model import FusionConfig, FusionModel
from pertstore.consumers.fusion._train import FusionInputs, FusionPredictor, inputs_from_store
from pertstore.consumers.fusion._tune import tune

__all__ = ["FusionConfig", "FusionInputs", "FusionModel", "FusionPredictor", "inputs_from_store", "tune"]
