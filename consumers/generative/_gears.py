"""GEARS (Roohani et al. 2024, package ``cell-gears``) as a ``bench run`` evaluator, trained per (context, fold).

GEARS predicts a genetic perturbation's cells from control cells over its own gene graphs (a GO graph of
the perturbable genes, a co-expression graph of the measured genes); it takes no store embedding, so its
rows carry the set name :data:`GEARS_SET`. Offline, its GO input is built here from the data
directory's ``genes/go_annotations_human.tsv.gz``: ``gene2go_all.pkl`` (gene symbol -> set of GO ids,
the file GEARS downloads) is written into its working folder, and the GO graph is GEARS's own
``get_GO_edge_list`` (Jaccard of GO sets > 0.1, top ``num_similar_genes_go_graph`` per gene) computed
in-process (GEARS's ``make_GO`` runs a 25-process pool and caches under ``./data`` of the working directory).

Training data: the context's controls and the fold's training perturbations (never its test
perturbations); GEARS's own ``no_test`` split holds out 10% of them for its model selection. Prediction
is the same pseudobulk reduction as the other generative methods: up to ``cells_per_batch`` control
cells per batch carried through the trained model, averaged per batch then over batches, minus the same
of the controls.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from pertstore.errors import InvalidInputError

from ._methods import seeded_numpy
from ._model import ContextCells, control_rows, pseudobulk_lfc

GEARS_SET = "gears-go"
"""The ``set`` of GEARS result rows: its own GO gene graph, not a store embedding."""


class GearsConfig(BaseModel):
    """GEARS settings (``--gears KEY=VALUE``); the defaults are CPU-sized, :meth:`paper` GEARS's own."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(3, ge=1)
    hidden_size: int = Field(64, ge=1)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    num_similar_genes_go_graph: int = Field(20, ge=1)
    num_similar_genes_co_express_graph: int = Field(20, ge=1)
    coexpress_threshold: float = 0.4
    max_cells_per_perturbation: int | None = Field(50, ge=1)
    """Training cells kept per perturbation and of the controls (seeded); None keeps all (GEARS's own)."""
    cells_per_batch: int = Field(64, ge=1)
    """Prediction: control cells drawn in each batch and carried through the model."""
    seed: int = 0
    go_annotations: str | None = None
    """GO annotation table (``symbol``, ``go_id`` columns); default: the data directory's
    ``genes/go_annotations_human.tsv.gz``."""

    @classmethod
    def paper(cls, **overrides) -> GearsConfig:
        """GEARS's defaults (``GEARS.model_initialize`` / ``train``): 20 epochs, hidden 64, batch 32."""
        return cls(**{"epochs": 20, "max_cells_per_perturbation": None, "cells_per_batch": 300, **overrides})


def gene2go(path: str | Path, genes: list[str]) -> dict[str, set[str]]:
    """``{gene symbol: set of GO ids}`` for ``genes`` (those annotated), from a GO annotation table."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(
            f"GEARS needs GO annotations: {path} not found (set PERTSTORE_DATA_DIR or --gears go_annotations=FILE)"
        )
    go = pd.read_csv(path, sep="\t", dtype=str, usecols=["symbol", "go_id"]).dropna()
    go = go[go["symbol"].isin(set(genes))]
    return {g: set(ids) for g, ids in go.groupby("symbol")["go_id"]}


def genes_of(pert: str) -> list[str]:
    """The genes of a perturbation id: ``A`` or a combination ``A+B``."""
    return [g for g in pert.split("+") if g]


def _condition(pert: str) -> str:
    """GEARS's condition name: ``A+ctrl`` for a single gene, ``A+B`` for a pair."""
    genes = genes_of(pert)
    return f"{genes[0]}+ctrl" if len(genes) == 1 else "+".join(genes)


