"""Figure 3: the CCA similarity of embedding sets on their common entities, clustered (``fig_3.ipynb``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pertstore.consumers.reports._figures import _fig_to_files, _file_name, _pyplot


def _cca_score(xa: np.ndarray, xb: np.ndarray) -> float:
    import warnings

    from sklearn.cross_decomposition import CCA
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():  # components reaching max_iter are kept, as in the reference
        warnings.simplefilter("ignore", ConvergenceWarning)
        return float(CCA(n_components=min(xa.shape[1], xb.shape[1])).fit(xa, xb).score(xa, xb))


def cca_scores(blocks: dict[str, np.ndarray], *, n_components: int = 10, n_jobs: int = 1) -> pd.DataFrame:
    """The CCA similarity of ``fig_3.ipynb`` on aligned blocks (same entities, same row order): per set
    ``PCA(n_components)`` of the standardised block, then for every pair (names sorted, ``i <= j``)
    ``CCA(min dims).fit(a, b).score(a, b)``, mirrored to ``[j, i]`` as the reference does. ``n_jobs``: joblib
    processes for the pairs (about 0.2 s each on 6,000 entities)."""
    from joblib import Parallel, delayed
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    reduced = {}
    for name, x in blocks.items():
        k = min(n_components, x.shape[0], x.shape[1])
        reduced[name] = PCA(n_components=k).fit_transform(StandardScaler().fit_transform(x))
    names = sorted(reduced)
    pairs = [(i, j) for i in range(len(names)) for j in range(i, len(names))]
    scores = Parallel(n_jobs=n_jobs)(delayed(_cca_score)(reduced[names[i]], reduced[names[j]]) for i, j in pairs)
    sim = np.zeros((len(names), len(names)))
    for (i, j), score in zip(pairs, scores):
        sim[i, j] = sim[j, i] = score
    return pd.DataFrame(sim, index=names, columns=names)


def cca_similarity(
    store, versions: dict[str, str], out: Path, *, n_jobs: int = -1
) -> tuple[list[tuple[str, str]], list[str]]:
    """Figure 3 (``fig_3.ipynb``): for the sets of each entity kind, the CCA score matrix on the entities common
    to all of them, clustered. ``versions`` maps each set to the version read. Returns figures and notes."""
    import seaborn as sns
    from matplotlib.patches import Patch

    _pyplot()
    figures, notes = [], []
    listed = store.catalog.list_sets()
    info = {(r.source, r.version): r for r in listed.itertuples()}
    by_kind: dict[str, list[str]] = {}
    for name, version in sorted(versions.items()):
        if (name, version) not in info:
            notes.append(f"CCA: {name} version {version} is no longer in the store; left out")
            continue
        by_kind.setdefault(info[(name, version)].kind, []).append(name)
    for kind, names in sorted(by_kind.items()):
        if len(names) < 2:
            continue
        opened = {n: store.open_set(n, version=versions[n]) for n in names}
        common = sorted(set.intersection(*(set(s.ids) for s in opened.values())))
        if len(common) < 2:
            notes.append(f"CCA ({kind}): the sets {', '.join(names)} share {len(common)} entities; no clustermap")
            continue
        blocks = {n: s.rows(s.positions(common)).astype(np.float64) for n, s in opened.items()}
        sim = cca_scores(blocks, n_jobs=n_jobs if len(names) > 8 else 1)  # processes pay off from ~45 pairs
        sim.to_csv(out / f"cca_{kind}.csv")
        producer = pd.Series({n: info[(n, versions[n])].producer for n in sim.index})
        colours = dict(zip(sorted(set(producer)), sns.color_palette("tab10", len(set(producer)))))
        row_colors = producer.map(colours).rename("producer")
        grid = sns.clustermap(
            sim,
            cmap="RdBu_r",
            center=0,
            vmin=-1,
            vmax=1,
            linewidths=0.5,
            linecolor="white",
            cbar_pos=(1, 0.5, 0.03, 0.15),
            cbar_kws={"label": "CCA Score"},
            figsize=(4 + 0.45 * len(names),) * 2,
            dendrogram_ratio=(0.1, 0.1),
            row_colors=row_colors,
            col_colors=row_colors,
        )
        grid.fig.legend(
            handles=[Patch(facecolor=c, label=p) for p, c in colours.items()],
            loc="upper left",
            bbox_to_anchor=(1, 0.8),
            title="producer",
        )
        grid.ax_col_dendrogram.set_title(f"CCA score of {kind} sets on their {len(common):,} common entities")
        figures.append(
            (
                f"CCA similarity ({kind} sets, {len(common):,} common entities)",
                _fig_to_files(grid.fig, out, _file_name("fig3_cca", kind)),
            )
        )
    return figures, notes
