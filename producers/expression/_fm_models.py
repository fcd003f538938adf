"""Transformers-format model classes for single-cell foundation models without one upstream.

- :class:`ScGPTModel`: scGPT's encoder (``scgpt.model.TransformerModel``): a gene-token embedding
  with LayerNorm (``encoder``), a continuous value encoder of the binned expression
  (``value_encoder``: Linear(1, d), ReLU, Linear(d, d), LayerNorm, values clamped at 512), their
  sum through ``nn.TransformerEncoder`` (post-norm, ReLU). Parameter names are scGPT's, so a
  published ``best_model.pt`` loads with :func:`convert_scgpt_checkpoint`.
- :class:`DenseCellModel`: an AIDO.Cell-style dense model: every cell is the same fixed list of
  genes; gene identity is a learned position embedding (the "positional" gene table) and the
  log-normalised expression enters through a continuous value encoder.

Both are registered with ``AutoConfig``/``AutoModel``, so ``save_pretrained`` writes a checkpoint
(config.json + model.safetensors) that ``AutoModel.from_pretrained`` loads again.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from pertstore.errors import InvalidInputError


class ScGPTConfig(PretrainedConfig):
    model_type = "pertstore-scgpt"

    def __init__(
        self,
        vocab_size: int = 60697,
        d_model: int = 512,
        nhead: int = 8,
        d_hid: int = 512,
        nlayers: int = 12,
        dropout: float = 0.2,
        pad_token_id: int = 0,
        pad_value: float = -2.0,
        n_bins: int = 51,
        max_value: float = 512.0,
        max_seq_len: int = 1200,
        **kwargs,
    ) -> None:
        self.vocab_size, self.d_model, self.nhead, self.d_hid, self.nlayers = vocab_size, d_model, nhead, d_hid, nlayers
        self.dropout, self.pad_value, self.n_bins, self.max_value = dropout, pad_value, n_bins, max_value
        self.max_seq_len = max_seq_len
        self.hidden_size = d_model
        super().__init__(pad_token_id=pad_token_id, **kwargs)


class _GeneEncoder(nn.Module):
    def __init__(self, vocab_size: int, d_model: int, pad_token_id: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=pad_token_id)
        self.enc_norm = nn.LayerNorm(d_model)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.enc_norm(self.embedding(ids))


class _ValueEncoder(nn.Module):
    """scGPT's ContinuousValueEncoder."""

    def __init__(self, d_model: int, dropout: float, max_value: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(1, d_model)
        self.activation = nn.ReLU()
        self.linear2 = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.max_value = max_value

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        x = torch.clamp(values.unsqueeze(-1), max=self.max_value)
        return self.dropout(self.norm(self.linear2(self.activation(self.linear1(x)))))


def _encoder_stack(d_model: int, nhead: int, d_hid: int, nlayers: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(d_model, nhead, d_hid, dropout, batch_first=True)
    return nn.TransformerEncoder(layer, nlayers, enable_nested_tensor=False)


def _encoder_layer(layer: nn.TransformerEncoderLayer, x: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
    """``layer(x)`` in inference (post-norm), with attention through ``scaled_dot_product_attention``.

    Same numbers as the layer's own forward (to float rounding); on CPU with padded batches
    PyTorch's fused inference path was 5x slower (35 vs 180 ms for 64 cells x 330 tokens, d=32).
    """
    mha = layer.self_attn
    b, n, d = x.shape
    qkv = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).view(b, n, 3, mha.num_heads, d // mha.num_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    mask = None if padding is None else ~padding[:, None, None, :]
    attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, n, d)
    x = layer.norm1(x + layer.dropout1(mha.out_proj(attn)))
    return layer.norm2(x + layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(x))))))


def _run_layers(
    stack: nn.TransformerEncoder, x: torch.Tensor, padding: torch.Tensor | None, output_hidden_states: bool
) -> BaseModelOutput:
    states = [x]
    for layer in stack.layers:
        x = _encoder_layer(layer, x, padding)
        states.append(x)
    return BaseModelOutput(last_hidden_state=x, hidden_states=tuple(states) if output_hidden_states else None)


