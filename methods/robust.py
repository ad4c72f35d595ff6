"""Transformer classifiers under spurious correlations, and the robustness baselines.

:class:`RobustClassifier` is the shared body: a ViT (images) or a BERT-style encoder (text)
built with transformers from a small config, or loaded from a local directory
(``BACKBONE=``, e.g. ViT-L/16 in21k), with a linear head on the [CLS] token; the [CLS]
row of the last layer's attention (mean over heads) is available for MiMu's alignment.
Validation logs ``acc``, ``worst_group_acc`` (group labels on validation: SubpopBench's
"attribute yes"), ``worst_class_acc`` (labels only: "attribute no") and ``ece``; the test
logs every metric of :mod:`harness.metrics.robust` plus the accuracy of each group.

Rows:

* ``erm``: cross-entropy.
* ``mimu-source``: MiMu's self-calibrated source model, cross-entropy + Brier score.
* ``jtt`` (Liu et al. 2021): stage ``identify`` trains ERM for ``identify_epochs`` (its last
  epoch, no selection); its training errors E are upsampled ``upweight`` times (Eq. 2) for
  stage ``upweight``, which trains a fresh model from the same initial weights. With
  ``epoch_size: train`` (the default) an upweighting epoch is a random draw of as many
  examples as the training split from the upsampled set, so JTT takes the same number of
  steps as every other row (SubpopBench's fixed budget); ``epoch_size: upsampled`` walks the
  whole upsampled set each epoch, as the JTT paper's code does (up to ``upweight`` x the steps).
* ``groupdro`` (Sagawa et al. 2020, Algorithm 1): the online group-DRO objective
  sum_g q_g L_g with q_g <- q_g exp(eta L_g), normalised; it uses the training group labels
  (an upper reference, not comparable to methods without them).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api import Method, StageData, choice
from harness.datasets.robustness import RobustInfo
from harness.errors import UserError
from harness.metrics import robust as rm

ROBUST_METRICS = {"acc": "max", "acc_weighted": "max", "worst_group_acc": "max", "worst_class_acc": "max",
                  "acc_all_broken": "max", "ece": "min"}
ROBUST_PREFIXES = {"acc_broken_": "max", "acc_set_": "max", "acc_group_": "max"}


def brier(logits: Tensor, y: Tensor) -> Tensor:
    """Brier score: mean over the batch of sum_c (p_c - 1[y = c])^2."""
    p = logits.softmax(-1)
    return (p - F.one_hot(y, p.shape[-1]).to(p.dtype)).pow(2).sum(-1).mean()


class Encoder(nn.Module):
    """ViT or BERT-style encoder + linear head on [CLS]; optional token masking and the
    last layer's [CLS] attention over the other tokens."""

    def __init__(self, info: RobustInfo, hidden_size: int, layers: int, heads: int, patch_size: int,
                 dropout: float):
        super().__init__()
        self.modality = info.modality
        if info.modality == "image":
            from transformers import ViTConfig, ViTModel

            if info.backbone:
                self.body = ViTModel.from_pretrained(info.backbone, local_files_only=True,
                                                     add_pooling_layer=False, use_mask_token=True,
                                                     attn_implementation="eager")
            else:
                if info.resolution % patch_size:
                    raise UserError(f"patch_size {patch_size} must divide the resolution "
                                    f"{info.resolution}")
                cfg = ViTConfig(image_size=info.resolution, patch_size=patch_size, hidden_size=hidden_size,
                                num_hidden_layers=layers, num_attention_heads=heads,
                                intermediate_size=4 * hidden_size, hidden_dropout_prob=dropout,
                                attention_probs_dropout_prob=0.0)
                cfg._attn_implementation = "eager"
                self.body = ViTModel(cfg, add_pooling_layer=False, use_mask_token=True)
        else:
            from transformers import AutoModel, BertConfig, BertModel

            if info.backbone:
                self.body = AutoModel.from_pretrained(info.backbone, local_files_only=True,
                                                      add_pooling_layer=False, attn_implementation="eager")
            else:
                cfg = BertConfig(vocab_size=info.vocab_size, hidden_size=hidden_size,
                                 num_hidden_layers=layers, num_attention_heads=heads,
                                 intermediate_size=4 * hidden_size, max_position_embeddings=info.max_len,
                                 type_vocab_size=2, hidden_dropout_prob=dropout,
                                 attention_probs_dropout_prob=0.0)
                cfg._attn_implementation = "eager"
                self.body = BertModel(cfg, add_pooling_layer=False)
        self.head = nn.Linear(self.body.config.hidden_size, info.n_classes)

    def n_tokens(self, batch: dict[str, Tensor]) -> int:
        """Token positions after [CLS] (patches, or text tokens incl. padding)."""
        if self.modality == "image":
            cfg = self.body.config
            side = batch["x"].shape[-1] // cfg.patch_size
            return side * side
        return batch["input_ids"].shape[1] - 1

    def valid_tokens(self, batch: dict[str, Tensor]) -> Tensor:
        """(B, n_tokens) True where a position holds a real token (not padding)."""
        if self.modality == "image":
            b = batch["x"].shape[0]
            return torch.ones(b, self.n_tokens(batch), dtype=torch.bool, device=batch["x"].device)
        return batch["attention_mask"][:, 1:].bool()

    def forward(self, batch: dict[str, Tensor], masked: Tensor | None = None,
                attention: bool = False) -> tuple[Tensor, Tensor | None]:
        """Logits and, with ``attention``, the last layer's [CLS] attention over the other
        positions, mean over heads (B, n_tokens). ``masked`` (B, n_tokens) hides positions
        from the model: patches are replaced by ViT's mask token, text tokens leave the
        attention mask."""
        if self.modality == "image":
            interp = batch["x"].shape[-1] != self.body.config.image_size
            out = self.body(pixel_values=batch["x"], bool_masked_pos=masked, output_attentions=attention,
                            interpolate_pos_encoding=interp)
        else:
            mask = batch["attention_mask"]
            if masked is not None:
                mask = mask.clone()
                mask[:, 1:] = mask[:, 1:] * (~masked).to(mask.dtype)
            kw = {"token_type_ids": batch["token_type_ids"]} if "token_type_ids" in batch else {}
            out = self.body(input_ids=batch["input_ids"], attention_mask=mask, output_attentions=attention,
                            **kw)
        logits = self.head(out.last_hidden_state[:, 0])
        att = out.attentions[-1][:, :, 0, 1:].mean(1) if attention else None
        return logits, att


