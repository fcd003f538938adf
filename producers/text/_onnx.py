"""Run a sentence-transformers model's transformer with ONNX Runtime: same numbers, faster on CPU.

The text producers spend most of their time in the transformer's forward pass. On CPU, ONNX
Runtime runs the exported graph of the same weights 1.4x faster than PyTorch eager at the same
batch size (all-MiniLM-L6-v2, one thread, ``benchmarks/bench_text.py``), and its outputs equal
PyTorch's to float32 rounding (tested to 1e-5). :func:`use_onnx_runtime` exports the loaded
transformer in memory (TorchScript exporter, dynamic batch and sequence axes) and swaps it for
:class:`OnnxEncoder`; sentence-transformers keeps doing the tokenisation, length sorting, pooling
and normalisation. Set ``PERTSTORE_TEXT_RUNTIME=torch`` to keep PyTorch.
"""

from __future__ import annotations

import io
import logging
import warnings

import torch

from pertstore._config import get_settings

log = logging.getLogger(__name__)

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class _Traced(torch.nn.Module):
    """The transformer as a positional function of its token inputs, for the exporter."""

    def __init__(self, model: torch.nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, tensors)), return_dict=True).last_hidden_state


class OnnxEncoder(torch.nn.Module):
    """Stands in for a transformers encoder: its forward runs the exported graph with ONNX Runtime."""

    def __init__(self, model: torch.nn.Module, session, names: tuple[str, ...]) -> None:
        super().__init__()
        self.torch_model = model  # keeps the parameters (device, dtype) sentence-transformers asks about
        self.config = model.config
        self.session, self.names = session, names

    def forward(self, **inputs) -> dict[str, torch.Tensor]:
        feeds = {name: inputs[name].cpu().numpy() for name in self.names}
        (hidden,) = self.session.run(None, feeds)
        return {"last_hidden_state": torch.from_numpy(hidden)}


def export_session(model: torch.nn.Module, sample: dict[str, torch.Tensor], names: tuple[str, ...], threads: int):
    """An ONNX Runtime session of ``model`` exported with ``sample`` inputs (batch and length dynamic)."""
    import onnxruntime as ort

    buffer = io.BytesIO()
    axes = {name: {0: "batch", 1: "length"} for name in (*names, "hidden")}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Traced(model.eval(), names),
            tuple(sample[n] for n in names),
            buffer,
            dynamo=False,
            input_names=list(names),
            output_names=["hidden"],
            dynamic_axes=axes,
            opset_version=17,
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])


def wanted() -> bool:
    """Whether the text encoders should run on ONNX Runtime (``PERTSTORE_TEXT_RUNTIME``, default ``onnx``)."""
    runtime = get_settings().text_runtime.lower()
    if runtime not in ("onnx", "torch"):
        raise ValueError(f"PERTSTORE_TEXT_RUNTIME must be 'onnx' or 'torch', not {runtime!r}")
    return runtime == "onnx"


def use_onnx_runtime(st_model) -> bool:
    """Swap the transformer of a CPU sentence-transformers model for ONNX Runtime; False if it cannot be.

    A model whose graph does not export (an architecture the exporter does not handle) keeps
    PyTorch, with a warning in the log: the numbers are the same either way.
    """
    transformer = st_model[0]
    model = getattr(transformer, "model", None)
    if isinstance(model, OnnxEncoder):
        return True
    if model is None or st_model.device.type != "cpu":
        return False
    features = st_model.preprocess(["an example sentence", "another, longer example sentence here"])
    names = tuple(n for n in _INPUTS if n in features)
    try:
        session = export_session(model, features, names, torch.get_num_threads())
    except Exception as e:  # noqa: BLE001 - any exporter failure leaves the PyTorch model in place
        log.warning(
            "text model %s stays on PyTorch: ONNX export failed (%s: %s)", type(model).__name__, type(e).__name__, e
        )
        return False
    transformer.model = OnnxEncoder(model, session, names)
    return True
