"""Full-ranking top-K metrics as pure, batched torch functions.

Every function takes a batch of users at once and runs on whatever device its
inputs live on; nothing loops over users in Python. The usual pipeline is::

    top = topk_items(scores, k, exclude=train_mask)          # [B, K] item ids
    hit = hits(top, truth)                                     # [B, K] bool
    recall_at_k(hit, truth.sum(1)), ndcg_at_k(hit, truth.sum(1))

Per-user values are returned (NaN where a user has no relevant item) so the
caller decides how to group and average them; ``nanmean``-style reductions are
done by :class:`RankingAccumulator`.
"""

from __future__ import annotations

import torch
from torch import Tensor


def topk_items(scores: Tensor, k: int, exclude: Tensor | None = None) -> Tensor:
    """Indices of the ``k`` highest-scoring items per row; ``exclude`` (bool) items never appear."""
    if exclude is not None:
        scores = scores.masked_fill(exclude, float("-inf"))
    return torch.topk(scores, k, dim=1, sorted=True).indices


def hits(top: Tensor, truth: Tensor) -> Tensor:
    """``hit[b, r]`` is True when the item ranked ``r`` for user ``b`` is relevant (``truth`` bool)."""
    return truth.gather(1, top)


def recall_at_k(hit: Tensor, n_relevant: Tensor) -> Tensor:
    """Recall@K = |top-K ∩ relevant| / |relevant|, per user; NaN for users with nothing relevant."""
    n = n_relevant.to(torch.float32)
    return torch.where(n > 0, hit.sum(1).to(torch.float32) / n.clamp(min=1), torch.nan)


def ndcg_at_k(hit: Tensor, n_relevant: Tensor) -> Tensor:
    """NDCG@K with binary gains: DCG = sum_r hit_r / log2(r + 2), IDCG over min(|relevant|, K)."""
    k = hit.shape[1]
    discount = 1.0 / torch.log2(torch.arange(2, k + 2, device=hit.device, dtype=torch.float32))
    dcg = (hit.to(torch.float32) * discount).sum(1)
    ideal = torch.cumsum(discount, 0)
    n = n_relevant.clamp(max=k).long()
    idcg = ideal[(n - 1).clamp(min=0)]
    return torch.where(n > 0, dcg / idcg, torch.nan)


def hit_rate_at_k(hit: Tensor, n_relevant: Tensor) -> Tensor:
    """HR@K: 1 when any relevant item is in the top K; NaN for users with nothing relevant."""
    return torch.where(n_relevant > 0, hit.any(1).to(torch.float32), torch.nan)


def mean_popularity(top: Tensor, popularity: Tensor) -> Tensor:
    """Mean training popularity (interaction count) of each user's top-K items."""
    return popularity[top].to(torch.float32).mean(1)


class RankingAccumulator:
    """Sums per-user metric values (ignoring NaN) and a coverage set over batches.

    ``state()`` returns one flat tensor so a distributed strategy can all-reduce it
    with a single ``sum``; ``compute()`` turns the (reduced) state into means.
    """

    def __init__(self, names: list[str], n_items: int, device: torch.device | str = "cpu"):
        self.names = list(names)
        self.sums = torch.zeros(len(names), dtype=torch.float64, device=device)
        self.counts = torch.zeros(len(names), dtype=torch.float64, device=device)
        self.covered = torch.zeros(n_items, dtype=torch.float64, device=device)

    def add(self, name: str, values: Tensor) -> None:
        """Add a batch of per-user values for metric ``name`` (NaN entries are skipped)."""
        j = self.names.index(name)
        ok = ~torch.isnan(values)
        self.sums[j] += values[ok].sum().to(torch.float64)
        self.counts[j] += ok.sum()

    def cover(self, top: Tensor) -> None:
        """Mark the recommended items of this batch for catalogue coverage."""
        self.covered[top.reshape(-1)] = 1.0

    def state(self) -> Tensor:
        return torch.cat([self.sums, self.counts, self.covered])

    def compute(self, state: Tensor | None = None) -> dict[str, float]:
        """Means per metric (NaN when no user counted) and ``coverage``: share of items ever recommended."""
        s = self.state() if state is None else state
        m = len(self.names)
        sums, counts, covered = s[:m], s[m : 2 * m], s[2 * m :]
        out = {
            name: (sums[j] / counts[j]).item() if counts[j] > 0 else float("nan")
            for j, name in enumerate(self.names)
        }
        out["coverage"] = (covered > 0).to(torch.float64).mean().item()
        return out
