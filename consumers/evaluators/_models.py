"""Evaluators: embedding -> response models with the paper's inner cross-validation.

Every evaluator is ``fit_predict(x_train, y_train, x_test) -> (prediction, chosen)``. The protocol
(design section 5): StandardScaler -> PCA(100) -> model, hyper-parameters picked by a shuffled
inner 5-fold CV (seed 42) on the mean L2 error. Dimensions: PCA keeps ``min(100, rows, dims)``
components, so sets with fewer than 100 dims or fewer than 100 training rows still run; the kNN
grid drops the k values larger than the smallest inner training fold (if none is left, k is that
fold's size). An embedding of responses (the idealised control) skips the scaler and PCA.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import linalg, sparse
from sklearn.decomposition import PCA
from sklearn.model_selection import KFold
from sklearn.preprocessing import StandardScaler

K_GRID = (20, 40, 60, 80, 100)
LASSO_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0)
RIDGE_ALPHAS = (1e-1, 1.0, 10.0, 100.0, 1000.0)
N_COMPONENTS = 100
INNER_FOLDS = 5
INNER_SEED = 42


def project(
    x_train: np.ndarray, others: list[np.ndarray], n_components: int = N_COMPONENTS, transform: bool = True
) -> tuple[np.ndarray, list[np.ndarray]]:
    """StandardScaler then PCA fitted on ``x_train``, applied to it and to ``others``."""
    if not transform:
        return np.asarray(x_train, dtype=np.float64), [np.asarray(o, dtype=np.float64) for o in others]
    scaler = StandardScaler().fit(x_train)
    a = scaler.transform(x_train)
    with np.errstate(divide="ignore", invalid="ignore"):  # one training row: explained variance is 0/0, unused
        pca = PCA(min(n_components, a.shape[0], a.shape[1]), svd_solver="full").fit(a)
    return pca.transform(a), [pca.transform(scaler.transform(o)) for o in others]


def project_for_distances(
    x_train: np.ndarray, others: list[np.ndarray], n_components: int = N_COMPONENTS, transform: bool = True
) -> tuple[np.ndarray, list[np.ndarray]]:
    """:func:`project`'s subspace for distance-based models, by the eigendecomposition of the covariance (or,
    with fewer rows than dims, the Gram) matrix in the input's precision (scikit-learn's ``covariance_eigh``
    solver) instead of the SVD: the coordinates are a rotation of :func:`project`'s, so distances are equal
    up to rounding, at a fraction of the SVD's cost. With components up to the rank (where the SVD picks
    arbitrary null directions) it is :func:`project` itself.
    """
    if not transform:
        return project(x_train, others, n_components, transform)
    x_train = np.asarray(x_train)
    n, d = x_train.shape
    k = min(n_components, n, d)
    if k >= min(n, d):
        return project(x_train, others, n_components, transform)
    # StandardScaler (statistics in float64, population std, constant columns left unscaled), then the
    # input's precision; the scaled rows are centred, so the PCA's mean is 0
    dtype = np.result_type(x_train.dtype, np.float32)
    mean = x_train.mean(axis=0, dtype=np.float64)
    scale = x_train.std(axis=0, dtype=np.float64)
    scale[scale < 10 * np.finfo(np.float64).eps] = 1.0
    mean, inverse = mean.astype(dtype), (1.0 / scale).astype(dtype)
    a = np.subtract(x_train, mean, dtype=dtype)
    a *= inverse
    syrk = linalg.blas.get_blas_funcs("syrk", (a,))
    # on the Fortran-ordered view a.T, which BLAS reads in place (a C-ordered `a` would be copied first):
    # trans=0 gives a.T @ a, trans=1 a @ a.T; upper triangle
    gram = syrk(1.0, a.T, trans=int(n < d))
    values, vectors = linalg.eigh(
        gram,
        lower=False,
        subset_by_index=(len(gram) - k, len(gram) - 1),
        driver="evr",
        check_finite=False,
        overwrite_a=True,
    )
    if not values[0] > len(gram) * np.finfo(values.dtype).eps * values[-1]:  # rank below k: as the SVD would
        return project(x_train, others, n_components, transform)
    basis = vectors if n >= d else (a.T @ vectors) / np.sqrt(values)
    return a @ basis, [(np.subtract(o, mean, dtype=dtype) * inverse) @ basis for o in others]


def inner_splits(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The shuffled inner K-fold splits (seed 42); fewer folds when there are fewer than 5 rows."""
    if n < 2:
        return []
    return list(KFold(min(INNER_FOLDS, n), shuffle=True, random_state=INNER_SEED).split(np.zeros(n)))


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``[len(a), len(b)]`` by one GEMM (the formula scikit-learn uses)."""
    d = (a * a).sum(1)[:, None] - 2.0 * (a @ b.T) + (b * b).sum(1)[None, :]
    np.maximum(d, 0, out=d)
    return d


def k_grid(n_train: int) -> list[int]:
    """The kNN grid usable with ``n_train`` rows in every inner training fold."""
    splits = inner_splits(n_train)
    smallest = min((len(t) for t, _ in splits), default=n_train)
    return [k for k in K_GRID if k <= smallest] or [max(1, smallest)]


@dataclass
class KNN:
    """kNN regression (uniform weights) with k chosen by inner CV.

    Fast and equal to scikit-learn's ``GridSearchCV(Pipeline(StandardScaler, PCA, KNeighborsRegressor))``:
    the scaler and PCA are fitted once per inner fold (not once per k), one neighbour search at the
    largest k serves every k through prefix means, and distances come from one GEMM.
    """

    transform: bool = True
    name: str = "knn"

    def fit_predict(self, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, dict]:
        y_train = np.asarray(y_train)
        ks = k_grid(len(x_train))
        scores = np.zeros(len(ks))
        splits = inner_splits(len(x_train))
        for tr, va in splits:
            a, (b,) = project_for_distances(x_train[tr], [x_train[va]], transform=self.transform)
            order = _nearest(b, a, max(ks))
            order = tr[order]  # rows of y_train
            y_va = y_train[va].astype(np.float64)
            y_sq, acc = np.einsum("ij,ij->i", y_va, y_va), np.zeros(y_va.shape)
            start = 0
            for j, k in enumerate(ks):  # prefix sums: add the next block of neighbours by a sparse product
                block = order[:, start:k]
                pick = sparse.csr_matrix(
                    (np.ones(block.size, dtype=y_train.dtype), block.ravel(), np.arange(0, block.size + 1, k - start)),
                    shape=(len(va), len(y_train)),
                )
                acc += pick @ y_train
                start = k
                # the validation rows' L2 errors |y - acc / k|, expanded: two passes, no temporaries
                sq = y_sq - (2.0 / k) * np.einsum("ij,ij->i", acc, y_va) + np.einsum("ij,ij->i", acc, acc) / k**2
                scores[j] += np.sqrt(np.maximum(sq, 0.0)).mean()
        best = ks[int(np.argmin(scores))] if splits else ks[0]
        a, (b,) = project_for_distances(x_train, [x_test], transform=self.transform)
        return _neighbour_mean(y_train, _nearest(b, a, best)), {"k": best}


def _neighbour_mean(y: np.ndarray, nbrs: np.ndarray) -> np.ndarray:
    """``np.mean(y[nbrs], axis=1)`` (scikit-learn's uniform-weight prediction) to the last bit, without the
    ``[rows, k, genes]`` gather: that reduction adds the neighbours' rows in order in ``y``'s precision, then
    divides by the count in float64."""
    if y.dtype not in (np.float32, np.float64):
        return np.mean(y[nbrs], axis=1)
    acc = y[nbrs[:, 0]]
    for j in range(1, nbrs.shape[1]):
        acc += y[nbrs[:, j]]
    return np.true_divide(acc, np.intp(nbrs.shape[1]), out=acc, casting="unsafe")


def _nearest(query: np.ndarray, ref: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` nearest rows of ``ref`` for each query row, nearest first (float64 distances)."""
    d = _sq_distances(np.asarray(query, dtype=np.float64), np.asarray(ref, dtype=np.float64))
    if k < d.shape[1]:
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        inner = np.argsort(np.take_along_axis(d, part, axis=1), axis=1, kind="stable")
        return np.take_along_axis(part, inner, axis=1)
    return np.argsort(d, axis=1, kind="stable")


@dataclass
class SklearnGrid:
    """A scikit-learn regressor after StandardScaler -> PCA, its parameter chosen by inner CV on mean L2."""

    make: Callable[..., object]
    grid: dict[str, tuple] = field(default_factory=dict)
    name: str = "lasso"
    transform: bool = True

    def fit_predict(self, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, dict]:
        ((param, values),) = self.grid.items() if self.grid else ((None, (None,)),)
        splits = inner_splits(len(x_train))
        scores = np.zeros(len(values))
        if len(values) > 1:
            for tr, va in splits:
                a, (b,) = project(x_train[tr], [x_train[va]], transform=self.transform)
                for j, v in enumerate(values):
                    model = self.make(**({param: v} if param else {})).fit(a, y_train[tr])
                    scores[j] += np.linalg.norm(y_train[va] - model.predict(b), axis=1).mean()
        best = values[int(np.argmin(scores))]
        a, (b,) = project(x_train, [x_test], transform=self.transform)
        model = self.make(**({param: best} if param else {})).fit(a, y_train)
        return np.asarray(model.predict(b), dtype=np.float64).reshape(len(x_test), -1), ({param: best} if param else {})


def _lasso(alpha: float):
    from sklearn.linear_model import Lasso

    return Lasso(alpha=alpha)  # the reference's Lasso(): max_iter=1000


def _ridge(alpha: float):
    from sklearn.linear_model import Ridge

    return Ridge(alpha=alpha)


def _mlp():
    from sklearn.neural_network import MLPRegressor

    return MLPRegressor(hidden_layer_sizes=(256,), max_iter=300, random_state=0, early_stopping=False)


LOGISTIC_C = (1.0, 1e3, 1e5, 1e7)
LBFGS_ITER = 100


def balanced_cross_entropy(logits, classes, weights):
    """Mean over genes of each gene's class-weighted cross-entropy: ``F.cross_entropy(logits[:, g],
    classes[:, g], weight=weights[g])`` (its weighted mean) written out for all genes at once (the reference
    vmaps ``F.cross_entropy`` over genes; equal up to float32 rounding).

    ``logits`` ``[rows, genes, 3]``, ``classes`` ``[rows, genes]``, ``weights`` ``[genes, 3]``.
    """
    return _weighted_nll(_log_softmax(logits), classes, weights.gather(1, classes.T).T)


def _log_softmax(logits):
    """``log_softmax`` over the last axis of size 3, by elementwise ops (torch's kernel is slow on so short an axis)."""
    z = logits - logits.amax(-1, keepdim=True)
    return z - z.exp().sum(-1, keepdim=True).log()


def _weighted_nll(log_probs, classes, w):
    """Mean over genes of each gene's weighted mean negative log-likelihood (``w``: each row's class weight)."""
    nll = -log_probs.gather(-1, classes[..., None])[..., 0]
    return ((w * nll).sum(0) / w.sum(0)).mean()


def fit_logistic(x: np.ndarray, classes: np.ndarray, c: float, seed: int = 0):
    """The reference's vectorised logistic model (``benchmark/logistic_regression.py``): one
    ``nn.Linear(d, 3 * genes)``, full-batch L-BFGS (100 iterations, strong Wolfe) on the mean over genes
    of the class-balanced cross-entropy (weights ``n / (3 * count)``, 0 for an absent class) plus
    ``||W||_F^2 / C`` (bias not penalised); float32, initialised by ``torch.manual_seed(seed)``.

    ``classes``: class indices 0/1/2 ``[rows, genes]``. Returns the fitted ``nn.Linear``.
    """
    import torch

    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    yt = torch.as_tensor(np.asarray(classes), dtype=torch.int64)
    genes = yt.shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        linear = torch.nn.Linear(xt.shape[1], 3 * genes)
    counts = (yt[:, :, None] == torch.arange(3)).sum(0)
    weights = (yt.shape[0] / (3 * counts)).nan_to_num(posinf=0)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=LBFGS_ITER, line_search_fn="strong_wolfe")

    w = weights.gather(1, yt.T).T  # each row's class weight per gene
    coef = (w / w.sum(0) / genes).contiguous()[..., None]  # d loss / d nll of each (row, gene)
    target = coef * torch.nn.functional.one_hot(yt, 3).to(torch.float32)

    def closure():
        # the loss and its gradient written out (autograd's bookkeeping costs more than the algebra here):
        # with z the logits less their row maximum and s = sum(exp(z)), the nll of class y is log(s) - z_y
        with torch.no_grad():
            weight = linear.weight
            z = torch.addmm(linear.bias, xt, weight.T).view(len(xt), genes, 3)
            z -= z.amax(-1, keepdim=True)
            e = z.exp()
            s = e.sum(-1, keepdim=True)
            flat = weight.view(-1)
            loss = coef.view(-1).dot(s.log().view(-1)) - target.view(-1).dot(z.view(-1)) + flat.dot(flat) / c
            grad = e.mul_(coef / s).sub_(target).view(len(xt), -1)  # coef * (softmax - onehot)
            linear.weight.grad = torch.addmm(weight, grad.T, xt, beta=2 / c)
            linear.bias.grad = grad.sum(0)
        return loss

    optimizer.step(closure)
    return linear


