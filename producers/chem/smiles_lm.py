"""``smiles-lm``: molecule embeddings from SMILES transformers loaded from a local checkpoint.

ChemBERTa-style encoders (RoBERTa/BERT, any ``AutoModel``) and MolT5-style T5 models (their
encoder, through ``T5EncoderModel``) in Hugging Face format: a directory holding ``config.json``,
the weights and the tokenizer files. Each molecule's SMILES (standardised as the fingerprints are,
then RDKit-canonical) is tokenised, truncated to ``max_length`` tokens (the set records the
parameter; longer molecules keep their first tokens), and pooled from hidden layer ``layer``:
``mean`` over the molecule's tokens (padding and special tokens excluded) or ``cls`` (the first
token; encoders with a leading special token only). Batches are packed by token count
(``max_tokens`` = batch size x padded length), on the GPU when there is one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pertstore.producers._base import Batch, Producer
from pertstore.producers._batches import token_batches
from pertstore.producers.chem.fingerprints import standardise
from pydantic import BaseModel, ConfigDict, Field

from pertstore.errors import InvalidInputError


class SmilesLMParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_path: str
    """Local checkpoint directory (config.json, weights, tokenizer files)."""
    pooling: str = Field("mean", pattern="^(mean|cls)$")
    layer: int = -1
    """Hidden layer to pool (index into the model's hidden states; -1 = last)."""
    max_length: int = Field(512, ge=8)
    max_tokens: int = Field(16384, ge=64)
    """Tokens per batch (rows x padded length)."""
    standardise: bool = True


_MODELS: dict[tuple[str, str], tuple[object, object]] = {}
"""Loaded (tokenizer, model) per checkpoint and device, once per worker process."""


def load_smiles_model(path: str, device: str):
    """The tokenizer and encoder of a local checkpoint (T5 checkpoints load their encoder only)."""
    key = (path, device)
    if key not in _MODELS:
        root = Path(path)
        if not (root / "config.json").is_file():
            raise InvalidInputError(
                f"smiles-lm: {path} is not a model checkpoint directory: it needs config.json, "
                "the weights (model.safetensors or pytorch_model.bin) and the tokenizer files "
                "(tokenizer.json or vocab files), e.g. from `save_pretrained` of ChemBERTa or MolT5"
            )
        from transformers import AutoConfig, AutoModel, AutoTokenizer, T5EncoderModel

        try:
            config = AutoConfig.from_pretrained(path)
            tokenizer = AutoTokenizer.from_pretrained(path)
            cls = T5EncoderModel if config.model_type in ("t5", "mt5", "umt5") else AutoModel
            model = cls.from_pretrained(path).to(device).eval()
        except (OSError, ValueError) as e:
            raise InvalidInputError(f"smiles-lm: cannot load the checkpoint in {path}: {e}") from e
        _MODELS[key] = (tokenizer, model)
    return _MODELS[key]


def embed_smiles(
    smiles: list[str], tokenizer, model, *, pooling: str, layer: int, max_length: int, max_tokens: int, device: str
) -> np.ndarray:
    """Pooled hidden states of each SMILES, in input order."""
    import torch

    encoded = tokenizer(smiles, truncation=True, max_length=max_length, return_special_tokens_mask=True)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    if pooling == "cls" and tokenizer.cls_token_id is None and tokenizer.bos_token_id is None:
        raise InvalidInputError("smiles-lm: pooling 'cls' needs a tokenizer with a leading special token; use 'mean'")
    out = np.zeros(
        (len(smiles), model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.d_model),
        dtype=np.float32,
    )
    for batch in token_batches(lengths, max_tokens):
        features = tokenizer.pad(
            {k: [encoded[k][i] for i in batch] for k in ("input_ids", "attention_mask", "special_tokens_mask")},
            return_tensors="pt",
        )
        with torch.inference_mode():
            hidden = model(
                input_ids=features["input_ids"].to(device),
                attention_mask=features["attention_mask"].to(device),
                output_hidden_states=True,
            ).hidden_states[layer]
        if pooling == "cls":
            pooled = hidden[:, 0]
        else:
            keep = (features["attention_mask"].bool() & ~features["special_tokens_mask"].bool()).to(device)
            weights = keep.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        out[batch] = pooled.float().cpu().numpy()
    return out


class SmilesLMProducer(Producer):
    """Embeddings of each molecule's SMILES by a local transformer checkpoint."""

    name = "smiles-lm"
    kind = "molecule"
    Params = SmilesLMParams
    description = "SMILES transformer embeddings (ChemBERTa/RoBERTa, MolT5/T5 encoders) from a local checkpoint"
    chunk_size = 512

    @classmethod
    def libraries(cls) -> dict[str, str]:
        import transformers

        return {"transformers": transformers.__version__}

    def entities(self) -> list[str]:
        _check_dir(self.params.model_path)  # a missing checkpoint fails the recipe before any work
        return self.ctx.registry("molecule")["entity_id"].astype(str).tolist()

    def compute_chunk(self, ids: list[str]) -> Batch:
        from rdkit import Chem

        p = self.params
        tokenizer, model = load_smiles_model(p.model_path, self.ctx.device)
        smiles_of = self.ctx.registry("molecule").set_index("entity_id")["smiles"]
        ok, texts, failed = [], [], {}
        for entity in ids:
            raw = str(smiles_of.get(entity) or "")
            mol = standardise(raw, p.standardise)
            if mol is None or mol.GetNumAtoms() == 0:
                failed[entity] = f"SMILES does not parse: {raw[:80]!r}" if raw else "no SMILES"
                continue
            ok.append(entity)
            texts.append(Chem.MolToSmiles(mol))
        if not ok:
            return Batch.empty(0, failed)
        values = embed_smiles(
            texts,
            tokenizer,
            model,
            pooling=p.pooling,
            layer=p.layer,
            max_length=p.max_length,
            max_tokens=p.max_tokens,
            device=self.ctx.device,
        )
        return Batch(ok, values, failed)


def _check_dir(path: str) -> None:
    if not (Path(path) / "config.json").is_file():
        load_smiles_model(path, "cpu")  # raises the error that says what the directory must hold
