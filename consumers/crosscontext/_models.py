"""The cross-context models of the reference (``cross_context/README.md``), on perturbation-level responses.

- ``context_mean``: the mean training response of the held-out context (few-shot); in zero-shot the
  context has no training rows, so the mean over all training rows.
- ``cross_knn``: a test perturbation's mean response in the ``k`` training contexts most similar to the
  held-out one that measured it; similarity = Pearson correlation of the two contexts' responses to
  the perturbations both have in training (few-shot; in zero-shot there are none and every context is
  equally similar); no such context: the context mean.
- ``mlp`` (continuous) and ``onehot``: a multi-layer perceptron (scikit-learn ``MLPRegressor``) from
  [perturbation code, context code] to the response minus the context mean; the perturbation code is
  the store embedding (standardised, PCA to ``max_dims``) or a fixed random Gaussian code per
  perturbation label (a one-hot code times a fixed random projection, the reference's ablation); the
  context code is the PCA of the context means. A test perturbation without an embedding gets its mean
  response in the training contexts (the reference's MLP inference fallback), else the context mean.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

MODELS = ("mlp", "onehot", "context_mean", "knn", "state")
"""Evaluator names of the cross-context protocol (``knn`` is the cross-context kNN; ``state``: ``_state``)."""


@dataclass
class SplitData:
    """One split's inputs: responses, row contexts and labels, masks, optional embeddings."""

    y: np.ndarray
    ctx: np.ndarray
    labels: np.ndarray
    train: np.ndarray
    test: np.ndarray
    context: str
    x: np.ndarray | None = None
    covered: np.ndarray | None = None


@dataclass
class MLPSettings:
    """CPU-sized defaults; ``docs/crosscontext.md`` gives the paper-size ones."""

    hidden: tuple[int, ...] = (256,)
    max_iter: int = 300
    max_dims: int = 64
    onehot_dims: int = 64
    k: int = 1
    seed: int = 0


def context_means(d: SplitData) -> dict[str, np.ndarray]:
    """Mean training response per context; the held-out one falls back to the mean of all training rows."""
    means = {c: d.y[d.train & (d.ctx == c)].mean(axis=0) for c in set(d.ctx[d.train].tolist())}
    if d.context not in means:
        means[d.context] = d.y[d.train].mean(axis=0)
    return means


def context_mean(d: SplitData) -> np.ndarray:
    """The held-out context's mean training response for every test row."""
    return np.repeat(context_means(d)[d.context][None], int(d.test.sum()), axis=0)


def _similarity(d: SplitData) -> dict[str, float]:
    """Pearson correlation of the held-out context's training responses with each other context's."""
    own = d.train & (d.ctx == d.context)
    mine = dict(zip(d.labels[own], d.y[own]))
    sims = {}
    for c in sorted(set(d.ctx[d.train].tolist()) - {d.context}):
        rows = np.flatnonzero(d.train & (d.ctx == c))
        shared = [(mine[d.labels[r]], d.y[r]) for r in rows if d.labels[r] in mine]
        if not shared:
            sims[c] = 0.0
            continue
        a = np.concatenate([s[0] for s in shared])
        b = np.concatenate([s[1] for s in shared])
        sims[c] = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
    return sims


def cross_knn(d: SplitData, k: int = 1) -> tuple[np.ndarray, dict]:
    """Each test perturbation's mean response in the ``k`` most similar training contexts that measured it."""
    sims = _similarity(d)
    fill = context_means(d)[d.context]
    others = d.train & (d.ctx != d.context)
    pred = []
    for label in d.labels[d.test]:
        rows = np.flatnonzero(others & (d.labels == label))
        if not len(rows):
            pred.append(fill)
            continue
        order = sorted(rows, key=lambda r: (-sims[d.ctx[r]], d.ctx[r]))[:k]
        pred.append(d.y[order].mean(axis=0))
    return np.array(pred), {"k": k, "similarity": {c: round(s, 4) for c, s in sims.items()}}


def random_codes(labels, dims: int, seed: int = 0) -> np.ndarray:
    """A fixed standard-normal code per label (seeded by the label's SHA-256 and ``seed``): one-hot x random matrix."""
    out = np.empty((len(labels), dims))
    for i, label in enumerate(labels):
        digest = int.from_bytes(hashlib.sha256(str(label).encode()).digest()[:8], "little")
        out[i] = np.random.default_rng([seed, digest]).standard_normal(dims)
    return out


def mlp(d: SplitData, settings: MLPSettings, *, onehot: bool = False) -> tuple[np.ndarray, dict]:
    """The MLP on (embedding or fixed random code, context code) -> response minus the context mean."""
    from sklearn.decomposition import PCA
    from sklearn.neural_network import MLPRegressor
    from sklearn.preprocessing import StandardScaler

    means = context_means(d)
    names = sorted(means)
    n_codes = min(4, len(names) - 1) if len(names) > 2 else 1
    ctx_pca = PCA(n_codes, random_state=settings.seed).fit(np.array([means[c] for c in names if c != d.context]))
    ctx_code = dict(zip(names, ctx_pca.transform(np.array([means[c] for c in names]))))
    if onehot:
        x, covered = random_codes(d.labels, settings.onehot_dims, settings.seed), np.ones(len(d.labels), bool)
    else:
        assert d.x is not None and d.covered is not None
        x, covered = d.x, d.covered
    fit_rows = d.train & covered
    scaler = StandardScaler().fit(x[fit_rows])
    dims = min(settings.max_dims, int(fit_rows.sum()), x.shape[1])
    pca = PCA(dims, random_state=settings.seed).fit(scaler.transform(x[fit_rows]))

    def features(rows: np.ndarray) -> np.ndarray:
        z = pca.transform(scaler.transform(x[rows]))
        return np.hstack([z, np.array([ctx_code[c] for c in d.ctx[rows]])])

    base = np.array([means[c] for c in d.ctx])
    model = MLPRegressor(hidden_layer_sizes=settings.hidden, max_iter=settings.max_iter, random_state=settings.seed)
    model.fit(features(fit_rows), (d.y - base)[fit_rows])
    test_rows = np.flatnonzero(d.test)
    pred = np.repeat(means[d.context][None], len(test_rows), axis=0)
    has = covered[test_rows]
    if has.any():
        mask = np.zeros_like(d.test)
        mask[test_rows[has]] = True
        pred[has] = model.predict(features(mask)).reshape(int(has.sum()), -1) + means[d.context]
    others = d.train & (d.ctx != d.context)
    for i in np.flatnonzero(~has):  # no embedding: the perturbation's mean in the training contexts
        rows = others & (d.labels == d.labels[test_rows[i]])
        if rows.any():
            pred[i] = d.y[rows].mean(axis=0)
    return pred, {"hidden": list(settings.hidden), "dims": dims, "iterations": int(model.n_iter_)}
