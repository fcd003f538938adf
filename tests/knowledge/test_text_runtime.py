"""The text encoders on ONNX Runtime give PyTorch's embeddings (the real packaged all-MiniLM-L6-v2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pertstore.producers.text import _sentence
from pertstore.producers.text._onnx import OnnxEncoder, use_onnx_runtime

TEXTS = [
    "TP53: tumor protein p53. This gene encodes a tumor suppressor protein.",
    "a",
    "STAT1 " * 400,
    "Interferon gamma signalling through JAK2 and STAT1 induces IRF1.",
] * 3


@pytest.fixture
def runtime(monkeypatch):
    def load(name: str):
        monkeypatch.setenv("PERTSTORE_TEXT_RUNTIME", name)
        _sentence.load_encoder.cache_clear()
        return _sentence.load_encoder(str(_sentence.default_model_dir()))

    yield load
    _sentence.load_encoder.cache_clear()


def test_onnx_runtime_equals_pytorch_including_truncated_and_one_token_texts(runtime):
    assert isinstance(runtime("onnx")[0].model, OnnxEncoder)
    fast = _sentence.encode_texts(TEXTS, batch_size=5)
    assert not isinstance(runtime("torch")[0].model, OnnxEncoder)
    reference = _sentence.encode_texts(TEXTS, batch_size=5)
    assert fast.shape == (len(TEXTS), 384) and np.isfinite(fast).all()
    np.testing.assert_allclose(fast, reference, atol=1e-5)
    assert not np.allclose(fast[0], fast[3], atol=1e-2)  # distinct texts stay distinct


def test_a_model_that_does_not_export_stays_on_pytorch(runtime, monkeypatch, caplog):
    model = runtime("torch")

    def fail(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(torch.onnx, "export", fail)
    assert use_onnx_runtime(model) is False
    assert not isinstance(model[0].model, OnnxEncoder) and "ONNX export failed" in caplog.text
    assert _sentence.encode_texts(["still works"]).shape == (1, 384)


def test_unknown_runtime_is_a_clear_error(runtime):
    with pytest.raises(ValueError, match="PERTSTORE_TEXT_RUNTIME"):
        runtime("tensorrt")
