"""Generative baselines (the paper's section 4.7): flow matching, DDPM latent diffusion and a Schrodinger bridge
in a PCA latent space of the cells, conditioned on a perturbation's embedding from the store."""

from pertstore.consumers.generative._cells import read_options, task_cells
from pertstore.consumers.generative._config import METHODS, GenerativeConfig
from pertstore.consumers.generative._model import ContextCells, GenerativePredictor, Latent, pseudobulk_lfc
from pertstore.consumers.generative._run import run_generative

__all__ = [
    "METHODS",
    "ContextCells",
    "GenerativeConfig",
    "GenerativePredictor",
    "Latent",
    "pseudobulk_lfc",
    "read_options",
    "run_generative",
    "task_cells",
]
