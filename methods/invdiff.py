"""InvDiff (arXiv 2412.17392, KDD 2025): debiasing a diffusion model without bias labels.

One class, five rows (``mode``), built from the runner's stages (each its own checkpoint, so a
killed run resumes in the stage it was in):

1. ``biased``: train (pixel UNet) or fine-tune (a local pipeline's UNet) the denoiser on the
   biased training data with the plain DDPM loss ||eps - eps_theta(z_t, t, c)||^2.
2. ``identify`` (row ``invdiff``): each training example's denoising loss under the biased model,
   averaged over fixed timesteps ``identify_timesteps`` and fixed noises (drawn from the
   example's index), then soft group assignments W (N x G) maximising the spread of the
   per-group mean loss (the paper's EIIL-style inference; the public code's
   ``src/group/train_group.py``):

       max_W  std_g( sum_i W_ig l_i / sum_i W_ig ) + keep_weight * min_ig (l_i W_ig),

   Adam on W, each row projected onto the probability simplex after every step
   (:func:`project_simplex`). The true groups are never read.
3. ``debias`` (rows ``invdiff``, ``invdiff-random``, ``group-oracle``): the biased UNet frozen,
   a small delta UNet beside it,

       eps = r * delta(z_t) + (1 - r) * eps_frozen(z_t),   delta(z_t) = eps_frozen(z_t) + d(z_t),

   with d's output layer zero-initialised, so at step 0 the output is exactly the frozen model's
   (the public code copies the full UNet as delta and zeroes its output layer, which scales the
   prediction by 1 - r at step 0; ours starts where the biased model is). Trained with the
   group-weighted loss plus the variance of the loss across groups (the paper's debiasing
   objective, as the public code's ``train_text_to_image.py`` computes it):

       L_g = sum_i W_ig l_i / sum_i W_ig,   L = mean_g L_g + lam * Var_g L_g

   over the groups present in the batch. W is the identified one (``invdiff``), a random one
   drawn like the identification's start (``random``: shows whether identification matters), or
   the true class x attribute groups, one-hot (``oracle``: uses the attribute labels, an upper
   reference).
   ``finetune``: the whole UNet trained for the same epochs with the plain loss.
4. Sampling (in the test): DDIM (diffusers' ``DDIMScheduler``, eta 0) with ``sample_steps``
   steps, ``samples_per_class`` images per class, from a generator seeded by the run's seed.

The test scores the samples with the data set's judge (:mod:`harness.datasets.robust_judge`: a
CNN trained on the real training images): ``bias_score`` (InvDiff's, on the judge's attribute
labels per conditioning class), ``minority_share`` (per class, the share of samples the judge
gives the attribute value that is rare in that class's training images; 0.5 is balance),
``class_agreement`` (the judge's class = the asked class),
``fd_cnn`` / ``precision_cnn`` / ``recall_cnn`` against the real test images' judge features
(``fd_cnn_train``: against the training images), ``group_ari`` / ``group_nmi`` (the argmax of W
against the true class x attribute groups), ``trainable_share`` (of the sampling model's
parameters, those its last stage trained), ``sample_seconds`` (per image) and the judge's own
validation accuracies; a grid of samples per row goes to MLflow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from harness.api import Method, choice
from harness.datasets.robust_judge import FEATURES_NAME, load_judge
from harness.datasets.robustness import RobustInfo
from harness.diffusion import Denoiser, PixelUNetConfig
from harness.errors import UserError
from harness.metrics.generative import bias_score, frechet_distance, group_agreement, precision_recall

MODES = ("biased", "finetune", "invdiff", "random", "oracle")
STAGES = {"biased": ("biased",), "finetune": ("biased", "finetune"),
          "invdiff": ("biased", "identify", "debias"), "random": ("biased", "debias"),
          "oracle": ("biased", "debias")}
SAMPLING = ("sample_steps", "samples_per_class", "knn", "grid", "sample_batch")
DEBIAS = ("debias_epochs", "debias_lr", "lam", "delta_ratio", *SAMPLING)
IDENTIFY = ("identify_timesteps", "identify_steps", "identify_lr", "keep_weight")


# --------------------------------------------------------------------------- mechanisms


def project_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of each row of ``v`` onto the probability simplex
    {w : w >= 0, sum w = 1} (Held et al. 1974; the sort-based algorithm of Duchi et al. 2008)."""
    u, _ = torch.sort(v, dim=-1, descending=True)
    css = u.cumsum(-1) - 1
    k = torch.arange(1, v.shape[-1] + 1, device=v.device, dtype=v.dtype)
    rho = ((u - css / k) > 0).sum(-1, keepdim=True)  # the number of positive entries (>= 1)
    theta = css.gather(-1, rho - 1) / rho.to(v.dtype)
    return (v - theta).clamp_min(0)