class GearsPredictor:
    """GEARS trained on one context's controls and training perturbations (a fresh working folder each fit)."""

    def __init__(self, config: GearsConfig, go: dict[str, set[str]]) -> None:
        self.config, self.go = config, go

    def covers(self, pert: str) -> bool:
        """Whether every gene of ``pert`` is in the GO graph (GEARS cannot place others)."""
        return all(g in self.go for g in genes_of(pert))

    def fit(self, cells: ContextCells, gene_names: list[str], perts: list[str]) -> GearsPredictor:
        """Train on the cells of ``perts`` (those :meth:`covers`) and the context's controls."""
        import anndata as ad
        import scipy.sparse as sp

        cfg = self.config
        perts = [p for p in perts if self.covers(p)]
        if len(perts) < 10:  # its no_test split holds out int(10%) of them, and fails on none
            raise InvalidInputError(
                f"GEARS holds out 10% of the training perturbations for its model selection: it needs at least 10 "
                f"whose genes are in the GO graph, this fold has {len(perts)}"
            )
        rng = np.random.default_rng(cfg.seed)
        rows = []
        for group in [np.flatnonzero(cells.is_control)] + [np.flatnonzero(cells.label == p) for p in perts]:
            n = (
                group.size
                if cfg.max_cells_per_perturbation is None
                else min(group.size, cfg.max_cells_per_perturbation)
            )
            rows.append(np.sort(rng.choice(group, n, replace=False)))
        rows = np.concatenate(rows)
        condition = np.array(
            ["ctrl" if c else _condition(p) for p, c in zip(cells.label[rows], cells.is_control[rows])]
        )
        adata = ad.AnnData(
            sp.csr_matrix(cells.x[rows]),
            obs=pd.DataFrame(
                {"condition": condition, "cell_type": "context"}, index=[f"c{i}" for i in range(rows.size)]
            ),
            var=pd.DataFrame({"gene_name": gene_names}, index=list(gene_names)),
        )
        self._dir = tempfile.TemporaryDirectory(prefix="pertstore-gears-")
        folder = Path(self._dir.name)
        with open(folder / "gene2go_all.pkl", "wb") as f:  # GEARS finds it and does not download it
            pickle.dump(self.go, f)
        with open(folder / "genes.pkl", "wb") as f:  # the perturbation graph: measured genes and every GO gene
            pickle.dump(sorted(set(gene_names) | set(self.go)), f)
        quiet = io.StringIO()
        with (
            torch.random.fork_rng(devices=[]),
            seeded_numpy(cfg.seed),
            contextlib.redirect_stdout(quiet),
            contextlib.redirect_stderr(quiet),
        ):
            torch.manual_seed(cfg.seed)
            GEARS, PertData, GeneSimNetwork, get_similarity_network = _import_gears()

            data = PertData(str(folder), gene_set_path=str(folder / "genes.pkl"), default_pert_graph=False)
            data.new_data_process(dataset_name="context", adata=adata)
            data.prepare_split(split="no_test", seed=cfg.seed)
            data.get_dataloader(batch_size=cfg.batch_size)
            genes = data.gene_names.tolist()
            coexpress = GeneSimNetwork(
                get_similarity_network(
                    "co-express",
                    data.adata,
                    cfg.coexpress_threshold,
                    cfg.num_similar_genes_co_express_graph,
                    data.data_path,
                    data.dataset_name,
                    data.split,
                    data.seed,
                    data.train_gene_set_size,
                    data.set2conditions,
                ),
                genes,
                node_map=data.node_map,
            )
            go_graph = GeneSimNetwork(
                self._go_edges(data.pert_names.tolist()), data.pert_names.tolist(), node_map=data.node_map_pert
            )
            # GEARS 0.1.2 indexes adata.X with a pandas mask, which current scipy sparse matrices refuse; the
            # graphs and data loaders are built, so the matrix is made dense for the model's control mean.
            data.adata.X = data.adata.X.toarray()
            model = GEARS(data, device="cpu")
            model.model_initialize(
                hidden_size=cfg.hidden_size,
                G_go=go_graph.edge_index,
                G_go_weight=go_graph.edge_weight,
                G_coexpress=coexpress.edge_index,
                G_coexpress_weight=coexpress.edge_weight,
            )
            model.train(epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.model, self.cells = model, cells
        self.log = quiet.getvalue()
        return self

    def _go_edges(self, pert_list: list[str]) -> pd.DataFrame:
        """GEARS's GO graph over ``pert_list`` (its ``make_GO`` + top-k filter, in-process)."""
        from gears.utils import get_GO_edge_list

        go = {g: self.go[g] for g in pert_list}
        edges = pd.DataFrame(
            [e for g in go for e in get_GO_edge_list((g, go))], columns=["source", "target", "importance"]
        )
        k = self.config.num_similar_genes_go_graph
        return edges.sort_values("importance", ascending=False, kind="stable").groupby("target").head(k + 1)

    def predict(self, perts: list[str]) -> np.ndarray:
        """LFC ``[perts, genes]`` (section 4.7's pseudobulk reduction of the cells GEARS predicts)."""
        from gears.utils import create_cell_graph_for_prediction
        from torch_geometric.loader import DataLoader

        rows = control_rows(self.cells, self.config.cells_per_batch, self.config.seed)
        x, batch = self.cells.x[rows], self.cells.batch[rows]
        net = self.model.best_model.eval()
        index = {g: i for i, g in enumerate(self.model.pert_list)}
        out = []
        for pert in perts:
            genes = genes_of(pert)
            graphs = [create_cell_graph_for_prediction(row, [index[g] for g in genes], genes) for row in x]
            with torch.no_grad():
                pred = torch.cat([net(b) for b in DataLoader(graphs, batch_size=256, shuffle=False)]).numpy()
            out.append(pseudobulk_lfc(pred, x, batch))
        return np.stack(out) if out else np.zeros((0, x.shape[1]))


def _import_gears():
    """GEARS's classes, imported without changing torch's thread count: its ``dcor`` dependency starts an
    OpenMP runtime (numba) that resets it to the core count, ignoring ``OMP_NUM_THREADS`` for every later
    torch fit of the process (benchmarks pin one thread)."""
    threads = torch.get_num_threads()
    try:
        from gears import GEARS, PertData
        from gears.utils import GeneSimNetwork, get_similarity_network
    finally:
        torch.set_num_threads(threads)
    return GEARS, PertData, GeneSimNetwork, get_similarity_network
