"""Fine-tuning evaluators: AIDO.Cell-style In-Silico KO and Indexing with LoRA, and the STRING GNN end to end."""

from pertstore.consumers.finetune._gnn import GNNFinetuneSettings, GNNRegressor, gnn_finetune_predict
from pertstore.consumers.finetune._model import (
    HEADS,
    MODES,
    FineTuner,
    FinetuneSettings,
    finetune_predict,
    isko_input,
    lora_model,
    select_learning_rate,
)
from pertstore.consumers.finetune._run import EVALUATORS, run_finetune

__all__ = [
    "EVALUATORS",
    "HEADS",
    "MODES",
    "FineTuner",
    "FinetuneSettings",
    "GNNFinetuneSettings",
    "GNNRegressor",
    "finetune_predict",
    "gnn_finetune_predict",
    "isko_input",
    "lora_model",
    "run_finetune",
    "select_learning_rate",
]
