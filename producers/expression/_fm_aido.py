"""AIDO.Cell's gene table, read from its published checkpoint without ``modelgenerator``.

AIDO.Cell (``genbio-ai/AIDO.Cell-3M/10M/100M``, model type ``cellfoundation``) reads every cell as
the same 19,264 genes in a fixed order (``modelgenerator``'s ``OS_scRNA_gene_index.19264.tsv``,
columns ``gene_name`` and ``index``) plus two read-depth tokens; it has no gene tokens, so a
gene's identity is its learned absolute position embedding (``position_embedding``, 19,266 rows).
The paper's ``AIDO.Cell_*_positional`` sets are these rows. ``modelgenerator`` (which runs the
whole model) pins numpy < 2 and transformers 4.38 and cannot be installed beside this package;
the table needs only the weights file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pertstore.errors import InvalidInputError

GENE_LIST = "OS_scRNA_gene_index.19264.tsv"
_KEYS = ("bert.position_embedding.weight", "position_embedding.weight")


def _gene_order(root: Path, gene_list: str | None) -> list[str]:
    path = Path(gene_list) if gene_list else root / GENE_LIST
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise InvalidInputError(
            f"aido-cell: no gene list {path}; AIDO.Cell's gene order is modelgenerator's {GENE_LIST} "
            "(modelgenerator/cell/gene_lists/): copy it into the checkpoint directory or name it as gene_list"
        )
    try:
        table = pd.read_csv(path, sep="\t", dtype={"gene_name": str})
        order = table.sort_values("index")
        index, genes = order["index"].to_numpy(), order["gene_name"].tolist()
    except (KeyError, ValueError, pd.errors.ParserError) as e:
        raise InvalidInputError(f"aido-cell: {path} is not a gene_name/index table: {e}") from e
    if not np.array_equal(index, np.arange(len(genes))):
        raise InvalidInputError(f"aido-cell: {path}: the index column is not 0 .. {len(genes) - 1}")
    return genes


def _position_table(root: Path) -> torch.Tensor:
    if (root / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(root / "model.safetensors"), framework="pt") as f:
            key = next((k for k in _KEYS if k in f.keys()), None)
            table = f.get_tensor(key) if key else None
    elif (root / "pytorch_model.bin").is_file():
        state = torch.load(root / "pytorch_model.bin", map_location="cpu", weights_only=True)
        table = next((state[k] for k in _KEYS if k in state), None)
    else:
        raise InvalidInputError(f"aido-cell: {root} has no model.safetensors or pytorch_model.bin")
    if table is None:
        raise InvalidInputError(f"aido-cell: the weights in {root} have no position embedding ({' or '.join(_KEYS)})")
    return table


def aido_cell_table(model_path: str, gene_list: str | None = None) -> tuple[list[str], np.ndarray]:
    """AIDO.Cell's genes in model order and their position embeddings ``[genes, hidden_size]``."""
    root = Path(model_path)
    if not (root / "config.json").is_file():
        raise InvalidInputError(
            f"aido-cell: {model_path} is not an AIDO.Cell checkpoint directory; it needs config.json, "
            f"model.safetensors and {GENE_LIST}"
        )
    config = json.loads((root / "config.json").read_text())
    if config.get("model_type") != "cellfoundation":
        raise InvalidInputError(
            f"aido-cell: {root}/config.json is model type {config.get('model_type')!r}, not AIDO.Cell's cellfoundation"
        )
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise InvalidInputError(
            f"aido-cell: {root} uses {config['position_embedding_type']!r} positions: no learned gene table"
        )
    genes = _gene_order(root, gene_list)
    table = _position_table(root)
    if table.shape[0] < len(genes) or table.shape[1] != config.get("hidden_size", table.shape[1]):
        raise InvalidInputError(
            f"aido-cell: position embedding {tuple(table.shape)} does not fit {len(genes)} genes x hidden_size "
            f"{config.get('hidden_size')}"
        )
    return genes, table[: len(genes)].float().numpy()
