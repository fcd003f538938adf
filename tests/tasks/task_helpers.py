"""Synthetic Perturb-seq data shared by the task tests."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

PAPALEXI = "perturb/papalexi2021_thp1_crispr_ko.h5ad"
NORMAN = "perturb/norman2019_mcfaline2023_devel.h5ad"


def synthetic(
    *, n_genes: int = 40, cells: dict[tuple[str, str, str], int] | None = None, seed: int = 0, effect: float = 1.0
) -> ad.AnnData:
    """Counts for cells[(context, batch, label)] cells; label 'control' = controls. Perturbation k scales gene k."""
    rng = np.random.default_rng(seed)
    if cells is None:
        cells = {
            (ctx, b, lab): n
            for ctx in ("A", "B")
            for b in ("b1", "b2", "b3")
            for lab, n in (("control", 40), ("P1", 35), ("P2", 12), ("P3", 50))
        }
    obs = pd.DataFrame(
        [(c, b, lab) for (c, b, lab), n in cells.items() for _ in range(n)],
        columns=["cell_line", "batch", "perturbation"],
    )
    obs.index = [f"c{i}" for i in range(len(obs))]
    base = rng.gamma(2.0, 1.0, size=n_genes)
    batch_shift = {b: rng.uniform(0.7, 1.4, size=n_genes) for b in obs["batch"].unique()}
    rates = np.stack([base * batch_shift[b] for b in obs["batch"]])
    for k, lab in enumerate(sorted(set(obs["perturbation"]) - {"control"})):
        rows = (obs["perturbation"] == lab).to_numpy()
        rates[rows, k % n_genes] *= np.exp(effect * (1 if k % 2 else -1) * 1.5)
        rates[rows, (k + 7) % n_genes] *= np.exp(effect)
    x = sp.csr_matrix(rng.poisson(rates * rng.uniform(0.5, 2.0, size=(len(obs), 1))).astype(np.int32))
    return ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(n_genes)]))