def group_means(loss: Tensor, weights: Tensor, eps: float = 1e-9) -> tuple[Tensor, Tensor]:
    """Per-group weighted mean loss ``L_g = sum_i W_ig l_i / sum_i W_ig`` (G,) and which groups
    have weight in the batch."""
    count = weights.sum(0)
    present = count > eps
    return (loss @ weights) / count.clamp_min(eps), present


def group_variance_loss(loss: Tensor, weights: Tensor, lam: float) -> tuple[Tensor, Tensor, Tensor]:
    """InvDiff's debiasing objective ``mean_g L_g + lam * Var_g L_g`` over the groups present
    (unbiased variance, as the public code's ``Tensor.var``; one group: its mean alone).
    Returns (objective, mean, variance)."""
    means, present = group_means(loss, weights)
    means = means[present]
    mean = means.mean()
    var = means.var() if means.numel() > 1 else means.new_zeros(())
    return mean + lam * var, mean, var


def spread_objective(loss: Tensor, w: Tensor, keep_weight: float) -> Tensor:
    """What the identification minimises: -(std_g of the per-group mean loss) - keep_weight *
    min_ig(l_i W_ig) (module docstring, step 2)."""
    per = loss.detach().reshape(-1, 1).to(w.dtype)
    means = (per * w).sum(0) / w.sum(0).clamp_min(1e-12)
    return -means.std() - keep_weight * (per * w).min()


def optimise_groups(w: Tensor, loss: Tensor, keep_weight: float, steps: int, opt: Any,
                    backward: Callable[[Tensor], None] = Tensor.backward) -> Tensor:
    """``steps`` optimiser steps on W (in place) against :func:`spread_objective`, each followed
    by the simplex projection; returns the last objective. The ``identify`` stage passes its
    Trainer's optimiser and ``manual_backward``."""
    for _ in range(steps):
        objective = spread_objective(loss, w, keep_weight)
        opt.zero_grad()
        backward(objective)
        opt.step()
        with torch.no_grad():
            w.copy_(project_simplex(w))
    return objective.detach()


def identify_groups(loss: Tensor, groups: int, steps: int, lr: float, keep_weight: float,
                    generator: torch.Generator) -> Tensor:
    """Soft assignments W (N x G) that maximise the spread of the per-group mean loss (module
    docstring, step 2), from :func:`random_groups`' start; Adam, then the simplex projection
    after every step (:func:`optimise_groups`, as the ``identify`` stage runs it)."""
    w = random_groups(loss.numel(), groups, generator).requires_grad_(True)
    optimise_groups(w, loss, keep_weight, steps, torch.optim.Adam([w], lr=lr))
    return w.detach()


def random_groups(n: int, groups: int, generator: torch.Generator) -> Tensor:
    """The identification's random start, not optimised (row ``invdiff-random``)."""
    return project_simplex(torch.rand(n, groups, generator=generator, dtype=torch.float64)).float()


# --------------------------------------------------------------------------- the method


