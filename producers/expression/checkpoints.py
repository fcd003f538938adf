"""The cell-model checkpoints the ``scfm`` producer loads, for consumers that fine-tune them.

Importing this module registers pertstore's model classes with ``transformers.AutoModel``.
"""

from pertstore.producers.expression._fm_adapters import ADAPTERS, load_adapter
from pertstore.producers.expression._fm_models import DenseCellConfig, DenseCellModel, ScGPTConfig, ScGPTModel

__all__ = ["ADAPTERS", "DenseCellConfig", "DenseCellModel", "ScGPTConfig", "ScGPTModel", "load_adapter"]