class ScGPTModel(PreTrainedModel):
    """scGPT's cell encoder: gene tokens + binned values -> contextual gene states."""

    config_class = ScGPTConfig
    base_model_prefix = "scgpt"

    def __init__(self, config: ScGPTConfig) -> None:
        super().__init__(config)
        self.encoder = _GeneEncoder(config.vocab_size, config.d_model, config.pad_token_id)
        self.value_encoder = _ValueEncoder(config.d_model, config.dropout, config.max_value)
        self.transformer_encoder = _encoder_stack(
            config.d_model, config.nhead, config.d_hid, config.nlayers, config.dropout
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.encoder.embedding

    def forward(
        self,
        input_ids: torch.Tensor,
        values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        **_,
    ) -> BaseModelOutput:
        """``input_ids`` and ``values`` ``[cells, tokens]``; ``attention_mask`` 1 for real tokens."""
        x = self.encoder(input_ids) + self.value_encoder(values.float())
        padding = None if attention_mask is None else ~attention_mask.bool()
        return _run_layers(self.transformer_encoder, x, padding, output_hidden_states)


class DenseCellConfig(PretrainedConfig):
    model_type = "pertstore-dense-cell"

    def __init__(
        self,
        gene_names: list[str] | None = None,
        d_model: int = 256,
        nhead: int = 8,
        d_hid: int = 1024,
        nlayers: int = 6,
        dropout: float = 0.0,
        **kwargs,
    ) -> None:
        self.gene_names = list(gene_names or [])
        self.d_model, self.nhead, self.d_hid, self.nlayers, self.dropout = d_model, nhead, d_hid, nlayers, dropout
        self.hidden_size = d_model
        super().__init__(**kwargs)


class DenseCellModel(PreTrainedModel):
    """A dense all-gene cell model: position ``g`` is always gene ``config.gene_names[g]``."""

    config_class = DenseCellConfig
    base_model_prefix = "dense_cell"

    def __init__(self, config: DenseCellConfig) -> None:
        super().__init__(config)
        if not config.gene_names:
            raise InvalidInputError("a dense cell model needs gene_names in its config (the fixed gene order)")
        self.gene_embedding = nn.Embedding(len(config.gene_names), config.d_model)
        self.value_encoder = _ValueEncoder(config.d_model, config.dropout, max_value=1e4)
        self.transformer_encoder = _encoder_stack(
            config.d_model, config.nhead, config.d_hid, config.nlayers, config.dropout
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.gene_embedding

    def forward(self, values: torch.Tensor, output_hidden_states: bool = False, **_) -> BaseModelOutput:
        """``values`` ``[cells, genes]`` log-normalised expression in the config's gene order."""
        x = self.gene_embedding.weight.unsqueeze(0) + self.value_encoder(values.float())
        return _run_layers(self.transformer_encoder, x, None, output_hidden_states)


AutoConfig.register(ScGPTConfig.model_type, ScGPTConfig, exist_ok=True)
AutoModel.register(ScGPTConfig, ScGPTModel, exist_ok=True)
AutoConfig.register(DenseCellConfig.model_type, DenseCellConfig, exist_ok=True)
AutoModel.register(DenseCellConfig, DenseCellModel, exist_ok=True)

_SCGPT_PARTS = ("encoder.", "value_encoder.", "transformer_encoder.")


def convert_scgpt_checkpoint(source: str | Path, out: str | Path) -> Path:
    """Write a published scGPT checkpoint directory as a transformers checkpoint for the ``scgpt`` adapter.

    ``source`` holds scGPT's ``args.json``, ``vocab.json`` and ``best_model.pt`` (e.g. the
    whole-human model). Only the cell encoder is kept (the decoders are not used for embeddings).
    """
    source, out = Path(source), Path(out)
    missing = [f for f in ("args.json", "vocab.json", "best_model.pt") if not (source / f).is_file()]
    if missing:
        raise InvalidInputError(f"{source}: not an scGPT checkpoint directory; missing {', '.join(missing)}")
    args = json.loads((source / "args.json").read_text())
    vocab = json.loads((source / "vocab.json").read_text())
    if args.get("input_emb_style", "continuous") != "continuous":
        raise InvalidInputError(
            f"{source}/args.json: input_emb_style {args['input_emb_style']!r}; only scGPT's "
            "'continuous' value encoding is supported"
        )
    config = ScGPTConfig(
        vocab_size=len(vocab),
        d_model=args["embsize"],
        nhead=args["nheads"],
        d_hid=args["d_hid"],
        nlayers=args["nlayers"],
        dropout=args.get("dropout", 0.2),
        pad_token_id=vocab[args.get("pad_token", "<pad>")],
        pad_value=args.get("pad_value", -2),
        n_bins=args.get("n_bins", 51),
        max_seq_len=args.get("max_seq_len", 1200),
    )
    state = torch.load(source / "best_model.pt", map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if k.startswith(_SCGPT_PARTS)}
    model = ScGPTModel(config)
    missing_keys, _ = model.load_state_dict(state, strict=False)
    if missing_keys:
        raise InvalidInputError(
            f"{source}/best_model.pt lacks encoder weights {missing_keys[:5]} (flash-attention "
            "checkpoints name them differently; convert Wqkv to in_proj first)"
        )
    model.save_pretrained(out)
    (out / "vocab.json").write_text(json.dumps(vocab))
    return out