class InvDiff(Method):
    """InvDiff and its rows (module docstring); ``mode`` picks the row."""

    version = "1"
    metrics = {"bias_score": "min", "minority_share": "max", "class_agreement": "max",
               f"fd_{FEATURES_NAME}": "min", f"fd_{FEATURES_NAME}_train": "min",
               f"precision_{FEATURES_NAME}": "max",
               f"recall_{FEATURES_NAME}": "max", "group_ari": "max", "group_nmi": "max",
               "trainable_share": "min", "sample_seconds": "min", "judge_attr_acc": "max",
               "judge_attr_worst_group_acc": "max", "judge_class_acc": "max", "loss": "min"}
    search_space = {"lam": ("log", 0.1, 100.0), "delta_ratio": ("float", 0.2, 1.0),
                    "debias_lr": ("log", 1e-4, 1e-2), "groups": ("cat", [4, 8, 16])}
    # every stage trains for a fixed length and keeps its last epoch (the paper trains a fixed
    # number of steps): validation data, which follow the biased training mix, select nothing
    last_epoch_stages = ("biased", "finetune", "identify", "debias")
    stage_independent = {"biased": ("mode", *DEBIAS, *IDENTIFY), "identify": ("mode", *DEBIAS),
                         "finetune": SAMPLING, "debias": SAMPLING}

    def __init__(self, info: RobustInfo, mode: str = "invdiff", unet_channels: Sequence[int] = (32, 64),
                 layers_per_block: int = 1, delta_channels: Sequence[int] = (16, 16), lr: float = 1e-3,
                 biased_epochs: int = 20, debias_epochs: int = 10, debias_lr: float | None = None,
                 groups: int = 8, lam: float = 1.0, delta_ratio: float = 0.8,
                 identify_timesteps: Sequence[int] = (100, 300, 500, 700, 900), identify_steps: int = 500,
                 identify_lr: float = 0.01, keep_weight: float = 3.0, sample_steps: int = 25,
                 samples_per_class: int = 100, knn: int = 3, grid: int = 8,
                 prompts: Sequence[str] | None = None, sample_batch: int = 256):
        super().__init__()
        self.save_hyperparameters(ignore=["info"])
        choice("mode", mode, MODES)
        if info.modality != "image" or not info.resolution:
            raise UserError("InvDiff generates images: use an image data set (robust-images)")
        if not info.judge:
            raise UserError("InvDiff's evaluation needs the data set's judge: give the dataset a "
                            "`judge: {...}` parameter (robust-images), see benchmarks/invdiff.yaml")
        counts = (biased_epochs, debias_epochs, identify_steps, sample_steps, samples_per_class, sample_batch)
        if min(counts) < 1:
            raise UserError("biased_epochs, debias_epochs, identify_steps, sample_steps, "
                            "samples_per_class and sample_batch must be >= 1")
        if not 0 < delta_ratio <= 1 or lam < 0 or groups < 2 or knn < 1:
            raise UserError(f"need 0 < delta_ratio <= 1, lam >= 0, groups >= 2, knn >= 1; got "
                            f"{delta_ratio}, {lam}, {groups}, {knn}")
        if samples_per_class <= knn:
            raise UserError(f"samples_per_class ({samples_per_class}) must exceed knn ({knn})")
        if not identify_timesteps:
            raise UserError("identify_timesteps must name at least one timestep")
        self.info = info
        self.stages = STAGES[mode]
        self.judge, self.judge_meta = load_judge(info.judge)
        self.attr_index = int(self.judge_meta["attribute_index"])
        n_cls = info.n_classes
        if mode == "oracle" and groups < 2 * n_cls:
            raise UserError(f"group-oracle uses the {2 * n_cls} class x attribute groups: groups must be "
                            f">= {2 * n_cls}, got {groups}")
        if prompts is None:
            prompts = [f"a photo of a {c.replace('_', ' ')}" for c in info.class_names]
        if info.backbone is None:
            self.den = Denoiser(n_cls, info.resolution, pixel=PixelUNetConfig(
                channels=tuple(unet_channels), layers_per_block=layers_per_block))
        else:
            self.den = Denoiser(n_cls, info.resolution, backbone=info.backbone, prompts=list(prompts))
        self.delta = self.den.make_delta(delta_channels)
        T = int(self.den.scheduler_config["num_train_timesteps"])
        bad = [t for t in identify_timesteps if not 0 <= int(t) < T]
        if bad:
            raise UserError(f"identify_timesteps {bad} outside [0, {T})")
        self.noise = self.den.train_scheduler()
        n = info.train_size
        # W (N x G): a parameter trained by the identify stage only (Adam, then the projection)
        self.assign = torch.nn.Parameter(torch.zeros(n, groups), requires_grad=False)
        self.register_buffer("example_loss", torch.full((n,), float("nan")))  # identification's l_i
        self.stage = self.stages[0]
        self._test_feats: list[Tensor] = []

    # -- stages ------------------------------------------------------------------------------
    def begin_stage(self, stage: str) -> None:
        self.stage = stage
        self.automatic_optimization = stage != "identify"
        debias = stage in ("identify", "debias")
        self.den.unet.requires_grad_(not debias)
        self.delta.requires_grad_(stage == "debias")
        self.assign.requires_grad_(stage == "identify")
        if stage == "debias" and self.hparams.mode == "random":
            gen = torch.Generator().manual_seed(torch.initial_seed())
            self.assign.copy_(random_groups(self.info.train_size, self.hparams.groups, gen))

    def _stage_epochs(self) -> int:
        return self.hparams.biased_epochs if self.stage == "biased" else (
            1 if self.stage == "identify" else self.hparams.debias_epochs)

    def on_fit_start(self) -> None:
        if self.trainer.world_size > 1:
            raise UserError("invdiff trains each run on one device (the identification needs every "
                            "training example's loss in one process, the test samples once): use "
                            "JOBS=<n> to run n runs at once, one GPU each, instead of DEVICES/STRATEGY")
        need = self._stage_epochs()
        if self.trainer.max_epochs is not None and 0 <= self.trainer.max_epochs < need:
            raise UserError(f"stage {self.stage} trains {need} epochs but trainer.max_epochs is "
                            f"{self.trainer.max_epochs}; raise it (it is only a ceiling here)")
        if self.stage in ("identify", "debias"):
            # Lightning does not call train() at fit start: the frozen UNet is put in eval mode
            # here (its zero dropout still draws random numbers in training mode)
            self.den.unet.eval()

    def train(self, mode: bool = True) -> InvDiff:
        super().train(mode)
        self.judge.eval()
        if self.stage in ("identify", "debias"):
            self.den.unet.eval()  # frozen
        return self

    def on_train_epoch_end(self) -> None:
        if self.current_epoch + 1 >= self._stage_epochs():
            self.trainer.should_stop = True

    def configure_optimizers(self) -> Any:
        if self.stage == "identify":
            return torch.optim.Adam([self.assign], lr=self.hparams.identify_lr)
        params = [p for p in self.parameters() if p.requires_grad]
        lr = self.hparams.lr if self.stage == "biased" else (self.hparams.debias_lr or self.hparams.lr)
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)

    # -- the noise prediction --------------------------------------------------------------------
    @property
    def uses_delta(self) -> bool:
        return self.hparams.mode in ("invdiff", "random", "oracle") and self.stage in ("debias", "test")

    def eps(self, z: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """The sampling model's noise prediction (module docstring, step 3)."""
        if not self.uses_delta:
            return self.den.predict(self.den.unet, z, t, y)
        with torch.no_grad():
            frozen = self.den.predict(self.den.unet, z, t, y)
        return frozen + self.hparams.delta_ratio * self.den.predict(self.delta, z, t, y)

    def _noised(self, z: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        return self.noise.add_noise(z, noise, t)

    def _per_example_loss(self, batch: dict[str, Tensor], t: Tensor, noise: Tensor,
                          z: Tensor | None = None) -> Tensor:
        z = self.den.encode(batch["x"]) if z is None else z
        pred = self.eps(self._noised(z, t, noise), t, batch["y"])
        return F.mse_loss(pred.float(), noise.float(), reduction="none").flatten(1).mean(1)

    def _fixed_draws(self, idx: Tensor, k: int, salt: int) -> Tensor:
        """Noise for each example from a generator seeded by its index (and ``k``, ``salt``)."""
        shape = self.den.latent_shape
        out = [torch.randn(shape, generator=torch.Generator().manual_seed(int(i) * 1009 + k * 7 + salt))
               for i in idx.tolist()]
        return torch.stack(out).to(self.device)

    # -- training ------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        if self.stage == "identify":
            self._record_losses(batch)
            if batch_idx + 1 == self.trainer.num_training_batches:  # every loss recorded
                self._identify()
            return None
        z = self.den.encode(batch["x"])
        noise = torch.randn_like(z)
        T = self.noise.config.num_train_timesteps
        t = torch.randint(0, T, (z.shape[0],), device=z.device)
        loss_i = self._per_example_loss(batch, t, noise, z)
        if self.stage == "debias":
            loss, mean, var = group_variance_loss(loss_i, self._weights(batch), self.hparams.lam)
            self.log_dict({"train/group_mean": mean, "train/group_var": var}, batch_size=len(loss_i))
        else:
            loss = loss_i.mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(loss_i))
        return loss

    def _true_groups(self, y: Tensor, g: Tensor) -> Tensor:
        """class x the judge's attribute, from the batch's group id (group_ids' bit layout)."""
        n_attr = len(self.info.attr_names)
        a = (g >> (n_attr - 1 - self.attr_index)) & 1
        return y * 2 + a

    def _weights(self, batch: dict[str, Tensor]) -> Tensor:
        if self.hparams.mode == "oracle":
            truth = self._true_groups(batch["y"], batch["g"])
            return F.one_hot(truth, self.hparams.groups).float()
        return self.assign[batch["idx"]]

    @torch.no_grad()
    def _record_losses(self, batch: dict[str, Tensor]) -> None:
        z = self.den.encode(batch["x"], sample=False)
        total = torch.zeros(z.shape[0], device=z.device)
        steps = [int(t) for t in self.hparams.identify_timesteps]
        for k, t in enumerate(steps):
            noise = self._fixed_draws(batch["idx"], k, salt=11)
            tt = torch.full((z.shape[0],), t, device=z.device, dtype=torch.long)
            total += self._per_example_loss(batch, tt, noise, z)
        self.example_loss[batch["idx"]] = total / len(steps)

    def _identify(self) -> None:
        """Step 2's optimisation of W, through the stage's optimiser (so the Trainer counts its
        steps and checkpoints the result)."""
        loss = self.example_loss
        if torch.isnan(loss).any():
            raise UserError(f"identification saw {int(torch.isnan(loss).sum())} of {loss.numel()} training "
                            "examples; the training loader must cover the split")
        hp = self.hparams
        gen = torch.Generator().manual_seed(torch.initial_seed())
        with torch.no_grad():
            self.assign.copy_(random_groups(loss.numel(), hp.groups, gen).to(self.assign.device))
        objective = optimise_groups(self.assign, loss, hp.keep_weight, hp.identify_steps, self.optimizers(),
                                    self.manual_backward)
        self.log("train/group_spread", -objective, batch_size=1)

    # -- validation: the plain denoising loss at fixed timesteps and noises ----------------------
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        idx = batch["idx"]
        T = self.noise.config.num_train_timesteps
        t = torch.as_tensor((idx.cpu().numpy() * 7919 + 13) % T, device=self.device)
        noise = self._fixed_draws(idx, 0, salt=29)
        with torch.no_grad():
            loss = self._per_example_loss(batch, t, noise, self.den.encode(batch["x"], sample=False)).mean()
        self.log("val/loss", loss, prog_bar=True, batch_size=len(idx))

    # -- test: sample and score ----------------------------------------------------------------
    def on_test_epoch_start(self) -> None:
        self.stage = "test"
        self._test_feats = []
        self.judge.to(self.device)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx == 0:  # the in-distribution test set is the reference
            self._test_feats.append(self.judge.features(batch["x"]).cpu())

    @torch.no_grad()
    def sample(self, n_per_class: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n_per_class`` images per class in [-1, 1] (DDIM, ``sample_steps`` steps) and their classes."""
        sched = self.den.sample_scheduler()
        sched.set_timesteps(self.hparams.sample_steps)
        images, classes = [], []
        for c in range(self.info.n_classes):
            noise = torch.randn((n_per_class, *self.den.latent_shape), generator=generator)
            for lo in range(0, n_per_class, self.hparams.sample_batch):  # DDIM (eta 0): rows independent
                z = noise[lo:lo + self.hparams.sample_batch].to(self.device)
                y = torch.full((len(z),), c, device=self.device, dtype=torch.long)
                for t in sched.timesteps:
                    tt = torch.full((len(z),), int(t), device=self.device, dtype=torch.long)
                    z = sched.step(self.eps(z, tt, y), t, z).prev_sample
                images.append(self.den.decode(z).cpu())
                classes.append(y.cpu())
        return torch.cat(images), torch.cat(classes)

    def _train_truth(self) -> tuple[Tensor, Tensor]:
        """Judge features and true class x attribute groups of the training images, in order."""
        feats, truth = [], []
        for batch in self.info.train_eval_loader():
            feats.append(self.judge.features(batch["x"].to(self.device)).cpu())
            truth.append(self._true_groups(batch["y"], batch["g"]))
        return torch.cat(feats), torch.cat(truth)

    def on_test_epoch_end(self) -> None:
        hp = self.hparams
        gen = torch.Generator().manual_seed(torch.initial_seed())
        start = time.perf_counter()
        images, classes = self.sample(hp.samples_per_class, gen)
        per_image = (time.perf_counter() - start) / len(images)
        with torch.no_grad():
            judged = [self.judge(images[lo:lo + hp.sample_batch].to(self.device))
                      for lo in range(0, len(images), hp.sample_batch)]
        pred_cls = torch.cat([j[0].argmax(1).cpu() for j in judged])
        pred_attr = torch.cat([j[1].argmax(1).cpu() for j in judged])
        feats = torch.cat([j[2].cpu() for j in judged])
        real = torch.cat(self._test_feats)
        train_feats, truth = self._train_truth()
        prec, rec = precision_recall(real, feats, k=hp.knn)
        out = {"bias_score": bias_score(pred_attr, classes, 2, self.info.n_classes),
               "class_agreement": float((pred_cls == classes).float().mean()),
               f"fd_{FEATURES_NAME}": frechet_distance(feats, real),
               f"fd_{FEATURES_NAME}_train": frechet_distance(feats, train_feats),
               f"precision_{FEATURES_NAME}": prec, f"recall_{FEATURES_NAME}": rec,
               "trainable_share": self.trainable_share(), "sample_seconds": per_image,
               "judge_attr_acc": self.judge_meta["val_attr_acc"],
               "judge_attr_worst_group_acc": self.judge_meta["val_attr_worst_group_acc"],
               "judge_class_acc": self.judge_meta["val_class_acc"]}
        # per class, the generated share of the attribute value that is rare in its training images
        rare = self._rare_values(truth)
        out["minority_share"] = float(torch.stack([(pred_attr[classes == c] == rare[c]).float().mean()
                                                   for c in range(self.info.n_classes)]).mean())
        if hp.mode in ("invdiff", "random", "oracle"):
            assign = (F.one_hot(truth, hp.groups).float() if hp.mode == "oracle"
                      else self.assign.cpu())
            agree = group_agreement(assign.argmax(1), truth)
            out.update(group_ari=agree["ari"], group_nmi=agree["nmi"])
        if hp.mode == "invdiff":
            minority = self._minority(truth)
            loss = self.example_loss.cpu()
            out["minority_loss_ratio"] = float(loss[minority].mean() / loss[~minority].mean())
        for k, v in out.items():
            self.log(f"test/{k}", float(v), sync_dist=False)
        self._log_grid(images, classes, pred_attr)

    def _rare_values(self, truth: Tensor) -> Tensor:
        """Per class, the attribute value rarer in its training images (``truth``: class x attribute)."""
        return torch.bincount(truth, minlength=2 * self.info.n_classes).view(-1, 2).argmin(1)

    def _minority(self, truth: Tensor) -> Tensor:
        """Training examples whose class x attribute group is the rarer of their class's two."""
        return (truth % 2) == self._rare_values(truth)[truth // 2]

    def trainable_share(self) -> float:
        """Parameters the last stage trained, as a share of the sampling model's parameters."""
        unet = sum(p.numel() for p in self.den.unet.parameters())
        if not self.uses_delta:
            return 1.0
        delta = sum(p.numel() for p in self.delta.parameters())
        return delta / (unet + delta)

    def _log_grid(self, images: Tensor, classes: Tensor, pred_attr: Tensor) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n_cls, k = self.info.n_classes, self.hparams.grid
        fig, axes = plt.subplots(n_cls, k, figsize=(k * 1.1, n_cls * 1.25), squeeze=False)
        attr = self.judge_meta["attribute"]
        for c in range(n_cls):
            rows = torch.nonzero(classes == c).flatten()[:k]
            for j in range(k):
                ax = axes[c, j]
                ax.axis("off")
                if j < len(rows):
                    img = ((images[rows[j]].permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1)
                    ax.imshow(np.asarray(img), interpolation="nearest")
                    ax.set_title(f"{attr}={int(pred_attr[rows[j]])}", fontsize=6)
            axes[c, 0].text(-0.1, 0.5, self.info.class_names[c], transform=axes[c, 0].transAxes,
                            ha="right", va="center", fontsize=7)
        fig.suptitle(f"{self.hparams.mode}: samples per class (judge's {attr} label)", fontsize=8)
        self.log_figure(fig, "samples.png")
