"""Metrics over fixed candidate lists (LLM recommenders): HR@K, NDCG@K, MRR.

Each row scores C candidates; ``target`` is the column of the true next item. Ties
count against the target (its rank is the number of *other* candidates scoring at least
as high), so a model that scores everything equally gets the worst rank, never a lucky
one.
"""

from __future__ import annotations

import torch
from torch import Tensor


def target_rank(scores: Tensor, target: Tensor) -> Tensor:
    """0-based rank of the target among the candidates of each row, ties pessimistic."""
    t = scores.gather(1, target.view(-1, 1))
    return (scores >= t).sum(1) - 1


def hit_rate(rank: Tensor, k: int) -> Tensor:
    """HR@K per row: 1 when the target is in the top K."""
    return (rank < k).to(torch.float32)


def ndcg(rank: Tensor, k: int) -> Tensor:
    """NDCG@K with one relevant item: 1 / log2(rank + 2) inside the top K, else 0."""
    gain = 1.0 / torch.log2(rank.to(torch.float32) + 2.0)
    return torch.where(rank < k, gain, torch.zeros_like(gain))


def mrr(rank: Tensor) -> Tensor:
    """Reciprocal rank of the target."""
    return 1.0 / (rank.to(torch.float32) + 1.0)


def candidate_metrics(scores: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Per-row ``hr_1, hr_3, hr_5, ndcg_3, ndcg_5, mrr`` (the LLM-rec papers' set)."""
    r = target_rank(scores, target)
    return {"hr_1": hit_rate(r, 1), "hr_3": hit_rate(r, 3), "hr_5": hit_rate(r, 5),
            "ndcg_3": ndcg(r, 3), "ndcg_5": ndcg(r, 5), "mrr": mrr(r)}
