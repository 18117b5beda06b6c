"""Cross-modal retrieval metrics (CF <-> FFA, reference_spec 4.9): Recall@K and median rank.

Query ``i`` and gallery item ``i`` are the pair. A query's rank is the number of gallery items at least
as similar as its partner (the partner included), so ties count *against* the query: a collapsed
(constant) embedding ranks every partner last, never first.
"""

import torch
import torch.nn.functional as F


def cosine_similarity_matrix(queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """N x M cosine similarities of N x D queries and M x D gallery embeddings."""
    return F.normalize(queries.float(), dim=1) @ F.normalize(gallery.float(), dim=1).T


def partner_ranks(similarity: torch.Tensor) -> torch.Tensor:
    """1-based rank of each query's partner (the diagonal) among the gallery, N x N similarity."""
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be square (query i pairs with gallery i), got {tuple(similarity.shape)}")
    partner = similarity.diagonal().unsqueeze(1)
    return (similarity >= partner).sum(dim=1)


def retrieval_metrics(similarity: torch.Tensor, ks=(1, 5, 10)) -> dict[str, float]:
    """Recall@K (fraction of queries whose partner ranks within K) and the median rank.

    Recall@K for K >= N is 1 by definition; it is still reported so tables keep their columns.
    """
    ranks = partner_ranks(similarity).float()
    out = {f"recall@{k}": float((ranks <= k).float().mean()) for k in ks}
    out["median_rank"] = float(ranks.quantile(0.5))  # the usual median (mean of the middle two for even N)
    out["num_queries"] = float(ranks.numel())
    return out