class RobustClassifier(Method):
    """Shared body of the robustness rows (module docstring): ERM's cross-entropy."""

    metrics = ROBUST_METRICS
    metric_prefixes = ROBUST_PREFIXES
    search_space = {"lr": ("log", 1e-4, 3e-3), "weight_decay": ("log", 1e-4, 0.3)}

    def __init__(self, info: RobustInfo, lr: float = 1e-3, weight_decay: float = 0.05,
                 optimizer: str = "adamw", hidden_size: int = 64, layers: int = 4, heads: int = 4,
                 patch_size: int = 8, dropout: float = 0.1):
        super().__init__()
        self.save_hyperparameters(ignore=["info"])
        choice("optimizer", optimizer, ("adamw", "sgd"))
        if lr <= 0 or weight_decay < 0:
            raise UserError(f"lr must be > 0 and weight_decay >= 0, got {lr}, {weight_decay}")
        self.info = info
        self.net = Encoder(info, hidden_size, layers, heads, patch_size, dropout)
        self._initial = copy.deepcopy(self.net.state_dict())  # a fresh start for later stages
        self.register_buffer("train_share", info.train_share.float())
        self._val: list[tuple[Tensor, ...]] = []
        self._test: list[tuple[Tensor, ...]] = []

    # -- training ------------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        logits, _ = self.net(batch)
        loss = F.cross_entropy(logits, batch["y"])
        self.log("train/ce", loss, prog_bar=True, batch_size=len(batch["y"]))
        return loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self.loss(batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        if self.hparams.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.hparams.lr, momentum=0.9,
                                   weight_decay=self.hparams.weight_decay)
        return torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def reset_net(self) -> None:
        """Back to the weights this model was built with (a stage that starts afresh)."""
        self.net.load_state_dict(self._initial)

    # -- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def predict_probs(self, batch: dict[str, Tensor]) -> Tensor:
        return self.net(batch)[0].float().softmax(-1)

    def _world(self) -> int:
        trainer = self._trainer
        return trainer.world_size if trainer is not None else 1

    def _collect(self, records: list[tuple[Tensor, ...]], fields: int) -> list[Tensor]:
        """This rank's (probs, y, g[, set]) batches concatenated and, under DDP, gathered from
        every rank: the data module gives each rank a disjoint share of every split, so the
        metrics see each example exactly once."""
        if records:
            parts = [torch.cat(t) for t in zip(*records, strict=True)]
        else:  # a rank with no share of a small split
            parts = [torch.zeros(0, self.info.n_classes, device=self.device)] + [
                torch.zeros(0, dtype=torch.long, device=self.device) for _ in range(fields - 1)]
        if self._world() == 1:
            return parts
        sizes = self.all_gather(torch.tensor([len(parts[0])], device=self.device)).flatten().tolist()
        out = []
        for t in parts:
            pad = t.new_zeros((max(sizes) - len(t), *t.shape[1:]))
            every = self.all_gather(torch.cat([t, pad]))  # (world, max, ...)
            out.append(torch.cat([every[r, :k] for r, k in enumerate(sizes)]))
        return out

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._val.append((self.predict_probs(batch), batch["y"], batch["g"]))

    def on_validation_epoch_end(self) -> None:
        probs, y, g = self._collect(self._val, 3)
        self._val.clear()
        for k, v in rm.validation_metrics(probs, y, g, self.info.n_groups).items():
            self.log(f"val/{k}", v)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        s = torch.full_like(batch["y"], dataloader_idx)
        self._test.append((self.predict_probs(batch), batch["y"], batch["g"], s))

    def on_test_epoch_end(self) -> None:
        probs, y, g, s = self._collect(self._test, 4)
        self._test.clear()
        info = self.info
        out = rm.test_metrics(probs, y, g, s, info.set_names, self.train_share.cpu(), info.attr_names,
                              info.broken, info.collapse)
        uncollapsed = torch.tensor([n not in info.collapse for n in info.set_names])[s.cpu()]
        acc, count = rm.per_group(probs.argmax(1)[uncollapsed] == y[uncollapsed], g[uncollapsed],
                                  info.n_groups)
        for name, a, c in zip(info.group_names, acc.tolist(), count.tolist(), strict=True):
            if c > 0:
                out[f"acc_group_{name}"] = a
        for k, v in out.items():
            self.log(f"test/{k}", v, add_dataloader_idx=False)


