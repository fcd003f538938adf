"""``string-node2vec``: node2vec on the STRING gene graph with torch-geometric's model and loss.

torch-geometric's :class:`~torch_geometric.nn.Node2Vec` draws its walks with pyg-lib, which has no
wheel for this torch; :class:`WeightedNode2Vec` keeps its embedding, negative walks and skip-gram
loss (computed over the walks' windows without cutting them apart, several times faster and equal
to ``Node2Vec.loss``) and draws the positive walks with :mod:`._walks`: a transition's probability is
proportional to the edge's combined STRING score times node2vec's ``p``/``q`` bias. Every node of
the graph gets a row (each has at least one edge). Deterministic under ``seed``.
"""

from __future__ import annotations

import numpy as np
import torch
from pertstore.producers._base import Batch, Producer
from pertstore.producers.graph._common import GraphParams, load_gene_graph
from pertstore.producers.graph._seeding import seeded
from pertstore.producers.graph._walks import WalkGraph, random_walks
from pydantic import Field
from torch_geometric.nn import Node2Vec


class Node2VecParams(GraphParams):
    """Defaults are SPACE's (``deweihu96/SPACE`` ``scripts/node2vec.py``): 128 dims, p = 0.3, q = 0.7, 10 walks
    of length 50 per node, window 5 (``context_size`` 6: the node and the 5 after it; the loss is symmetric,
    so 5 on each side as gensim's window), 5 negatives, 5 epochs."""

    dims: int = Field(128, ge=1, le=2048)
    walk_length: int = Field(50, ge=2)
    context_size: int = Field(6, ge=2)
    walks_per_node: int = Field(10, ge=1)
    p: float = Field(0.3, gt=0)
    q: float = Field(0.7, gt=0)
    num_negative_samples: int = Field(5, ge=1)
    epochs: int = Field(5, ge=1)
    lr: float = Field(0.01, gt=0)
    batch_size: int = Field(128, ge=1)
    """Start nodes per optimiser step."""


class WeightedNode2Vec(Node2Vec):
    """torch-geometric's Node2Vec with weighted, p/q-biased walks drawn by :func:`random_walks`."""

    def __init__(
        self,
        graph: WalkGraph,
        embedding_dim: int,
        walk_length: int,
        context_size: int,
        walks_per_node: int,
        p: float,
        q: float,
        num_negative_samples: int,
        seed: int,
    ) -> None:
        torch.nn.Module.__init__(self)  # Node2Vec.__init__ insists on pyg-lib's sampler
        if walk_length < context_size:
            raise ValueError(f"walk_length ({walk_length}) must be at least context_size ({context_size})")
        self.graph = graph
        self.rng = np.random.default_rng(seed)
        self.num_nodes = graph.n
        self.EPS = 1e-15
        self.embedding_dim = embedding_dim
        self.walk_length = walk_length - 1
        self.context_size = context_size
        self.walks_per_node = walks_per_node
        self.p, self.q = p, q
        self.num_negative_samples = num_negative_samples
        self.embedding = torch.nn.Embedding(graph.n, embedding_dim)
        self.reset_parameters()

    def walks(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Positive (biased) and negative (uniform) walks from ``batch``, before windowing."""
        starts = batch.repeat(self.walks_per_node)
        pos = torch.from_numpy(random_walks(self.graph, starts.numpy(), self.walk_length, self.p, self.q, self.rng))
        starts = batch.repeat(self.walks_per_node * self.num_negative_samples)
        neg = torch.cat([starts.view(-1, 1), torch.randint(self.num_nodes, (len(starts), self.walk_length))], 1)
        return pos, neg

    def walk_loss(self, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """torch-geometric's skip-gram loss over every window of the walks, looking each walk node up once.

        Equal to ``Node2Vec.loss`` on the windows (``windows(pos), windows(neg)``): the same pairs
        (walk[j], walk[j + k]) for window starts ``j`` and offsets ``1 <= k < context_size``, but the
        embedding is gathered once per walk position instead of once per window position, which
        makes the step several times faster.
        """
        return (
            -torch.log(torch.sigmoid(self._pair_scores(pos)) + self.EPS).mean()
            - torch.log(1 - torch.sigmoid(self._pair_scores(neg)) + self.EPS).mean()
        )

    def _pair_scores(self, walks: torch.Tensor) -> torch.Tensor:
        h = self.embedding(walks)
        n_windows = walks.shape[1] - self.context_size + 1
        return torch.stack([(h[:, :n_windows] * h[:, k : k + n_windows]).sum(-1) for k in range(1, self.context_size)])

    def sample(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """torch-geometric's ``sample``: positive and negative context windows, for ``Node2Vec.loss``."""
        pos, neg = self.walks(batch)
        return self.windows(pos), self.windows(neg)

    def windows(self, walks: torch.Tensor) -> torch.Tensor:
        """The context windows torch-geometric's ``pos_sample``/``neg_sample`` cut from ``walks``."""
        n_windows = walks.shape[1] - self.context_size + 1
        return torch.cat([walks[:, j : j + self.context_size] for j in range(n_windows)], dim=0)


def train_node2vec(adj, params: Node2VecParams) -> np.ndarray:
    """node2vec embeddings ``[n, dims]`` of the weighted graph ``adj`` (scipy sparse, symmetric)."""
    with seeded(params.seed):
        model = WeightedNode2Vec(
            WalkGraph(adj),
            params.dims,
            params.walk_length,
            params.context_size,
            params.walks_per_node,
            params.p,
            params.q,
            params.num_negative_samples,
            params.seed,
        )
        optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
        order = torch.Generator().manual_seed(params.seed)
        model.train()
        for _ in range(params.epochs):
            for batch in torch.randperm(model.num_nodes, generator=order).split(params.batch_size):
                optimizer.zero_grad()
                loss = model.walk_loss(*model.walks(batch))
                loss.backward()
                optimizer.step()
        return model.embedding.weight.detach().numpy().copy()


class Node2VecProducer(Producer):
    """node2vec embeddings of the STRING gene graph (score-weighted walks)."""

    name = "string-node2vec"
    kind = "gene"
    Params = Node2VecParams
    inputs = {"network": "file"}
    chunked = False
    description = "node2vec on the STRING network, score-weighted p/q walks (SPACE's settings by default)"

    @classmethod
    def libraries(cls) -> dict[str, str]:
        import torch_geometric

        return {"torch": torch.__version__, "torch-geometric": torch_geometric.__version__}

    def compute(self) -> Batch:
        graph = load_gene_graph(self.ctx, self.params)
        values = train_node2vec(graph.adjacency(), self.params)
        return Batch(graph.nodes, values.astype(np.float32))
