"""Input encodings of single-cell foundation models: how a cell becomes the model's tokens.

Every adapter gets a block of cells as normalised counts ``[cells, model genes]`` (CSR, counts
per 10,000 of each cell's total over *all* its genes, columns in the adapter's gene order) and
returns the model's inputs plus, for every token, the model gene it encodes (-1 for special and
padding tokens). The published encodings:

- ``scgpt``: the genes a cell expresses, as vocabulary tokens after a ``<cls>`` token whose value
  is the pad value; values are scGPT's per-cell quantile bins of the expression (``n_bins`` - 1
  edges over the cell's non-zero values, ties split at random as ``scgpt.preprocess.binning``
  does, seeded here); cells expressing more than ``max_length`` - 1 genes keep a seeded random
  sample of them (scGPT's ``DataCollator`` sampling). Quantile bins do not change under log1p or
  per-cell scaling, so counts and log-normalised files give the same tokens.
- ``geneformer``: the rank-value encoding: each gene's normalised count divided by its median over
  Geneformer's corpus, non-zero genes ordered from the highest, the first ``max_length`` kept
  (``<cls>`` ... ``<eos>`` around them when the token dictionary has these, as Geneformer V2).
- ``dense``: every model gene in the model's fixed order, valued ``log1p`` of the normalised count
  (AIDO.Cell-style); genes the file lacks enter as zeros and are not accumulated.
"""

from __future__ import annotations

import json
import pickle
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from pertstore.errors import InvalidInputError


@dataclass
class Encoded:
    """Model inputs for a block of cells and the model gene behind each token."""

    inputs: dict[str, torch.Tensor]
    genes: torch.Tensor
    """``[cells, tokens]`` index into the adapter's genes; -1 for special and padding tokens."""


class CellModelAdapter(ABC):
    """A loaded model with its gene vocabulary and input encoding."""

    name: str
    default_layer: int = -1

    def __init__(self, model, genes: list[str], token_ids: np.ndarray) -> None:
        self.model = model
        self.genes = genes
        """The model's genes (as the checkpoint names them), in the order of :meth:`table` rows."""
        self.token_ids = token_ids
        """The token id (or position) of each gene in the model's embedding table."""
        self.pads: dict[str, float] = {}
        """The value of each model input at a padding token (token encodings)."""

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @abstractmethod
    def encode(self, cp10k: sp.csr_matrix, measured: np.ndarray, rng: np.random.Generator) -> Encoded:
        """Inputs for a block of cells; ``measured[g]`` is False for genes the data lacks."""

    def hidden(self, encoded: Encoded, layer: int) -> torch.Tensor:
        """Hidden states ``[cells, tokens, d]`` of ``layer`` (an index into the model's hidden states)."""
        with torch.inference_mode():
            out = self.model(**encoded.inputs, output_hidden_states=True)
        return out.hidden_states[layer]

    def table(self) -> np.ndarray:
        """The "positional" variant: the model's input embedding of each gene ``[genes, d]``."""
        weight = self.model.get_input_embeddings().weight.detach().float().cpu().numpy()
        return weight[self.token_ids]


