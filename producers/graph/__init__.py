"""graph."""

from __future__ import annotations


def string_gnn_encoder(network, resolve, params: dict):
    """The ``string-gnn`` producer's GNN over a STRING file, trained by link prediction with its code.

    ``network`` is read by the producer's graph rules, ``resolve(ids)`` maps ids to canonical genes and
    ``params`` are :class:`~pertstore.producers.graph.gnn.GNNParams` fields. Returns ``(genes, encoder)``:
    the canonical gene of each node and the trained ``ResidualGNN`` (eval mode) whose ``encoder()`` embeds
    every node over all the graph's edges, as the producer's embedding (``full_graph``) does.
    """
    from pertstore.producers.graph._common import read_gene_graph
    from pertstore.producers.graph._linkpred import split_edges
    from pertstore.producers.graph.gnn import GNNParams, train_gnn

    p = GNNParams(**params)
    graph = read_gene_graph(network, resolve, p)
    split = split_edges(graph, p.val_fraction, p.seed)
    encoder = train_gnn(split, graph.n, p).encoder
    if p.full_graph:
        encoder.edge_index, encoder.edge_weight = split.all_edges()
    return graph.nodes, encoder
