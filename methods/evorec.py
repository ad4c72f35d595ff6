"""EvoRec (Locate-Forget-Update) and its baselines for evolving an LLM recommender.

Two stages on the runner's stage protocol (each asks the dataset for its data with
``stage_data``: part ``base``, ``update`` or ``all``):

1. ``base``: a LoRA trained on the base period (every row shares it: ``stage_independent``).
2. ``update``, by row (``mode=``):

   - ``evorec``: **Locate** - for active users, the relative change of each layer's
     last-token hidden state between the prompt of their old sequence (base period) and of
     their updated one (base + new items), averaged over users; the ``locate_share`` of
     layers that changed most are the only ones whose LoRA modules train (no parameter is
     added). **Forget** - a SASRec (fitted on the base period with the base stage, refreshed
     on the active users' updated sequences at the update) scores each past (base)
     interaction of an active user against the state of their new items, relative to the
     item's overall frequency (pointwise mutual information, so popularity alone does not
     decide); past items the new preference makes less likely than their base rate
     (``forget_threshold``, 0 nats) are dropped from the histories of the update data.
     **Update** - the located LoRA modules train on the filtered new data.
   - ``finetune``: every LoRA parameter trains on the new data (unfiltered).
   - ``proximal``: as ``finetune`` plus (proximal / 2) * ||theta - theta_base||^2 over the
     LoRA parameters (a proximal-regularised continual LoRA).
   - ``retrain``: the LoRA is re-initialised and trained on all data so far.

Cost metrics, logged with the test: ``trainable_share`` (LoRA parameters the update may
change / all LoRA parameters) and ``update_seconds`` (wall time of the update: Locate,
Forget and the training steps; validation excluded; ``locate_forget_seconds`` is the
Locate + Forget part).
"""

from __future__ import annotations

import re
import time
from typing import Any

import torch
from torch import Tensor

from harness.api import StageData, choice
from harness.methods.llmrec import LoRARec

_LAYER = re.compile(r"\.layers\.(\d+)\.")


@torch.no_grad()
def layer_changes(model: torch.nn.Module, old: list[list[int]], new: list[list[int]]) -> Tensor:
    """Per layer, the mean over prompt pairs of ||h_l(new) - h_l(old)|| / ||h_l(old)||, h_l the
    layer's output at the last token ([n_layers])."""
    total = None
    for o, n in zip(old, new, strict=True):
        ho = model(input_ids=torch.tensor([o]), output_hidden_states=True).hidden_states[1:]
        hn = model(input_ids=torch.tensor([n]), output_hidden_states=True).hidden_states[1:]
        ch = torch.stack([(b[0, -1] - a[0, -1]).norm() / (a[0, -1].norm() + 1e-8)
                          for a, b in zip(ho, hn, strict=True)])
        total = ch if total is None else total + ch
    assert total is not None, "no prompt pairs"
    return total / len(old)


def select_layers(changes: Tensor, share: float) -> list[int]:
    """The ``share`` of layers (at least one) with the largest change, ascending."""
    k = max(1, round(share * len(changes)))
    return sorted(torch.argsort(changes, descending=True)[:k].tolist())


def item_log_prior(seqs: list[list[int]], n_items: int) -> Tensor:
    """log of each item's share of the interactions (add-one smoothed)."""
    counts = torch.ones(n_items)
    for s in seqs:
        counts += torch.bincount(torch.tensor(s, dtype=torch.long), minlength=n_items).float()
    return torch.log(counts / counts.sum())


@torch.no_grad()
def forget(sasrec: Any, past: dict[int, list[int]], recent: dict[int, list[int]],
           log_prior: Tensor, threshold: float = 0.0) -> dict[int, list[int]]:
    """Past items each user keeps. score_u(i) = log p(i | recent items) - log p(i): SASRec's
    next-item probability given the user's new items against the item's overall frequency
    (pointwise mutual information, so popularity alone does not decide). An item the current
    preference makes less likely than its base rate (score below ``threshold``, 0 by
    default) no longer fits and is dropped."""
    users = sorted(recent)
    logp = torch.log_softmax(sasrec.scores(sasrec.encode([recent[u] for u in users])), 1)
    rel = (logp - log_prior.to(logp.device)).cpu()
    return {u: [i for i in past[u] if row[i] >= threshold] for row, u in zip(rel, users, strict=True)}


