"""The text model of the text producers, a parameter: a local sentence-transformers model (the offline
default, the packaged all-MiniLM-L6-v2) or an OpenAI-compatible embeddings endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pertstore.producers.text._sentence import DEFAULT_MODEL, encode_texts
from pydantic import BaseModel, ConfigDict, Field, model_validator


class TextModelParams(BaseModel):
    """Which model embeds the texts; the resolved ``model`` name is recorded in the set's recipe."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["sentence-transformers", "openai"] = "sentence-transformers"
    """``sentence-transformers``: a local model (offline); ``openai``: the endpoint of the settings
    ``PERTSTORE_TEXT_ENDPOINT_URL`` / ``PERTSTORE_TEXT_ENDPOINT_KEY``."""
    model: str | None = None
    """The model's name. openai: required (e.g. ``text-embedding-3-small``, ``text-embedding-ada-002``);
    sentence-transformers: filled in (the packaged ``all-MiniLM-L6-v2``, or ``model_path``'s folder name)."""
    model_path: str | None = None
    """Local sentence-transformers model directory (default: the packaged all-MiniLM-L6-v2)."""
    dimensions: int | None = Field(None, ge=1)
    """openai only: shortened embeddings (the ``dimensions`` field of text-embedding-3 models)."""
    batch_size: int = Field(16, ge=1)
    """Texts per forward pass (16 is fastest on CPU: benchmarks/bench_text.py) or per endpoint request."""

    @model_validator(mode="after")
    def _resolve_model(self) -> TextModelParams:
        if self.backend == "openai":
            if not self.model:
                raise ValueError(
                    "backend openai needs `model`, the endpoint's model name (e.g. text-embedding-3-small)"
                )
            if self.model_path:
                raise ValueError("model_path is a local sentence-transformers model; backend openai takes `model`")
        else:
            if self.dimensions is not None:
                raise ValueError("dimensions applies to backend openai only")
            if self.model_path is None:
                if self.model not in (None, DEFAULT_MODEL):
                    raise ValueError(
                        f"backend sentence-transformers runs local models only: give model_path "
                        f"(a local directory) or leave model unset (the packaged {DEFAULT_MODEL})"
                    )
                self.model = DEFAULT_MODEL
            elif self.model is None:
                self.model = Path(self.model_path).name
        return self


def check_backend(params: TextModelParams) -> None:
    """Fail early, naming the missing setting, when an endpoint backend is not configured."""
    if params.backend == "openai":
        from pertstore.producers.text._endpoint import endpoint

        endpoint()


def embed(texts: list[str], params: TextModelParams, device: str = "cpu") -> np.ndarray:
    """Embed ``texts`` (float32 rows) with the model ``params`` name."""
    if params.backend == "openai":
        from pertstore.producers.text._endpoint import encode_endpoint

        return encode_endpoint(
            texts, model=str(params.model), batch_size=params.batch_size, dimensions=params.dimensions
        )
    return encode_texts(texts, model_path=params.model_path, batch_size=params.batch_size, device=device)
