"""STATE (``arc-state``) trained from scratch on store embeddings, as the cross-context ``state`` model.

Per split, in a work directory: each context's cells as a ``cell-load`` h5ad (``obs`` ``gene``,
``cell_type``, ``gem_group``), the embedding set's vectors as ``perturbation_features_file`` (a ``.pt``
dict label -> tensor, the reference's continuous perturbation features), and the split as a
``cell-load`` TOML (``[zeroshot]`` or ``[fewshot]``, :func:`split_toml`); then ``state tx train``
(``model=state``, Hydra overrides of :class:`StateSettings`) and ``state tx predict --predict-only``.
The predicted cells of a test perturbation, averaged, minus the mean of the context's observed
control cells, are its predicted LFC. Cells of perturbations without an embedding are left out of
STATE's input; those test perturbations get their mean in the training contexts, as for the MLP.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pertstore.errors import InvalidInputError

DATASET = "pertstore"


@dataclass
class StateSettings:
    """CPU-sized defaults; the paper's Essential run: hidden 128, ``cell_set_len`` 64, batch 64, 80,000 steps,
    the backbone of ``state``'s ``model=state`` (8 layers, 12 heads)."""

    max_steps: int = 200
    batch_size: int = 8
    cell_set_len: int = 32
    hidden_dim: int = 64
    layers: int = 2
    heads: int = 2
    lr: float = 1e-3
    device: str = "auto"
    overrides: list[str] = field(default_factory=list)
    """Further Hydra overrides of ``state tx train``."""


def split_toml(setting: str, held_out: str, test_labels: list[str], contexts: list[str]) -> str:
    """The ``cell-load`` TOML of a split: ``held_out`` whole (``zeroshot``) or its ``test_labels`` (``fewshot``)."""
    lines = ["[datasets]", f'{DATASET} = "DATA"', "[training]", f'{DATASET} = "train"', "[zeroshot]"]
    if setting == "zeroshot":
        lines.append(f'"{DATASET}.{held_out}" = "test"')
    lines.append("[fewshot]")
    if setting == "fewshot":
        quoted = ", ".join(f'"{t}"' for t in test_labels)
        lines += [f'[fewshot."{DATASET}.{held_out}"]', f"val = [{quoted}]", f"test = [{quoted}]"]
    if held_out not in contexts:
        raise InvalidInputError(f"context {held_out!r} is not among {contexts}")
    return "\n".join(lines) + "\n"


