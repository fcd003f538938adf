"""Shared by ``protein-lm`` and ``dna-lm``: local checkpoints, model windows and pooled hidden states.

A sequence is tokenised once without special tokens; its tokens are cut into model windows of at
most ``size`` tokens starting every ``stride`` tokens (the last window ends at the sequence's
end), each window gets the tokenizer's own special tokens around it, and the embedding of the
sequence is the mean of the hidden states of its content tokens over all windows, which is the
window means averaged with weights equal to their lengths. Special tokens and padding never
enter the mean. Windows are packed into batches by token count, on the GPU when there is one.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pertstore.producers._batches import token_batches

from pertstore.errors import InvalidInputError

Dtype = Literal["float32", "float16", "bfloat16"]
T5_TYPES = ("t5", "mt5", "umt5")
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass
class SequenceModel:
    """A loaded checkpoint and what windowing needs to know about it."""

    tokenizer: Any
    model: Any
    prefix: list[int]
    """Special tokens the tokenizer puts before a sequence (e.g. ``<cls>``)."""
    suffix: list[int]
    """Special tokens it puts after one (e.g. ``<eos>``, ``</s>``)."""
    limit: int | None
    """Content tokens per forward pass: the model's positions less the special tokens (None: unknown)."""
    takes_mask: bool
    """Whether the model accepts ``attention_mask`` (padded batches); if not, windows are batched by length."""

    @property
    def is_t5(self) -> bool:
        return self.model.config.model_type in T5_TYPES


_MODELS: dict[tuple, SequenceModel] = {}
"""Loaded models per checkpoint, device and options, once per worker process."""


