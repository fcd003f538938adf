"""Fine-tuning cell foundation models with LoRA: AIDO.Cell-style In-Silico KO and Indexing evaluators."""

from pertstore.consumers.finetune._model import (
    HEADS,
    MODES,
    FineTuner,
    FinetuneSettings,
    finetune_predict,
    isko_input,
    lora_model,
)
from pertstore.consumers.finetune._run import EVALUATORS, run_finetune

__all__ = [
    "EVALUATORS",
    "HEADS",
    "MODES",
    "FineTuner",
    "FinetuneSettings",
    "finetune_predict",
    "isko_input",
    "lora_model",
    "run_finetune",
]