def _pad(rows: list[np.ndarray], pad: float, dtype) -> np.ndarray:
    out = np.full((len(rows), max((len(r) for r in rows), default=0)), pad, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def scgpt_bins(values: np.ndarray, n_bins: int, rng: np.random.Generator) -> np.ndarray:
    """scGPT's bins (1 .. n_bins - 1) of a cell's non-zero values, ties split at random."""
    edges = np.quantile(values, np.linspace(0, 1, n_bins - 1))
    left, right = np.digitize(values, edges), np.digitize(values, edges, right=True)
    return np.ceil(rng.random(len(values)) * (right - left) + left).astype(np.int64)


class ScGPTAdapter(CellModelAdapter):
    name = "scgpt"

    def __init__(self, model, vocab: dict[str, int], max_length: int | None) -> None:
        genes = [g for g in vocab if not (g.startswith("<") and g.endswith(">"))]
        super().__init__(model, genes, np.array([vocab[g] for g in genes]))
        if "<cls>" not in vocab:
            raise InvalidInputError("scgpt: vocab.json has no <cls> token")
        self.cls_id = vocab["<cls>"]
        self.max_length = max_length or model.config.max_seq_len
        self.pads = {"input_ids": model.config.pad_token_id, "values": model.config.pad_value, "attention_mask": 0}

    def encode(self, cp10k: sp.csr_matrix, measured: np.ndarray, rng: np.random.Generator) -> Encoded:
        cfg = self.model.config
        ids, values, genes = [], [], []
        for i in range(cp10k.shape[0]):
            row = cp10k.indices[cp10k.indptr[i] : cp10k.indptr[i + 1]]
            vals = np.log1p(cp10k.data[cp10k.indptr[i] : cp10k.indptr[i + 1]])
            keep = vals > 0
            row, vals = row[keep], vals[keep]
            bins = scgpt_bins(vals, cfg.n_bins, rng) if len(vals) else vals.astype(np.int64)
            if len(row) > self.max_length - 1:
                pick = rng.permutation(len(row))[: self.max_length - 1]
                row, bins = row[pick], bins[pick]
            ids.append(np.concatenate([[self.cls_id], self.token_ids[row]]))
            values.append(np.concatenate([[cfg.pad_value], bins]))
            genes.append(np.concatenate([[-1], row]))
        input_ids = torch.from_numpy(_pad(ids, cfg.pad_token_id, np.int64))
        return Encoded(
            {
                "input_ids": input_ids,
                "values": torch.from_numpy(_pad(values, cfg.pad_value, np.float32)),
                "attention_mask": input_ids.new_tensor(_pad([np.ones(len(r)) for r in ids], 0, np.int64)),
            },
            torch.from_numpy(_pad(genes, -1, np.int64)),
        )


class GeneformerAdapter(CellModelAdapter):
    name = "geneformer"
    default_layer = -2  # Geneformer's default: the penultimate layer

    def __init__(self, model, tokens: dict[str, int], medians: dict[str, float], max_length: int | None) -> None:
        genes = [g for g in tokens if not (g.startswith("<") and g.endswith(">")) and medians.get(g, 0) > 0]
        if not genes:
            raise InvalidInputError("geneformer: no gene has both a token and a positive median")
        super().__init__(model, genes, np.array([tokens[g] for g in genes]))
        self.medians = np.array([medians[g] for g in genes], dtype=np.float64)
        self.special = "<cls>" in tokens and "<eos>" in tokens
        self.cls_id, self.eos_id = tokens.get("<cls>"), tokens.get("<eos>")
        self.pad_id = tokens.get("<pad>", 0)
        self.max_length = max_length or int(model.config.max_position_embeddings)
        self.pads = {"input_ids": self.pad_id, "attention_mask": 0}

    def encode(self, cp10k: sp.csr_matrix, measured: np.ndarray, rng: np.random.Generator) -> Encoded:
        room = self.max_length - (2 if self.special else 0)
        ids, genes = [], []
        for i in range(cp10k.shape[0]):
            row = cp10k.indices[cp10k.indptr[i] : cp10k.indptr[i + 1]]
            vals = cp10k.data[cp10k.indptr[i] : cp10k.indptr[i + 1]] / self.medians[row]
            row = row[vals > 0][np.argsort(-vals[vals > 0], kind="stable")][:room]
            tokens, where = self.token_ids[row], row
            if self.special:
                tokens = np.concatenate([[self.cls_id], tokens, [self.eos_id]])
                where = np.concatenate([[-1], row, [-1]])
            ids.append(tokens)
            genes.append(where)
        input_ids = torch.from_numpy(_pad(ids, self.pad_id, np.int64))
        mask = torch.from_numpy(_pad([np.ones(len(r)) for r in ids], 0, np.int64))
        return Encoded({"input_ids": input_ids, "attention_mask": mask}, torch.from_numpy(_pad(genes, -1, np.int64)))


class DenseAdapter(CellModelAdapter):
    name = "dense"

    def __init__(self, model) -> None:
        genes = list(model.config.gene_names)
        super().__init__(model, genes, np.arange(len(genes)))

    def encode(self, cp10k: sp.csr_matrix, measured: np.ndarray, rng: np.random.Generator) -> Encoded:
        values = cp10k.toarray()
        np.log1p(values, out=values)
        where = np.where(measured, np.arange(len(self.genes)), -1)
        genes = np.broadcast_to(where, values.shape).copy()
        return Encoded({"values": torch.from_numpy(values.astype(np.float32))}, torch.from_numpy(genes))


ADAPTERS = ("scgpt", "geneformer", "dense")


def _read_mapping(path: Path, what: str) -> dict:
    """A gene -> value mapping from a pickle (Geneformer's files), JSON or two-column TSV."""
    if not path.is_file():
        raise InvalidInputError(f"geneformer: no {what} file {path}")
    try:
        if path.suffix == ".pkl":
            with path.open("rb") as f:
                found = pickle.load(f)  # Geneformer ships its dictionaries as pickles: trusted local files only
        elif path.suffix == ".json":
            found = json.loads(path.read_text())
        else:
            rows = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
            found = {r[0]: float(r[1]) for r in rows}
    except Exception as e:  # a bad pickle/JSON/TSV raises many types
        raise InvalidInputError(f"geneformer: cannot read the {what} {path}: {e}") from e
    if not isinstance(found, dict) or not found:
        raise InvalidInputError(f"geneformer: {path} is not a non-empty gene -> value mapping")
    return found


def _find(root: Path, given: str | None, pattern: str, what: str) -> Path:
    if given:
        path = Path(given)
        return path if path.is_absolute() else root / path
    hits = sorted(root.glob(pattern))
    if len(hits) != 1:
        raise InvalidInputError(
            f"geneformer: {root} needs exactly one {what} ({pattern}, found {len(hits)}); or name it in the recipe"
        )
    return hits[0]


def load_adapter(
    kind: str,
    model_path: str,
    device: str,
    *,
    max_length: int | None = None,
    token_dictionary: str | None = None,
    gene_medians: str | None = None,
) -> CellModelAdapter:
    """Load the checkpoint in ``model_path`` with its vocabulary, for ``kind``.

    Transformers format (config.json + weights), or for ``scgpt`` also the directory scGPT
    publishes (args.json, vocab.json, best_model.pt). Weights the checkpoint lacks are an error.
    """
    from pertstore.producers.expression import _fm_models
    from transformers import AutoModel

    root = Path(model_path)
    if kind == "scgpt" and not (root / "config.json").is_file() and (root / "best_model.pt").is_file():
        model, vocab = _fm_models.load_scgpt_checkpoint(root)
        return ScGPTAdapter(model.to(device), vocab, max_length)
    if not (root / "config.json").is_file():
        need = {
            "scgpt": "config.json, model.safetensors and vocab.json, or scGPT's own args.json, vocab.json and "
            "best_model.pt",
            "geneformer": "config.json, model.safetensors (or pytorch_model.bin), the token dictionary and the "
            "gene median dictionary (Geneformer's *.pkl files)",
            "dense": "config.json (with gene_names) and model.safetensors",
        }[kind]
        raise InvalidInputError(f"{kind}: {model_path} is not a model checkpoint directory; it needs {need}")
    if kind == "scgpt" and not (root / "vocab.json").is_file():
        raise InvalidInputError(f"scgpt: {model_path} has no vocab.json (scGPT's gene vocabulary)")
    if kind == "geneformer":
        tokens = _read_mapping(
            _find(root, token_dictionary, "token_dictionary*.pkl", "token dictionary"), "token dictionary"
        )
        medians = _read_mapping(
            _find(root, gene_medians, "gene_median_dictionary*.pkl", "gene median dictionary"), "gene median dictionary"
        )
    try:
        model, info = AutoModel.from_pretrained(model_path, output_loading_info=True)
    except (OSError, ValueError) as e:
        raise InvalidInputError(f"{kind}: cannot load the checkpoint in {model_path}: {e}") from e
    missing = sorted(k for k in info["missing_keys"] if not k.startswith("pooler."))  # the pooler is unused
    if missing:
        raise InvalidInputError(f"{kind}: {model_path} lacks weights {missing[:5]}; they would be random")
    model = model.to(device).eval()
    if kind == "scgpt":
        return ScGPTAdapter(model, json.loads((root / "vocab.json").read_text()), max_length)
    if kind == "geneformer":
        return GeneformerAdapter(model, tokens, medians, max_length)
    return DenseAdapter(model)