def lm_libraries() -> dict[str, str]:
    """The versions that could change a language model's numbers."""
    import torch
    import transformers

    return {"transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]}


def check_checkpoint(path: str, who: str, example: str) -> None:
    """Raise, naming what is missing, unless ``path`` holds a config and weights."""
    root = Path(path)
    missing = [] if (root / "config.json").is_file() else ["config.json"]
    if not any((root / name).is_file() for name in WEIGHTS):
        missing.append("the weights (model.safetensors or pytorch_model.bin)")
    if missing:
        raise InvalidInputError(
            f"{who}: {path} is not a model checkpoint directory: it lacks {' and '.join(missing)}; "
            "it needs config.json, the weights and the tokenizer files (tokenizer.json, vocab.txt "
            f"or spiece.model), e.g. from `save_pretrained` of {example}"
        )


def load_model(
    path: str, device: str, *, who: str, example: str, dtype: Dtype = "float32", trust_remote_code: bool = False
) -> SequenceModel:
    """The tokenizer and encoder of a local checkpoint (T5 checkpoints load their encoder only)."""
    key = (path, device, dtype, trust_remote_code)
    if key not in _MODELS:
        check_checkpoint(path, who, example)
        import torch
        from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer, T5EncoderModel

        options = {"trust_remote_code": trust_remote_code}
        try:
            config = AutoConfig.from_pretrained(path, **options)
            tokenizer = AutoTokenizer.from_pretrained(path, **options)
            options["dtype"] = getattr(torch, dtype)
            if config.model_type in T5_TYPES:
                model = T5EncoderModel.from_pretrained(path, **options)
            else:
                try:
                    model = AutoModel.from_pretrained(path, **options)
                except ValueError:  # remote code that registers only a masked-LM class (Nucleotide Transformer v2)
                    model = AutoModelForMaskedLM.from_pretrained(path, **options)
        except (OSError, ValueError) as e:
            raise InvalidInputError(f"{who}: cannot load the checkpoint in {path}: {e}") from e
        prefix, suffix = _special_frame(tokenizer, who)
        limit = _position_limit(config, tokenizer)
        _MODELS[key] = SequenceModel(
            tokenizer,
            model.to(device).eval(),
            prefix,
            suffix,
            None if limit is None else limit - len(prefix) - len(suffix),
            "attention_mask" in inspect.signature(model.forward).parameters,
        )
    return _MODELS[key]


def _special_frame(tokenizer, who: str) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer adds before and after a sequence."""
    bare = tokenizer("A", add_special_tokens=False)["input_ids"]
    full = tokenizer("A")["input_ids"]
    for k in range(len(full) - len(bare) + 1):
        if full[k : k + len(bare)] == bare:
            return full[:k], full[k + len(bare) :]
    raise InvalidInputError(f"{who}: the tokenizer's special tokens do not frame the sequence ({bare} -> {full})")


def _position_limit(config, tokenizer) -> int | None:
    """Tokens one forward pass may hold, special tokens included."""
    if config.model_type == "esm":  # positions count from the padding index + 1 (ESM2: 1,024 tokens)
        return config.max_position_embeddings - 2
    for name in ("max_position_embeddings", "n_positions", "max_seq_len"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    length = tokenizer.model_max_length
    return int(length) if length < 1e9 else None  # transformers' "no limit" sentinel is 1e30


def window_size(sm: SequenceModel, requested: int | None, *, who: str, param: str) -> int:
    """Content tokens per model window: ``requested``, else the model's limit."""
    if requested is not None:
        return requested
    if sm.limit is None:
        raise InvalidInputError(f"{who}: the checkpoint states no length limit (max_position_embeddings); set {param}")
    if sm.limit < 1:
        raise InvalidInputError(f"{who}: the model's length limit leaves no room besides its special tokens")
    return sm.limit


def windows(n: int, size: int, stride: int) -> list[tuple[int, int]]:
    """``[start, end)`` windows of at most ``size`` tokens, starting every ``stride``, until one reaches ``n``."""
    if not 1 <= stride <= size:
        raise InvalidInputError(f"stride {stride} must be between 1 and the window size {size}")
    out, start = [], 0
    while True:
        out.append((start, min(start + size, n)))
        if start + size >= n:
            return out
        start += stride


def _batches(lengths: list[int], max_tokens: int, padded: bool) -> list[list[int]]:
    if padded:
        return token_batches(lengths, max_tokens)
    by_length: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        by_length.setdefault(n, []).append(i)
    return [
        [group[j] for j in batch]
        for group in by_length.values()
        for batch in token_batches([lengths[i] for i in group], max_tokens)
    ]


def embed_tokens(
    sm: SequenceModel, tokens: list[list[int]], *, size: int, stride: int, layer: int, max_tokens: int, device: str
) -> np.ndarray:
    """One pooled vector per token list (content tokens only), in input order."""
    import torch

    pieces = [
        (item, sm.prefix + ids[s:e] + sm.suffix)
        for item, ids in enumerate(tokens)
        for s, e in windows(len(ids), size, stride)
    ]
    lengths = [len(piece) for _, piece in pieces]
    pad = sm.tokenizer.pad_token_id if sm.tokenizer.pad_token_id is not None else 0
    sums, counts = None, np.zeros(len(tokens))
    for batch in _batches(lengths, max_tokens, sm.takes_mask):
        ids = torch.full((len(batch), max(lengths[i] for i in batch)), pad, dtype=torch.long)
        mask, keep = torch.zeros_like(ids), torch.zeros(ids.shape, dtype=torch.bool)
        for row, i in enumerate(batch):
            piece = pieces[i][1]
            ids[row, : len(piece)] = torch.tensor(piece)
            mask[row, : len(piece)] = 1
            keep[row, len(sm.prefix) : len(piece) - len(sm.suffix)] = True
        extra = {"attention_mask": mask.to(device)} if sm.takes_mask else {}
        with torch.inference_mode():
            hidden = sm.model(input_ids=ids.to(device), output_hidden_states=True, **extra).hidden_states[layer]
        piece_sums = (hidden.float() * keep.to(device).unsqueeze(-1)).sum(1).cpu().numpy()
        if sums is None:
            sums = np.zeros((len(tokens), piece_sums.shape[1]))
        items = [pieces[i][0] for i in batch]
        np.add.at(sums, items, piece_sums)
        np.add.at(counts, items, keep.sum(1).numpy())
    if sums is None or (counts == 0).any():
        raise InvalidInputError("an empty sequence reached the model")  # callers fail empty sequences before
    return (sums / counts[:, None]).astype(np.float32)
