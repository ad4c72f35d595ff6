"""DirectAU (Wang et al., KDD 2022): optimise alignment and uniformity on the hypersphere.

Rows ``mf+directau`` and ``lightgcn+directau``. The whole objective (paper eq. 7):

    L = l_align + gamma * (l_uniform(users) + l_uniform(items)) / 2
    l_align   = E_(u,i)~positives || f(u) - f(i) ||^2                    (eq. 5)
    l_uniform = log E_(x,y) exp(-2 || f(x) - f(y) ||^2)                 (eq. 6)

on L2-normalised embeddings of the batch's positive pairs; no negative sampling.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.datasets.amazon import RecData
from harness.methods.cf import CFRecommender, gather_rows


def alignment(x: Tensor, y: Tensor) -> Tensor:
    """Mean squared distance between paired normalised embeddings (DirectAU eq. 5)."""
    return (F.normalize(x, dim=-1) - F.normalize(y, dim=-1)).norm(dim=1).pow(2).mean()


def uniformity(x: Tensor, t: float = 2.0) -> Tensor:
    """log mean exp(-t ||x_a - x_b||^2) over distinct pairs of normalised rows (DirectAU eq. 6)."""
    x = F.normalize(x, dim=-1)
    return torch.pdist(x, p=2).pow(2).mul(-t).exp().mean().log()


class DirectAU(CFRecommender):
    """DirectAU on an MF or LightGCN backbone; ``gamma`` weighs uniformity against alignment."""

    search_space = {"lr": ("log", 1e-4, 1e-2), "gamma": ("log", 0.1, 10.0)}

    def __init__(self, info: RecData, gamma: float = 1.0, **kw: Any):
        super().__init__(info, **kw)

    def objective(self, batch: tuple[Tensor, Tensor, Tensor]
                  ) -> tuple[Tensor, dict[str, Tensor]]:
        u, i, _ = batch  # negatives are not used
        users, items = self.embeddings()
        eu, ei = gather_rows(users, u), gather_rows(items, i)
        align = alignment(eu, ei)
        uniform = (uniformity(eu) + uniformity(ei)) / 2
        loss = align + self.hparams.gamma * uniform
        return loss, {"train/loss": loss, "train/align": align, "train/uniform": uniform}