class ERM(RobustClassifier):
    """Cross-entropy (row ``erm``)."""


class CalibratedSource(RobustClassifier):
    """MiMu's self-calibrated source model: cross-entropy + brier_weight x Brier score."""

    search_space = {**RobustClassifier.search_space, "brier_weight": ("log", 0.01, 1.0)}

    def __init__(self, info: RobustInfo, brier_weight: float = 0.1, **kw: Any):
        super().__init__(info, **kw)
        self.save_hyperparameters(ignore=["info"])

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        logits, _ = self.net(batch)
        ce, br = F.cross_entropy(logits, batch["y"]), brier(logits, batch["y"])
        self.log_dict({"train/ce": ce, "train/brier": br}, prog_bar=True, batch_size=len(batch["y"]))
        return ce + self.hparams.brier_weight * br


class JTT(RobustClassifier):
    """Just Train Twice (rows ``jtt``): see the module docstring."""

    search_space = {**RobustClassifier.search_space, "identify_epochs": ("int", 1, 10),
                    "upweight": ("int", 2, 100)}
    stages = ("identify", "upweight")
    last_epoch_stages = ("identify",)

    def __init__(self, info: RobustInfo, identify_epochs: int = 2, upweight: int = 20,
                 epoch_size: str = "train", **kw: Any):
        super().__init__(info, **kw)
        self.save_hyperparameters(ignore=["info"])
        choice("epoch_size", epoch_size, ("train", "upsampled"))
        if identify_epochs < 1 or upweight < 1:
            raise UserError(f"identify_epochs and upweight must be >= 1, got {identify_epochs}, {upweight}")
        self.stage = "identify"
        self.error_set: Tensor | None = None

    def begin_stage(self, stage: str) -> None:
        self.stage = stage
        if stage == "upweight":
            self.error_set = self.training_errors()
            self.reset_net()

    @torch.no_grad()
    def training_errors(self) -> Tensor:
        """Indices of the training examples the identification model misclassifies (the set E)."""
        was = self.net.training
        self.net.eval()
        wrong = []
        for batch in self.info.train_eval_loader():
            batch = {k: v.to(self.device) for k, v in batch.items()}
            wrong.append(batch["idx"][self.net(batch)[0].argmax(1) != batch["y"]].cpu())
        self.net.train(was)
        return torch.cat(wrong)

    def stage_data(self, stage: str) -> StageData:
        if stage == "upweight":
            opts = {"upsample": self.error_set.tolist(), "factor": self.hparams.upweight}
            if self.hparams.epoch_size == "train":
                opts["epoch_size"] = self.info.train_size
            return StageData(options=opts)
        return StageData()

    def on_train_start(self) -> None:
        if self.stage == "upweight" and self.error_set is not None:
            self.log("error_set_size", float(len(self.error_set)))  # logged as upweight/error_set_size

    def on_train_epoch_end(self) -> None:
        if self.stage == "identify" and self.current_epoch + 1 >= self.hparams.identify_epochs:
            self.trainer.should_stop = True  # T epochs of ERM, then the last epoch's weights


