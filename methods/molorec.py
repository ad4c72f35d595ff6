"""MoLoRec (arXiv 2504.10551): a domain-general and a domain-specific LoRA, mixed per layer.

Stages (the runner's stage protocol; each asks the dataset for its data with ``stage_data``):
1. ``general``: a LoRA trained on all domains pooled;
2. ``specific``: a second LoRA on the target domain;
3. ``mixture`` (data part ``unlabelled``): both LoRAs active, each LoRA-wrapped layer l adds
   sum_k softmax(w_l / T)_k Delta W_k x, and only the logits w (layers x 2) are trained,
   by minimising the entropy of the model's distribution over each prompt's candidates
   on unlabelled *validation* prompts (the public code uses test prompts; the harness
   never touches test data before testing).
``finish_stages`` then merges the mixture into one adapter per layer
(Delta W_l = sum_k softmax(w_l / T)_k Delta W_k, exact, via concatenated A and B), so
inference costs one LoRA. peft merges with one weight per adapter for the whole model;
the per-layer weights are what is written here.

With ``learn_mixture=False`` the mixture stage is skipped and every layer keeps the
uniform weights softmax(0) = (1/2, 1/2): the fixed-average baseline (row ``avg-mix``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from harness.api import StageData
from harness.methods.llmrec import LoRARec, score_candidates


class MoLoRec(LoRARec):
    """General + specific LoRA, per-layer mixture learned by entropy minimisation (row ``molorec``)."""

    search_space = {"lr": ("log", 1e-4, 1e-2), "temperature": ("log", 0.1, 10.0),
                    "mix_lr": ("log", 1e-3, 1.0)}

    def __init__(self, info: Any, temperature: float = 1.0, mix_lr: float = 0.05,
                 learn_mixture: bool = True, **kw: Any):
        super().__init__(info, **kw)
        from peft.tuners.lora import LoraLayer

        self.target, self.all_domains = info.target, list(info.splits)
        self.model.add_adapter("specific", self.model.peft_config["default"])
        self.lora_layers = [m for m in self.model.modules() if isinstance(m, LoraLayer)]
        self.mix_logits = nn.Parameter(torch.zeros(len(self.lora_layers), 2), requires_grad=False)
        self.stages = ("general", "specific", "mixture") if learn_mixture else ("general", "specific")
        late = ("temperature", "mix_lr", "learn_mixture")  # rows avg-mix and molorec share both LoRAs
        self.stage_independent = {"general": late, "specific": late}
        self.unlabelled_prompts = False  # the mixture stage: entropy on unlabelled prompts
        self._hooks: list[Any] = []

    def mixture_weights(self) -> Tensor:
        """softmax(w / T) per layer: column 0 general, column 1 specific."""
        return torch.softmax(self.mix_logits / self.hparams.temperature, dim=1)

    def _unhook(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def begin_stage(self, stage: str) -> None:
        self._unhook()
        self.unlabelled_prompts = stage == "mixture"
        if stage == "general":
            self.model.set_adapter("default")
            self.domains = self.all_domains
        elif stage == "specific":
            self.model.set_adapter("specific")
            self.domains = [self.target]
        else:
            self.model.base_model.set_adapter(["default", "specific"])
            for p in self.model.parameters():
                p.requires_grad_(False)
            self.mix_logits.requires_grad_(True)
            for layer_idx, layer in enumerate(self.lora_layers):
                for k, name in enumerate(("default", "specific")):
                    self._hooks.append(layer.lora_B[name].register_forward_hook(
                        lambda _m, _i, out, li=layer_idx, k=k: out * self.mixture_weights()[li, k]))

    def stage_data(self, stage: str) -> StageData:
        """All domains (general), the target (specific), or the target's validation prompts
        and candidates without their labels (mixture)."""
        if stage == "mixture":
            return StageData(part="unlabelled")
        return super().stage_data(stage)  # the domains begin_stage chose

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        if not self.unlabelled_prompts:
            return super().training_step(batch, batch_idx)
        entropies = []
        for prompt, cands in batch:  # labels are never looked at
            logp = torch.log_softmax(score_candidates(self.model, prompt, cands, grad=True), 0)
            entropies.append(-(logp.exp() * logp).sum())
        loss = torch.stack(entropies).mean()
        self.log("train/entropy", loss, prog_bar=True, batch_size=len(batch))
        w = self.mixture_weights().detach()[:, 0]  # where the mixture leans: general's share
        self.log_dict({"train/general_weight_mean": w.mean(), "train/general_weight_min": w.min(),
                       "train/general_weight_max": w.max()}, batch_size=len(batch))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.unlabelled_prompts:
            return torch.optim.Adam([self.mix_logits], lr=self.hparams.mix_lr)
        return super().configure_optimizers()

    @torch.no_grad()
    def finish_stages(self) -> None:
        """Fold the per-layer mixture into one adapter of rank r_general + r_specific."""
        self._unhook()
        self.unlabelled_prompts = False
        cfg = self.model.peft_config["default"]
        r = 2 * cfg.r
        if "merged" not in self.model.peft_config:
            self.model.add_adapter("merged", type(cfg)(r=r, lora_alpha=r, lora_dropout=0.0,
                                                       target_modules=cfg.target_modules))
        w = self.mixture_weights()
        for li, layer in enumerate(self.lora_layers):
            a = [layer.lora_A[n].weight for n in ("default", "specific")]
            b = [layer.lora_B[n].weight * layer.scaling[n] * w[li, k]
                 for k, n in enumerate(("default", "specific"))]
            layer.lora_A["merged"].weight.copy_(torch.cat(a, 0))
            layer.lora_B["merged"].weight.copy_(torch.cat(b, 1))
        self.model.set_adapter("merged")
