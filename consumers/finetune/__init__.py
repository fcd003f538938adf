"""Fine-tuning evaluators: In-Silico KO and Indexing with LoRA over cell models (dense, Geneformer, scGPT),
and the STRING GNN end to end."""

from pertstore.consumers.finetune._gnn import GNNFinetuneSettings, GNNRegressor, gnn_finetune_predict
from pertstore.consumers.finetune._inputs import DenseInputs, TokenInputs, cell_inputs, isko_input
from pertstore.consumers.finetune._model import (
    HEADS,
    MODES,
    CellModel,
    FineTuner,
    FinetuneSettings,
    cell_model,
    finetune_predict,
    load_adapter,
    lora_model,
    select_learning_rate,
)
from pertstore.consumers.finetune._run import EVALUATORS, run_finetune

__all__ = [
    "CellModel",
    "DenseInputs",
    "EVALUATORS",
    "HEADS",
    "MODES",
    "TokenInputs",
    "FineTuner",
    "FinetuneSettings",
    "cell_inputs",
    "cell_model",
    "GNNFinetuneSettings",
    "GNNRegressor",
    "finetune_predict",
    "gnn_finetune_predict",
    "isko_input",
    "load_adapter",
    "lora_model",
    "run_finetune",
    "select_learning_rate",
]