def logistic_proba(linear, x: np.ndarray) -> np.ndarray:
    """Softmax class probabilities ``[rows, genes, 3]`` of a model from :func:`fit_logistic`."""
    import torch

    with torch.no_grad():
        out = linear(torch.as_tensor(np.asarray(x), dtype=torch.float32))
        return torch.softmax(out.view(len(x), -1, 3), dim=-1).numpy().astype(np.float64)


@dataclass
class VectorLogistic:
    """DEG as the reference (``benchmark/bench_essential_deg.py``): StandardScaler -> PCA(100) -> the
    vectorised 3-class logistic model of every gene at once (:func:`fit_logistic`), C in
    :data:`LOGISTIC_C` chosen as ``GridSearchCV``'s default does for a 2-D label matrix: unshuffled
    KFold(5), the mean over genes of the present-class macro F1 (the model's ``score``), first best C
    on ties. Returns class probabilities ``[test, genes, 3]`` (class ``label + 1``).
    """

    name: str = "logistic"
    transform: bool = True
    grid: tuple[float, ...] = LOGISTIC_C

    def fit_predict(self, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, dict]:
        from pertstore.consumers.evaluators._metrics import deg_f1_per_gene

        classes = np.asarray(y_train, dtype=np.int64) + 1
        n = len(x_train)
        splits = list(KFold(min(INNER_FOLDS, n)).split(np.zeros(n))) if n >= 2 else []
        scores = np.zeros(len(self.grid))
        if len(self.grid) > 1:
            for tr, va in splits:
                a, (b,) = project(x_train[tr], [x_train[va]], transform=self.transform)
                for j, c in enumerate(self.grid):
                    proba = logistic_proba(fit_logistic(a, classes[tr], c), b)
                    scores[j] += deg_f1_per_gene(classes[va] - 1, proba).mean() / len(splits)
        best = self.grid[int(np.argmax(scores))]
        a, (b,) = project(x_train, [x_test], transform=self.transform)
        return logistic_proba(fit_logistic(a, classes, best), b), {"C": best}


def evaluator(name: str, *, transform: bool = True):
    """An evaluator by name: knn, lasso, ridge, mlp (LFC) or logistic (DEG)."""
    if name == "knn":
        return KNN(transform=transform)
    if name == "lasso":
        return SklearnGrid(_lasso, {"alpha": LASSO_ALPHAS}, "lasso", transform)
    if name == "ridge":
        return SklearnGrid(_ridge, {"alpha": RIDGE_ALPHAS}, "ridge", transform)
    if name == "mlp":
        return SklearnGrid(_mlp, {}, "mlp", transform)
    if name == "logistic":
        return VectorLogistic(transform=transform)
    from pertstore.errors import InvalidInputError

    raise InvalidInputError(f"unknown evaluator {name!r}; use knn, lasso, ridge, mlp or logistic")
