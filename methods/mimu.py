"""MiMu (arXiv 2504.17613): mitigating multiple shortcuts in Transformer ERMs.

Two stages (the runner's stage protocol):

1. ``source``, self-calibration: the classifier trained with cross-entropy plus a Brier-score
   term (so it is not over-confident on shortcut features), for the stage's epochs; its
   last epoch's weights are kept (no selection) and frozen as the source model.
2. ``target``, self-improvement: a second model (from the initial weights, or the source's
   with ``target_init: source``) trained with

       L = CE(p_t, y) + kl_weight * T^2 KL(p_s^T || p_t^T) + align_weight * L_align
           + brier_weight * Brier(p_t, y),

   where p^T are the source's and target's probabilities at temperature T (distillation of
   the calibrated source), and L_align is the adaptive attention alignment: a random share
   ``mask_ratio`` of the token positions (image patches, text tokens) is masked out of the
   target's input (ViT's mask token; the text attention mask), the last layer's [CLS]
   attention of source (on the full input) and target is renormalised over the positions the
   target kept, and the largest absolute differences (the top ``align_topk`` share of those
   positions) are penalised. The random mask keeps the target from fixing on one region.
   ``mask_ratio: 0`` is row ``mimu-nomask``: the same alignment without the mask.

The public code (LiliizZ/MiMu, image path only) uses KL 0.01, alignment 0.001, Brier 0.1,
mask 10% and SGD at lr 1e-4 on a pretrained ViT-L/16; those are the ``paper`` profile's
values. The source stage's weights do not depend on the target's parameters, so rows that
differ only in them (``mimu``, ``mimu-nomask``) train one source (``stage_independent``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.api import choice
from harness.datasets.robustness import RobustInfo
from harness.errors import UserError
from harness.methods.robust import CalibratedSource, Encoder, brier

TARGET_ONLY = ("kl_weight", "align_weight", "temperature", "mask_ratio", "align_topk", "target_init")


def random_token_mask(valid: Tensor, ratio: float) -> Tensor:
    """(B, N) True at round(ratio x n_valid) positions per row, drawn uniformly among the
    valid ones (never all of them)."""
    if ratio <= 0:
        return torch.zeros_like(valid)
    n_valid = valid.sum(1, keepdim=True)
    k = torch.minimum((ratio * n_valid.float() + 0.5).floor().long(), n_valid - 1)
    scores = torch.rand(valid.shape, device=valid.device).masked_fill(~valid, 2.0)
    rank = scores.argsort(1).argsort(1)  # 0 = smallest score
    return rank < k


def alignment_loss(att_s: Tensor, att_t: Tensor, keep: Tensor, topk: float) -> Tensor:
    """Mean over the batch of the mean of the largest |a_s - a_t| over the kept positions,
    each attention renormalised over those positions first."""
    keep_f = keep.float()
    a_s = att_s * keep_f
    a_t = att_t * keep_f
    a_s = a_s / a_s.sum(1, keepdim=True).clamp_min(1e-12)
    a_t = a_t / a_t.sum(1, keepdim=True).clamp_min(1e-12)
    diff = ((a_s - a_t).abs() * keep_f)
    k = max(1, math.ceil(topk * int(keep.sum(1).max())))
    top = diff.topk(min(k, diff.shape[1]), dim=1).values
    return top.mean()


class MiMu(CalibratedSource):
    """MiMu's source then target model (rows ``mimu``, ``mimu-nomask``): module docstring."""

    search_space = {**CalibratedSource.search_space, "kl_weight": ("log", 1e-3, 10.0),
                    "align_weight": ("log", 1e-4, 10.0), "temperature": ("float", 1.0, 4.0),
                    "mask_ratio": ("float", 0.0, 0.5)}
    stages = ("source", "target")
    last_epoch_stages = ("source",)
    stage_independent = {"source": TARGET_ONLY}

    def __init__(self, info: RobustInfo, kl_weight: float = 0.01, align_weight: float = 0.001,
                 temperature: float = 2.0, mask_ratio: float = 0.1, align_topk: float = 0.1,
                 target_init: str = "initial", **kw: Any):
        super().__init__(info, **kw)
        self.save_hyperparameters(ignore=["info"])
        choice("target_init", target_init, ("initial", "source"))
        if not 0 <= mask_ratio < 1 or not 0 < align_topk <= 1 or temperature <= 0:
            raise UserError(f"need 0 <= mask_ratio < 1, 0 < align_topk <= 1, temperature > 0; got "
                            f"{mask_ratio}, {align_topk}, {temperature}")
        if kl_weight < 0 or align_weight < 0:
            raise UserError(f"kl_weight and align_weight must be >= 0, got {kl_weight}, {align_weight}")
        hp = self.hparams
        self.source_net = Encoder(info, hp.hidden_size, hp.layers, hp.heads, hp.patch_size, hp.dropout)
        self.source_net.requires_grad_(False)
        self.stage = "source"

    def begin_stage(self, stage: str) -> None:
        self.stage = stage
        if stage == "target":  # freeze the calibrated source; the target starts afresh
            self.source_net.load_state_dict(self.net.state_dict())
            self.source_net.requires_grad_(False)
            if self.hparams.target_init == "initial":
                self.reset_net()

    def train(self, mode: bool = True) -> MiMu:
        super().train(mode)
        self.source_net.eval()  # always deterministic (no dropout) as the teacher
        return self

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        if self.stage == "source":
            return super().loss(batch)
        hp, y = self.hparams, batch["y"]
        valid = self.net.valid_tokens(batch)
        masked = random_token_mask(valid, hp.mask_ratio)
        need_att = hp.align_weight > 0
        logits, att_t = self.net(batch, masked=masked if masked.any() else None, attention=need_att)
        with torch.no_grad():
            logits_s, att_s = self.source_net(batch, attention=need_att)
        t = hp.temperature
        ce = F.cross_entropy(logits, y)
        kl = F.kl_div(F.log_softmax(logits / t, -1), F.log_softmax(logits_s / t, -1), log_target=True,
                      reduction="batchmean") * t * t
        br = brier(logits, y)
        align = alignment_loss(att_s, att_t, valid & ~masked, hp.align_topk) if need_att else ce.new_zeros(())
        loss = ce + hp.kl_weight * kl + hp.align_weight * align + hp.brier_weight * br
        self.log_dict({"train/ce": ce, "train/kl": kl, "train/align": align, "train/brier": br},
                      prog_bar=True, batch_size=len(y))
        return loss