def write_inputs(
    cells_path: str | Path,
    columns: dict,
    embeddings: dict[str, np.ndarray],
    workdir: Path,
    *,
    counts: bool = False,
) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """Write each context's cells and the perturbation features; returns ``(data dir, features file,
    control mean per context)``. Only cells of controls and of perturbations in ``embeddings`` are kept."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp
    import torch

    cells_path = Path(cells_path)
    if not cells_path.is_file():
        raise InvalidInputError(f"state: the task's cells file {cells_path} does not exist; pass cells=FILE")
    adata = ad.read_h5ad(cells_path)
    pert_col, context_col = columns["pert_col"], columns["context_col"]
    for col in (pert_col, context_col):
        if col not in adata.obs:
            raise InvalidInputError(f"state: {cells_path} has no column {col!r} (the task's recipe names it)")
    if columns.get("control_col"):
        control = adata.obs[columns["control_col"]].astype(bool).to_numpy()
    else:
        control = adata.obs[pert_col].astype(str).to_numpy() == columns["control_label"]
    label = np.where(control, "control", adata.obs[pert_col].astype(str).to_numpy())
    keep = control | np.isin(label, list(embeddings))
    x = adata.X[keep]
    x = sp.csr_matrix(x, dtype=np.float32)
    if counts:  # the task's normalisation: 1e4 per cell, log1p
        x = sp.csr_matrix(sp.diags(1e4 / np.maximum(np.asarray(x.sum(axis=1)).ravel(), 1)) @ x)
        x.data = np.log1p(x.data)
    batch = adata.obs[columns["batch_col"]].astype(str).to_numpy() if columns.get("batch_col") else "b0"
    obs = pd.DataFrame(
        {"gene": label, "cell_type": adata.obs[context_col].astype(str).to_numpy(), "gem_group": batch},
        index=adata.obs_names,
    )[keep]
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    means = {}
    for context in sorted(obs.cell_type.unique()):
        rows = (obs.cell_type == context).to_numpy()
        part = ad.AnnData(x[rows], obs=obs[rows].copy(), var=pd.DataFrame(index=list(map(str, adata.var_names))))
        part.uns["log1p"] = {"base": None}
        part.write_h5ad(data / f"{context}.h5ad")
        ctrl = rows & (obs.gene == "control").to_numpy()
        means[context] = np.asarray(x[ctrl].mean(axis=0)).ravel()
    features = workdir / "perturbation_features.pt"
    torch.save({str(k): torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in embeddings.items()}, features)
    return data, features, means


def train_args(workdir: Path, toml: Path, features: Path, settings: StateSettings) -> list[str]:
    """``state tx train`` Hydra overrides for the inputs of :func:`write_inputs`."""
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if settings.device == "auto" else settings.device
    backbone = "model.kwargs.transformer_backbone_kwargs"
    return [
        f"data.kwargs.toml_config_path={toml}",
        "data.kwargs.num_workers=0",
        "data.kwargs.output_space=gene",
        "data.kwargs.pert_col=gene",
        "data.kwargs.cell_type_key=cell_type",
        "data.kwargs.batch_col=gem_group",
        "data.kwargs.control_pert=control",
        f"data.kwargs.perturbation_features_file={features}",
        "data.kwargs.pin_memory=false",
        f"training.max_steps={settings.max_steps}",
        f"training.batch_size={settings.batch_size}",
        f"training.lr={settings.lr}",
        f"training.val_freq={settings.max_steps}",
        f"training.ckpt_every_n_steps={settings.max_steps}",
        "model=state",
        f"model.device={device}",
        f"model.kwargs.cell_set_len={settings.cell_set_len}",
        f"model.kwargs.hidden_dim={settings.hidden_dim}",
        f"{backbone}.intermediate_size={2 * settings.hidden_dim}",
        f"{backbone}.num_hidden_layers={settings.layers}",
        f"{backbone}.num_attention_heads={settings.heads}",
        f"{backbone}.num_key_value_heads={settings.heads}",
        f"{backbone}.head_dim={settings.hidden_dim // settings.heads}",
        "use_wandb=false",
        f"output_dir={workdir}",
        "name=run",
        *settings.overrides,
    ]


def predicted_lfc(pred_path: Path, control_mean: np.ndarray, labels: list[str]) -> dict[str, np.ndarray]:
    """Mean predicted cells of each label minus the context's observed control mean."""
    import anndata as ad
    import scipy.sparse as sp

    pred = ad.read_h5ad(pred_path)
    x = pred.X.toarray() if sp.issparse(pred.X) else np.asarray(pred.X)
    genes = pred.obs["gene"].astype(str).to_numpy()
    return {p: x[genes == p].mean(axis=0) - control_mean for p in labels if (genes == p).any()}


def _state(*args: str, cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "state", *args], cwd=cwd, capture_output=True, text=True, env=_env())
    if done.returncode != 0:
        raise InvalidInputError(f"state {args[0]} {args[1]} failed: {done.stderr[-2000:] or done.stdout[-2000:]}")


def _env() -> dict:
    import os

    return {**os.environ, "WANDB_MODE": "disabled"}


def run_state(
    setting: str,
    held_out: str,
    test_labels: list[str],
    data: Path,
    features: Path,
    control_mean: np.ndarray,
    workdir: Path,
    settings: StateSettings,
) -> dict[str, np.ndarray]:
    """Train STATE on one split and return the predicted LFC of each test label it predicted."""
    workdir.mkdir(parents=True, exist_ok=True)
    contexts = [p.stem for p in data.glob("*.h5ad")]
    toml = workdir / "split.toml"
    toml.write_text(split_toml(setting, held_out, test_labels, contexts).replace("DATA", str(data)))
    _state("tx", "train", *train_args(workdir, toml, features, settings), cwd=workdir)
    _state("tx", "predict", "--output-dir", str(workdir / "run"), "--checkpoint", "final.ckpt", "--predict-only",
           cwd=workdir)  # fmt: skip
    found = sorted((workdir / "run").glob("eval_*/adata_pred.h5ad"))
    if not found:
        raise InvalidInputError(f"state tx predict wrote no adata_pred.h5ad under {workdir / 'run'}")
    return predicted_lfc(found[0], control_mean, test_labels)