class EvoLoRA(LoRARec):
    """Rows ``retrain``, ``finetune``, ``proximal`` and ``evorec`` (see the module docstring)."""

    metrics = {"hr_3_active": "max", "ndcg_3_active": "max", "hr_3_inactive": "max",
               "ndcg_3_inactive": "max", "hr_3": "max", "ndcg_3": "max",
               "trainable_share": "min", "update_seconds": "min"}
    search_space = {"lr": ("log", 1e-4, 1e-2), "locate_share": ("float", 0.1, 0.6),
                    "forget_threshold": ("float", -2.0, 2.0)}
    _MODES = ("evorec", "finetune", "proximal", "retrain")

    def __init__(self, info: Any, mode: str = "evorec", locate_share: float = 0.3,
                 forget_threshold: float = 0.0, proximal: float = 1.0, locate_users: int = 64,
                 sasrec_epochs: int = 100, sasrec_update_epochs: int = 10, **kw: Any):
        choice("mode", mode, self._MODES)
        super().__init__(info, **kw)
        self.info = info
        self.stages = ("base", "update")
        self.stage_independent = {"base": ("mode", "locate_share", "forget_threshold", "proximal",
                                           "locate_users", "sasrec_update_epochs")}
        # update seconds, trainable share, seconds of Locate + Forget (part of the first)
        self.register_buffer("cost", torch.zeros(3))
        from harness.methods.sasrec import SASRec

        # Forget's sequential model lives beside the LoRA: trained with the base period (in
        # the base stage's checkpoint), refreshed on the new sequences at each update
        self.sasrec = SASRec(len(info.split.titles), dim=32, dropout=0.1)
        self.sasrec.requires_grad_(False)
        self.register_buffer("sasrec_fitted", torch.zeros(()))  # so a resumed base stage skips it
        self.stage = "base"
        self.keep: dict[int, list[int]] | None = None
        self.located: list[int] = []
        self._anchor: dict[str, Tensor] = {}
        self._t0 = 0.0

    # -- stages ---------------------------------------------------------------------------

    def lora_params(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if "lora_" in n}

    def stage_data(self, stage: str) -> StageData:
        """The base period (``base``); at the update, both periods (``retrain``) or the new
        data, its histories filtered by Forget's ``keep`` (``evorec``)."""
        if stage == "base":
            return StageData(part="base")
        if self.hparams.mode == "retrain":
            return StageData(part="all")
        return StageData(part="update", options={} if self.keep is None else {"keep": self.keep})

    def begin_stage(self, stage: str) -> None:
        self.stage = stage
        if stage == "base":
            return
        t = time.perf_counter()
        mode, lora = self.hparams.mode, self.lora_params()
        for p in lora.values():
            p.requires_grad_(True)
        self.keep, self.located = None, []
        if mode == "retrain":
            from peft.tuners.lora import LoraLayer

            for m in self.model.modules():
                if isinstance(m, LoraLayer):
                    m.reset_lora_parameters("default", True)
        elif mode == "proximal":
            self._anchor = {n: p.detach().clone() for n, p in lora.items()}
        elif mode == "evorec":
            self.located = self.locate()
            for n, p in lora.items():
                p.requires_grad_(int(_LAYER.search(n).group(1)) in self.located)
            self.keep = self.forget_stale()
        share = sum(p.numel() for p in lora.values() if p.requires_grad) / sum(
            p.numel() for p in lora.values())
        prep = time.perf_counter() - t
        self.cost.copy_(torch.tensor([prep, share, prep]))

    def locate(self) -> list[int]:
        """Layers whose hidden states moved most from old to updated sequences (Locate)."""
        s = self.info.split
        users = s.active[: self.hparams.locate_users]
        was = self.model.training
        self.model.eval()
        changes = layer_changes(self.model, [self.info.prompt(s.base[u]) for u in users],
                                [self.info.prompt(s.base[u] + s.update[u]) for u in users])
        self.model.train(was)
        self.layer_change = changes
        return select_layers(changes, self.hparams.locate_share)

    def on_fit_start(self) -> None:
        """Base stage: fit Forget's SASRec on the base-period sequences (base cost, not the
        update's; stored in the base checkpoint, so rows sharing the stage share it too)."""
        if self.stage == "base" and not bool(self.sasrec_fitted):
            from harness.methods.sasrec import fit_sasrec

            self.sasrec.requires_grad_(True)
            fit_sasrec(self.sasrec, list(self.info.split.base.values()), self.hparams.sasrec_epochs,
                       seed=int(torch.initial_seed()) % 2**31)
            self.sasrec.requires_grad_(False)
            self.sasrec_fitted.fill_(1.0)

    def forget_stale(self) -> dict[int, list[int]]:
        """Past interactions of active users that still fit their current preference (Forget):
        the SASRec is refreshed on the active users' updated sequences, then scores their past."""
        from harness.methods.sasrec import fit_sasrec

        s = self.info.split
        updated = [s.base[u] + s.update[u] for u in s.active]
        self.sasrec.requires_grad_(True)
        fit_sasrec(self.sasrec, updated, self.hparams.sasrec_update_epochs,
                   seed=int(torch.initial_seed()) % 2**31)
        self.sasrec.requires_grad_(False)
        seqs = [s.base[u] + s.update.get(u, []) for u in s.base]
        return forget(self.sasrec, s.base, s.update, item_log_prior(seqs, len(s.titles)),
                      self.hparams.forget_threshold)

    # -- training -------------------------------------------------------------------------

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = super().training_step(batch, batch_idx)
        if self.stage == "update" and self.hparams.mode == "proximal":
            lora = self.lora_params()
            prox = sum(((lora[n] - a.to(lora[n].device)) ** 2).sum() for n, a in self._anchor.items())
            loss = loss + 0.5 * self.hparams.proximal * prox
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.stage == "update":
            self.cost[0] += time.perf_counter() - self._t0

    # -- evaluation -----------------------------------------------------------------------

    def _record(self, examples: list[Any], scores: list[Tensor]) -> None:
        """Metrics of scored (prompt, candidates, group) examples, one entry per example with
        its group (the queueing and batched scoring are :class:`LoRARec`'s)."""
        from harness.metrics.candidates import candidate_metrics

        for (_, _, group), s in zip(examples, scores, strict=True):
            m = candidate_metrics(s.unsqueeze(0), torch.zeros(1, dtype=torch.long, device=s.device))
            self._vals.append({"group": group, "hr_3": m["hr_3"], "ndcg_3": m["ndcg_3"]})

    def _log_eval(self, stage: str) -> None:
        out = {}
        for key in ("hr_3", "ndcg_3"):
            out[f"{stage}/{key}"] = torch.cat([v[key] for v in self._vals]).mean()
            for g in ("active", "inactive"):
                vals = [v[key] for v in self._vals if v["group"] == g]
                if vals:
                    out[f"{stage}/{key}_{g}"] = torch.cat(vals).mean()
        if stage == "test":
            out["test/update_seconds"] = self.cost[0].clone()
            out["test/trainable_share"] = self.cost[1].clone()
            out["test/locate_forget_seconds"] = self.cost[2].clone()
        self.log_dict(out)
        self._vals = []