class GroupDRO(RobustClassifier):
    """Online group DRO (Sagawa et al. 2020, Algorithm 1), with training group labels."""

    search_space = {**RobustClassifier.search_space, "eta": ("log", 1e-3, 1.0)}

    def __init__(self, info: RobustInfo, eta: float = 0.01, **kw: Any):
        super().__init__(info, **kw)
        self.save_hyperparameters(ignore=["info"])
        present = torch.tensor(info.train_counts) > 0
        self.register_buffer("q", present.float() / present.sum())

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        logits, _ = self.net(batch)
        per = F.cross_entropy(logits, batch["y"], reduction="none")
        n = self.info.n_groups
        total = per.new_zeros(n).index_add(0, batch["g"], per)  # this rank's per-group sums
        count = torch.bincount(batch["g"], minlength=n).float()
        sums = total.detach()
        world = self._world()
        if world > 1:  # L_g over the global batch, so every rank updates q alike
            count = self.trainer.strategy.reduce(count, reduce_op="sum")
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        with torch.no_grad():  # q_g <- q_g exp(eta L_g), normalised (groups seen in the batch)
            self.q.mul_(torch.exp(self.hparams.eta * sums / count.clamp_min(1) * (count > 0)))
            self.q.div_(self.q.sum())
        # DDP averages the ranks' gradients: world x this rank's share of sum_g q_g L_g
        loss = world * (self.q * total / count.clamp_min(1)).sum()
        self.log_dict({"train/robust_loss": loss, "train/ce": per.mean(),
                       "train/q_max": self.q.max()}, prog_bar=True, batch_size=len(batch["y"]))
        return loss

