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

__all__ = ["HEADS", "MODES", "FineTuner", "FinetuneSettings", "finetune_predict", "isko_input", "lora_model"]
