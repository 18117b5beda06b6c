"""Recall@K and median rank, exact on constructed similarity matrices."""

import torch

from fundus2ffa.metrics.retrieval import cosine_similarity_matrix, partner_ranks, retrieval_metrics


def test_recall_at_k_exact():
    # partner ranks by construction: query 0 -> 1, query 1 -> 2, query 2 -> 3, query 3 -> 1
    sim = torch.tensor([
        [0.9, 0.1, 0.2, 0.3],
        [0.8, 0.7, 0.1, 0.0],
        [0.9, 0.8, 0.5, 0.1],
        [0.0, 0.1, 0.2, 0.3],
    ])
    assert partner_ranks(sim).tolist() == [1, 2, 3, 1]
    m = retrieval_metrics(sim, ks=(1, 2, 5))
    assert m["recall@1"] == 0.5 and m["recall@2"] == 0.75 and m["recall@5"] == 1.0
    assert m["median_rank"] == 1.5


def test_ties_count_against_the_query_and_cosine_pairs():
    constant = torch.ones(5, 5)
    assert retrieval_metrics(constant)["recall@1"] == 0.0  # a collapsed embedding retrieves nothing
    features = torch.eye(6) + 0.01
    m = retrieval_metrics(cosine_similarity_matrix(features, features * 3.0))
    assert m["recall@1"] == 1.0 and m["median_rank"] == 1.0
