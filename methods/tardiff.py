"""TarDiff (arXiv 2510.26546): target-oriented diffusion for clinical time series, guided by the
influence of each synthetic sample on the downstream model; and its generator baselines.

Every row is judged the same way (:class:`SyntheticUtility`): in the test it generates a labelled
synthetic training set (as many samples per label as the real training split has), then

* **TSTR**: the downstream model (:class:`GRUClassifier`, a bidirectional GRU) trained on the
  synthetic set only;
* **TSRTR**: trained on the real training split plus a random ``alpha`` share of the synthetic set,
  ``alpha`` chosen from ``alphas`` on the validation AUPRC;
* both tested on the real test split: AUPRC and AUROC (torchmetrics), ``tstr_*`` / ``tsrtr_*``;
* **discriminative score**: a small GRU trained to tell real training series from synthetic ones,
  ``|accuracy - 0.5|`` on a held-out fifth (0 is indistinguishable);

each downstream model with its own seed (the run's seed and the model's index) and the same
budget of updates (``downstream_steps``) whatever its training set's size, the best state
chosen on the real validation AUPRC (docs/tardiff.md: under an epoch budget, larger training
sets won by getting more updates). The ``real`` row (:class:`RealOnly`) generates nothing and
reports the downstream model on real data only under the ``tsrtr_`` keys (alpha 0).

**TarDiff** (:class:`TarDiff`), the public code's three steps (``microsoft/TimeCraft``, ``TarDiff/``):

1. ``diffusion``: a denoising diffusion model over ``[T x C]`` series, a 1-D UNet
   (:class:`UNet1D`: residual blocks with scale-shift time embedding, self-attention, a label
   embedding added to the time embedding as in the public code's ``num_classes: 2``), 200 steps,
   betas from ``sqrt`` 5e-4 to ``sqrt`` 0.1 squared (the public code's "linear", diffusers'
   ``scaled_linear``), epsilon prediction, L1 loss.
2. ``classifier``: the downstream model trained on the real training split (BCE, the best
   validation epoch); then the cached gradient ``G = g / ||g||`` with ``g`` the gradient of the summed
   training loss over all its parameters (the public ``GradDotCalculator``).
3. Guided DDIM (``sample_steps`` 20, ``eta`` 1, diffusers' ``DDIMScheduler``): at each step the
   model predicts ``x0_hat`` from ``x_t``; for a chunk of samples of one label ``y`` the influence
   ``I = < grad_theta L(x0_hat, y) / ||.||, G >`` (``L`` the chunk's mean BCE) is differentiated in
   ``x0_hat`` by double backward, and the DDIM step's ``x_{t-1}`` moves along it:
   ``x_{t-1} <- x_{t-1} + s * B * dI/dx0_hat`` (``B`` the chunk size, so a sample's step does not
   shrink with the chunk; ``s`` = ``guidance_scale``). ``guidance: classifier`` moves along
   ``d log p(y | x0_hat) / d x0_hat`` instead (ordinary classifier guidance on the same model);
   ``guidance: none`` is the unguided sampler.

Where we differ from the public code, and why (docs/tardiff.md has the list): one standardisation
(per channel, the training split's) for every model, where the public code gives the diffusion
model an empirical-CDF scaling and the classifier z-scores; the classifier in eval mode while
guiding (the public script leaves dropout on); guidance added to the DDIM step instead of the
public ``(1 - s) x + s * s * grad`` mix (with its ``s = 1e-5`` the guidance is about 1e-10 of the
step, i.e. off).

**TimeVAE** (:class:`TimeVAE`, Desai et al. 2021, arXiv 2111.08095): convolutional encoder, decoder
= level + polynomial trend + convolutional residual (the interpretable TimeVAE), loss
``reconstruction_weight * SSE + KL``; conditioned on the label (a label channel into the encoder,
the one-hot label beside ``z`` into the decoder) so it samples per label like the others.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api import Method, choice
from harness.datasets.clinical import ClinicalInfo
from harness.errors import UserError

GUIDANCE = ("none", "classifier", "influence")


# --------------------------------------------------------------------------- networks


class GRUClassifier(nn.Module):
    """The downstream model (the public ``classifier/model.py``): a bidirectional GRU, the output
    at the last time step, a linear logit."""

    def __init__(self, channels: int, hidden: int = 256, layers: int = 2, dropout: float = 0.2):
        super().__init__()
        self.rnn = nn.GRU(channels, hidden, num_layers=layers, batch_first=True, bidirectional=True,
                          dropout=dropout if layers > 1 else 0.0)
        self.fc = nn.Linear(2 * hidden, 1)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, C) -> (B,)
        out, _ = self.rnn(x)
        return self.fc(out[:, -1]).squeeze(-1)


def _timestep_embedding(t: Tensor, dim: int) -> Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _norm(c: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(c, groups), c)


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the embedding as a scale and shift of the second norm."""

    def __init__(self, cin: int, cout: int, emb: int, dropout: float, groups: int):
        super().__init__()
        self.in_layers = nn.Sequential(_norm(cin, groups), nn.SiLU(), nn.Conv1d(cin, cout, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb, 2 * cout))
        self.out_norm = _norm(cout, groups)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), nn.Conv1d(cout, cout, 3, padding=1))
        self.skip = nn.Identity() if cin == cout else nn.Conv1d(cin, cout, 1)

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        h = self.in_layers(x)
        scale, shift = self.emb(e)[..., None].chunk(2, dim=1)
        h = self.out_layers(self.out_norm(h) * (1 + scale) + shift)
        return self.skip(x) + h


class _Attention(nn.Module):
    def __init__(self, c: int, heads: int, groups: int):
        super().__init__()
        self.norm = _norm(c, groups)
        self.attn = nn.MultiheadAttention(c, heads if c % heads == 0 else 1, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x).transpose(1, 2)
        return x + self.attn(h, h, h, need_weights=False)[0].transpose(1, 2)


class UNet1D(nn.Module):
    """A 1-D UNet over ``(B, C, T)`` (the public ``unet1d.py`` in small): ``channel_mult`` levels of
    ``res_blocks`` residual blocks, a stride-2 convolution between levels, self-attention at the
    levels in ``attention_levels`` and in the middle, and a class embedding added to the time
    embedding. ``T`` is padded to a multiple of ``2 ** (levels - 1)`` and cropped back."""

    def __init__(self, channels: int, model_channels: int = 64, channel_mult: Sequence[int] = (1, 2, 4, 4),
                 res_blocks: int = 2, attention_levels: Sequence[int] = (0, 1, 2), heads: int = 8,
                 num_classes: int = 2, dropout: float = 0.0, norm_groups: int = 32):
        super().__init__()
        mc = model_channels
        g = norm_groups
        emb = 4 * mc
        self.mc = mc
        self.time = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.label = nn.Embedding(num_classes, emb) if num_classes else None
        self.inp = nn.Conv1d(channels, mc, 3, padding=1)
        self.down = nn.ModuleList()
        skips, c = [mc], mc
        for lvl, m in enumerate(channel_mult):
            for _ in range(res_blocks):
                attn = _Attention(m * mc, heads, g) if lvl in attention_levels else nn.Identity()
                self.down.append(nn.ModuleList([_ResBlock(c, m * mc, emb, dropout, g), attn]))
                c = m * mc
                skips.append(c)
            if lvl < len(channel_mult) - 1:
                self.down.append(nn.ModuleList([nn.Conv1d(c, c, 3, stride=2, padding=1)]))
                skips.append(c)
        self.mid = nn.ModuleList([_ResBlock(c, c, emb, dropout, g), _Attention(c, heads, g),
                                  _ResBlock(c, c, emb, dropout, g)])
        self.up = nn.ModuleList()
        for lvl, m in reversed(list(enumerate(channel_mult))):
            for i in range(res_blocks + 1):
                blocks: list[nn.Module] = [_ResBlock(c + skips.pop(), m * mc, emb, dropout, g)]
                c = m * mc
                blocks.append(_Attention(c, heads, g) if lvl in attention_levels else nn.Identity())
                if lvl and i == res_blocks:
                    blocks.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                                nn.Conv1d(c, c, 3, padding=1)))
                self.up.append(nn.ModuleList(blocks))
        self.out = nn.Sequential(_norm(c, g), nn.SiLU(), nn.Conv1d(c, channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        self.factor = 2 ** (len(channel_mult) - 1)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        length = x.shape[-1]
        pad = (-length) % self.factor
        if pad:
            x = F.pad(x, (0, pad))
        e = self.time(_timestep_embedding(t, self.mc))
        if self.label is not None and y is not None:
            e = e + self.label(y.long())
        h = self.inp(x)
        hs = [h]
        for blocks in self.down:
            if len(blocks) == 1:
                h = blocks[0](h)
            else:
                h = blocks[1](blocks[0](h, e))
            hs.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, e)), e)
        for blocks in self.up:
            h = blocks[0](torch.cat([h, hs.pop()], dim=1), e)
            for b in blocks[1:]:
                h = b(h)
        return self.out(h)[..., :length]


# --------------------------------------------------------------------------- metrics and training


def auprc_auroc(logits: Tensor, y: Tensor) -> tuple[float, float]:
    """AUPRC (average precision) and AUROC, torchmetrics' binary functions."""
    from torchmetrics.functional.classification import binary_auroc, binary_average_precision

    t = y.long()
    return float(binary_average_precision(logits.float(), t)), float(binary_auroc(logits.float(), t))


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch: int = 2048) -> Tensor:
    """The model's logits for ``x``, in chunks on the model's device, returned on the CPU."""
    model.eval()
    if not len(x):
        return torch.zeros(0)
    dev = next(model.parameters()).device
    return torch.cat([model(x[i:i + batch].to(dev)).cpu() for i in range(0, len(x), batch)])


def fit_downstream(x: Tensor, y: Tensor, x_val: Tensor, y_val: Tensor, seed: int, hidden: int, layers: int,
                   dropout: float, steps: int, lr: float, batch_size: int, eval_every: int = 10,
                   device: torch.device | str = "cpu") -> tuple[GRUClassifier, float]:
    """Train a :class:`GRUClassifier` (BCE, Adam) with its own seed on ``device`` for ``steps``
    updates, whatever the training set's size (shuffled passes over it, the last one cut short),
    so that real data alone and real plus synthetic data get the same budget; the validation
    AUPRC is taken every ``eval_every`` steps and the best state kept. Returns the model and that
    AUPRC."""
    x, y = x.to(device), y.to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GRUClassifier(x.shape[-1], hidden, layers, dropout).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        best, state, step = -1.0, None, 0
        while step < steps:
            for idx in torch.randperm(len(x)).split(batch_size):
                model.train()
                loss = F.binary_cross_entropy_with_logits(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                if step % eval_every == 0 or step == steps:
                    ap, _ = auprc_auroc(predict(model, x_val), y_val)
                    if ap > best:
                        best, state = ap, {k: v.clone() for k, v in model.state_dict().items()}
                if step >= steps:
                    break
        if state is not None:
            model.load_state_dict(state)
    return model.eval(), best


def discriminative_score(real: Tensor, fake: Tensor, seed: int, hidden: int = 16, steps: int = 2000,
                         lr: float = 1e-3, batch_size: int = 128,
                         device: torch.device | str = "cpu") -> float:
    """``|accuracy - 0.5|`` of a one-layer GRU telling real from synthetic series (TimeGAN's score and
    its 2,000 Adam steps of batch 128): equal numbers of each, 80% to train, the accuracy on the
    other 20%."""
    n = min(len(real), len(fake))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        xr = real[torch.randperm(len(real))[:n]]
        xf = fake[torch.randperm(len(fake))[:n]]
        x = torch.cat([xr, xf]).to(device)
        y = torch.cat([torch.ones(n), torch.zeros(n)]).to(device)
        perm = torch.randperm(2 * n)
        cut = int(0.8 * 2 * n)
        tr, te = perm[:cut].to(device), perm[cut:].to(device)
        rnn = nn.GRU(x.shape[-1], hidden, batch_first=True).to(device)
        head = nn.Linear(hidden, 1).to(device)
        params = list(rnn.parameters()) + list(head.parameters())
        opt = torch.optim.Adam(params, lr=lr)

        def logit(b: Tensor) -> Tensor:
            return head(rnn(b)[1][-1]).squeeze(-1)

        for _ in range(steps):
            idx = tr[torch.randint(0, len(tr), (min(batch_size, len(tr)),)).to(device)]
            loss = F.binary_cross_entropy_with_logits(logit(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = ((logit(x[te]) > 0).float() == y[te]).float().mean().item()
    return abs(acc - 0.5)


# --------------------------------------------------------------------------- the shared evaluation


class SyntheticUtility(Method):
    """A row whose output is a labelled synthetic training set, judged by TSTR, TSRTR and the
    discriminative score in the test (module docstring). Subclasses implement :meth:`generate`."""

    metrics = {"tstr_auprc": "max", "tstr_auroc": "max", "tsrtr_auprc": "max", "tsrtr_auroc": "max",
               "discriminative_score": "min", "tsrtr_alpha": "max", "tsrtr_val_auprc": "max",
               "tstr_val_auprc": "max", "synthetic_positive_share": "max",
               "sample_seconds": "min", "loss": "min", "auprc": "max", "auroc": "max"}
    EVAL = ("downstream_hidden", "downstream_layers", "downstream_dropout", "downstream_steps",
            "downstream_lr", "downstream_batch_size", "downstream_eval_every",
            "alphas", "disc_hidden", "disc_steps", "figure_series")

    def _init_eval(self, info: ClinicalInfo) -> None:
        if not isinstance(info, ClinicalInfo):
            raise UserError("this method needs clinical time series (dataset clinical-series)")
        h = self.hparams
        sizes = (h.downstream_hidden, h.downstream_layers, h.downstream_steps, h.downstream_batch_size,
                 h.downstream_eval_every, h.disc_hidden, h.disc_steps)
        if min(sizes) < 1:
            raise UserError("downstream_hidden, downstream_layers, downstream_steps, downstream_batch_size, "
                            "downstream_eval_every, disc_hidden and disc_steps must be >= 1")
        if not h.alphas or any(not 0 < a <= 1 for a in h.alphas):
            raise UserError(f"alphas must be shares in (0, 1], got {list(h.alphas)}")
        self.info = info
        self._test: list[tuple[Tensor, Tensor]] = []

    def _one_process(self) -> None:
        if self.trainer.world_size > 1:
            raise UserError(f"{type(self).__name__} runs on one device (the cached gradient and the test's "
                            "evaluation use every example in one process): use JOBS=<n> to run n runs at "
                            "once instead of DEVICES / STRATEGY")

    def _stage_epochs(self) -> int:
        """How many epochs the current stage trains (its own parameter)."""
        return 1

    def on_fit_start(self) -> None:
        self._one_process()
        need = self._stage_epochs()
        if self.trainer.max_epochs is not None and 0 <= self.trainer.max_epochs < need:
            raise UserError(f"this stage trains {need} epochs but trainer.max_epochs is "
                            f"{self.trainer.max_epochs}; raise it (it is only a ceiling here)")

    def on_test_start(self) -> None:
        self._one_process()

    def on_train_epoch_end(self) -> None:
        if self.current_epoch + 1 >= self._stage_epochs():
            self.trainer.should_stop = True

    # -- what a row generates ----------------------------------------------------------------
    def generate(self, counts: dict[int, int]) -> tuple[Tensor, Tensor] | None:
        """``(x, y)``: ``counts[label]`` standardised series ``(n, T, C)`` per label; None: none."""
        raise NotImplementedError

    # -- the test ------------------------------------------------------------------------------
    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._test.append((batch["x"].detach().cpu(), batch["y"].detach().cpu()))

    def on_test_epoch_start(self) -> None:
        self._test = []

    def _downstream(self, x: Tensor, y: Tensor, k: int) -> tuple[GRUClassifier, float]:
        h = self.hparams
        xv, yv = self.info.arrays("val")
        return fit_downstream(x, y, xv, yv, seed=torch.initial_seed() % (2**31) * 101 + k,
                              hidden=h.downstream_hidden, layers=h.downstream_layers,
                              dropout=h.downstream_dropout, steps=h.downstream_steps, lr=h.downstream_lr,
                              batch_size=h.downstream_batch_size, eval_every=h.downstream_eval_every,
                              device=self.device)

    def on_test_epoch_end(self) -> None:
        # Lightning tests under inference mode; generating (guidance) and the downstream models
        # need autograd, and the collected test tensors are cloned out of inference mode
        with torch.inference_mode(False), torch.enable_grad():
            self._evaluate(torch.cat([b[0] for b in self._test]).clone(),
                           torch.cat([b[1] for b in self._test]).clone())

    def _evaluate(self, xt: Tensor, yt: Tensor) -> None:
        xr, yr = self.info.arrays("train")
        counts = {int(c): int((yr == c).sum()) for c in (0, 1)}
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch.initial_seed() % (2**31) + 7)
            synth = self.generate(counts)
        out: dict[str, float] = {}
        if synth is None:  # the real row: the downstream model on real data only (alpha 0)
            model, _ = self._downstream(xr, yr, 0)
            out["tsrtr_auprc"], out["tsrtr_auroc"] = auprc_auroc(predict(model, xt), yt)
            out["tsrtr_alpha"] = 0.0
            self._log(out)
            return
        xs, ys = synth[0].detach().float(), synth[1].detach().float()
        out["sample_seconds"] = time.perf_counter() - t0
        if not torch.isfinite(xs).all():
            raise RuntimeError("the generator produced non-finite series")
        out["synthetic_positive_share"] = float(ys.mean())
        model, out["tstr_val_auprc"] = self._downstream(xs, ys, 1)
        out["tstr_auprc"], out["tstr_auroc"] = auprc_auroc(predict(model, xt), yt)
        best = (-1.0, 0.0, None)
        gen = torch.Generator().manual_seed(torch.initial_seed() % (2**31) + 11)
        perm = torch.randperm(len(xs), generator=gen)
        for k, alpha in enumerate(self.hparams.alphas):
            take = perm[: int(round(alpha * len(xs)))]
            m, val_ap = self._downstream(torch.cat([xr, xs[take]]), torch.cat([yr, ys[take]]), 2 + k)
            if val_ap > best[0]:
                best = (val_ap, float(alpha), m)
        out["tsrtr_auprc"], out["tsrtr_auroc"] = auprc_auroc(predict(best[2], xt), yt)
        out["tsrtr_alpha"], out["tsrtr_val_auprc"] = best[1], best[0]
        out["discriminative_score"] = discriminative_score(
            xr, xs, seed=torch.initial_seed() % (2**31) * 13 + 5, hidden=self.hparams.disc_hidden,
            steps=self.hparams.disc_steps, device=self.device)
        self._log(out)
        self._figure(xr, yr, xs, ys)

    def _log(self, out: dict[str, float]) -> None:
        for k, v in out.items():
            self.log(f"test/{k}", float(v))

    def _figure(self, xr: Tensor, yr: Tensor, xs: Tensor, ys: Tensor) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        k = self.hparams.figure_series
        mean = torch.tensor(self.info.mean)
        std = torch.tensor(self.info.std)
        show = [0, 1, 4, 6]  # heart rate, systolic BP, respiratory rate, SpO2
        fig, axes = plt.subplots(2, len(show), figsize=(3.2 * len(show), 5), sharex=True)
        hours = np.arange(xr.shape[1])
        for row, label in enumerate((0, 1)):
            for col, c in enumerate(show):
                ax = axes[row, col]
                for x, y, colour in ((xr, yr, "tab:blue"), (xs, ys, "tab:red")):
                    pick = x[y == label][:k] * std[c] + mean[c]
                    for s in pick:
                        ax.plot(hours, s[:, c].numpy(), color=colour, alpha=0.35, lw=0.8)
                ax.set_title(f"{self.info.channels[c]} ({self.info.units[c]}), y={label}", fontsize=8)
        axes[0, 0].plot([], [], color="tab:blue", label="real")
        axes[0, 0].plot([], [], color="tab:red", label="generated")
        axes[0, 0].legend(fontsize=7)
        fig.tight_layout()
        self.log_figure(fig, "series.png")


class RealOnly(SyntheticUtility):
    """The ``real`` row: the downstream model trained on the real training split only."""

    stages = ()

    def __init__(self, info: ClinicalInfo, downstream_hidden: int = 256, downstream_layers: int = 2,
                 downstream_dropout: float = 0.2, downstream_steps: int = 3000, downstream_lr: float = 1e-3,
                 downstream_batch_size: int = 256, downstream_eval_every: int = 10,
                 alphas: Sequence[float] = (0.2, 0.4, 0.6, 0.8, 1.0),
                 disc_hidden: int = 16, disc_steps: int = 2000, figure_series: int = 6):
        super().__init__()
        self.save_hyperparameters(ignore=["info"])
        self._init_eval(info)

    def generate(self, counts: dict[int, int]) -> None:
        return None


# --------------------------------------------------------------------------- TarDiff


class TarDiff(SyntheticUtility):
    """TarDiff and its sampler ablations (module docstring): ``guidance`` ``influence`` (TarDiff),
    ``classifier`` (ordinary classifier guidance) or ``none`` (the unguided diffusion model)."""

    version = "1"
    # nothing for `make sweep`: its objective is the last stage's validation loss (the guiding
    # classifier's), which the guidance scale, used only when sampling, does not change; the
    # scale is picked on the validation AUPRC of the downstream model (scripts/tardiff_grid.yaml)
    search_space: dict[str, tuple[Any, ...]] = {}
    SAMPLING = ("guidance", "guidance_scale", "sample_steps", "eta", "sample_batch", *SyntheticUtility.EVAL)
    last_epoch_stages = ("diffusion",)
    stage_independent = {
        "diffusion": (*SAMPLING, "classifier_hidden", "classifier_layers", "classifier_dropout",
                      "classifier_epochs", "classifier_lr"),
        "classifier": (*SAMPLING, "model_channels", "channel_mult", "res_blocks", "attention_levels",
                       "heads", "norm_groups", "diffusion_epochs", "lr", "warmup_steps", "timesteps",
                       "beta_start", "beta_end"),
    }

    def __init__(self, info: ClinicalInfo, guidance: str = "influence", guidance_scale: float = 1.0,
                 model_channels: int = 64, channel_mult: Sequence[int] = (1, 2, 4, 4), res_blocks: int = 2,
                 attention_levels: Sequence[int] = (0, 1, 2), heads: int = 8, norm_groups: int = 32,
                 timesteps: int = 200,
                 beta_start: float = 5e-4, beta_end: float = 0.1, diffusion_epochs: int = 100,
                 lr: float = 1e-4,
                 warmup_steps: int = 1000, sample_steps: int = 20, eta: float = 1.0, sample_batch: int = 512,
                 classifier_hidden: int = 256, classifier_layers: int = 2, classifier_dropout: float = 0.2,
                 classifier_epochs: int = 40, classifier_lr: float = 1e-3,
                 downstream_hidden: int = 256, downstream_layers: int = 2,
                 downstream_dropout: float = 0.2, downstream_steps: int = 3000, downstream_lr: float = 1e-3,
                 downstream_batch_size: int = 256, downstream_eval_every: int = 10,
                 alphas: Sequence[float] = (0.2, 0.4, 0.6, 0.8, 1.0),
                 disc_hidden: int = 16, disc_steps: int = 2000, figure_series: int = 6):
        super().__init__()
        self.save_hyperparameters(ignore=["info"])
        choice("guidance", guidance, GUIDANCE)
        self._init_eval(info)
        if min(timesteps, sample_steps, diffusion_epochs, classifier_epochs, sample_batch, res_blocks) < 1:
            raise UserError("timesteps, sample_steps, diffusion_epochs, classifier_epochs, sample_batch and "
                            "res_blocks must be >= 1")
        if sample_steps > timesteps or not 0 < beta_start < beta_end < 1 or guidance_scale < 0 or eta < 0:
            raise UserError(f"need sample_steps <= timesteps, 0 < beta_start < beta_end < 1, "
                            f"guidance_scale >= 0, "
                            f"eta >= 0; got {sample_steps}, {timesteps}, {beta_start}, {beta_end}, "
                            f"{guidance_scale}, {eta}")
        self.stages = ("diffusion",) if guidance == "none" else ("diffusion", "classifier")
        self.unet = UNet1D(info.n_channels, model_channels, tuple(channel_mult), res_blocks,
                           tuple(attention_levels), heads, num_classes=2, norm_groups=norm_groups)
        self.classifier = GRUClassifier(info.n_channels, classifier_hidden, classifier_layers,
                                        classifier_dropout)
        # the cached, normalised training-loss gradient (one tensor per classifier parameter)
        for i, p in enumerate(self.classifier.parameters()):
            self.register_buffer(f"train_grad_{i}", torch.zeros_like(p))
        self.stage = self.stages[0]
        self.noise = self.schedulers()[0]

    def schedulers(self) -> tuple[Any, Any]:
        """diffusers' DDPM (training) and DDIM (sampling) schedulers on the public code's betas."""
        from diffusers import DDIMScheduler, DDPMScheduler

        h = self.hparams
        cfg = dict(num_train_timesteps=h.timesteps, beta_start=h.beta_start, beta_end=h.beta_end,
                   beta_schedule="scaled_linear", clip_sample=False, prediction_type="epsilon")
        return DDPMScheduler(**cfg), DDIMScheduler(**cfg, set_alpha_to_one=False, steps_offset=1,
                                                   timestep_spacing="leading")

    # -- stages ----------------------------------------------------------------------------------
    def begin_stage(self, stage: str) -> None:
        self.stage = stage
        self.unet.requires_grad_(stage == "diffusion")
        self.classifier.requires_grad_(stage == "classifier")

    def _stage_epochs(self) -> int:
        return self.hparams.diffusion_epochs if self.stage == "diffusion" else self.hparams.classifier_epochs

    def configure_optimizers(self) -> Any:
        h = self.hparams
        if self.stage == "classifier":
            return torch.optim.Adam(self.classifier.parameters(), lr=h.classifier_lr)
        opt = torch.optim.AdamW(self.unet.parameters(), lr=h.lr)
        warm = max(1, int(h.warmup_steps))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def diffusion_loss(self, x: Tensor, y: Tensor) -> Tensor:
        """L1 between the noise and its prediction at a uniform timestep (the public ``loss_type: l1``)."""
        z = x.transpose(1, 2)  # (B, C, T)
        noise = torch.randn_like(z)
        t = torch.randint(0, self.hparams.timesteps, (len(z),), device=z.device)
        pred = self.unet(self.noise.add_noise(z, noise, t), t, y)
        return F.l1_loss(pred, noise)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        if self.stage == "diffusion":
            loss = self.diffusion_loss(batch["x"], batch["y"])
        else:
            loss = F.binary_cross_entropy_with_logits(self.classifier(batch["x"]), batch["y"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["y"]))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        if self.stage == "diffusion":
            gen = torch.Generator().manual_seed(batch_idx)
            z = batch["x"].transpose(1, 2)
            noise = torch.randn(z.shape, generator=gen)
            t = torch.randint(0, self.hparams.timesteps, (len(z),), generator=gen)
            loss = F.l1_loss(self.unet(self.noise.add_noise(z, noise, t), t, batch["y"]), noise)
        else:
            logits = self.classifier(batch["x"])
            loss = F.binary_cross_entropy_with_logits(logits, batch["y"])
            self._val.append((logits.detach(), batch["y"]))
        self.log("val/loss", loss, batch_size=len(batch["y"]))

    def on_validation_epoch_start(self) -> None:
        self._val: list[tuple[Tensor, Tensor]] = []

    def on_validation_epoch_end(self) -> None:
        if self.stage == "classifier" and self._val:
            ap, roc = auprc_auroc(torch.cat([v[0] for v in self._val]), torch.cat([v[1] for v in self._val]))
            self.log("val/auprc", ap)
            self.log("val/auroc", roc)

    def finish_stages(self) -> None:
        if self.hparams.guidance == "influence":
            self.cache_train_gradient(*self.info.arrays("train"))

    # -- influence -------------------------------------------------------------------------------
    def _params(self) -> list[Tensor]:
        return list(self.classifier.parameters())

    def train_grad(self) -> list[Tensor]:
        return [getattr(self, f"train_grad_{i}") for i in range(len(self._params()))]

    def cache_train_gradient(self, x: Tensor, y: Tensor, batch: int = 1024) -> None:
        """``G = g / (||g|| + 1e-6)``, ``g`` the gradient of the summed training BCE over every
        classifier parameter (the public ``GradDotCalculator``), the classifier in eval mode."""
        self.classifier.eval()
        params = self._params()
        with torch.enable_grad():
            for p in params:
                p.requires_grad_(True)
            total = [torch.zeros_like(p) for p in params]
            for i in range(0, len(x), batch):
                xb, yb = x[i:i + batch].to(self.device), y[i:i + batch].to(self.device)
                loss = F.binary_cross_entropy_with_logits(self.classifier(xb), yb, reduction="sum")
                for t, g in zip(total, torch.autograd.grad(loss, params), strict=True):
                    t += g
        norm = torch.sqrt(sum((t ** 2).sum() for t in total))
        for buf, t in zip(self.train_grad(), total, strict=True):
            buf.copy_(t / (norm + 1e-6))
        self.classifier.requires_grad_(False)

    def guidance_objective(self, x0: Tensor, y: Tensor) -> Tensor:
        """The scalar the sampler ascends for a chunk ``x0`` ``(B, T, C)`` with labels ``y``:
        ``influence``: ``I = <grad_theta L / ||grad_theta L||, G>`` with ``L`` the chunk's mean BCE
        (the gradient kept in the graph for the double backward); ``classifier``:
        ``sum_i log p(y_i | x0_i)``."""
        self.classifier.eval()
        if self.hparams.guidance == "classifier":
            return -F.binary_cross_entropy_with_logits(self.classifier(x0), y, reduction="sum")
        params = self._params()
        for p in params:
            p.requires_grad_(True)
        try:
            loss = F.binary_cross_entropy_with_logits(self.classifier(x0), y)
            grads = torch.autograd.grad(loss, params, create_graph=True)
        finally:
            for p in params:
                p.requires_grad_(False)
        norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
        return sum((g * c).sum() for g, c in zip(grads, self.train_grad(), strict=True)) / (norm + 1e-6)

    def guidance_grad(self, x0: Tensor, y: Tensor) -> Tensor:
        """``d objective / d x0`` (:meth:`guidance_objective`), times the chunk size ``B`` for the
        influence (a chunk's mean loss gives each sample 1/B of the gradient)."""
        with torch.enable_grad():
            x0 = x0.detach().requires_grad_(True)
            grad = torch.autograd.grad(self.guidance_objective(x0, y), x0)[0]
        return grad * len(x0) if self.hparams.guidance == "influence" else grad

    # -- sampling --------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, y: Tensor, generator: torch.Generator, scale: float | None = None) -> Tensor:
        """Guided DDIM for labels ``y`` (module docstring, step 3): ``(n, T, C)`` standardised."""
        h = self.hparams
        scale = h.guidance_scale if scale is None else scale
        ddim = self.schedulers()[1]
        ddim.set_timesteps(h.sample_steps)
        self.unet.eval()
        x = torch.randn((len(y), self.info.n_channels, self.info.window), generator=generator).to(self.device)
        y = y.to(self.device)
        for t in ddim.timesteps:
            tt = torch.full((len(x),), int(t), device=self.device, dtype=torch.long)
            eps = self.unet(x, tt, y)
            step = ddim.step(eps, t, x, eta=h.eta, generator=generator)
            x = step.prev_sample
            if h.guidance != "none" and scale > 0:
                grad = self.guidance_grad(step.pred_original_sample.transpose(1, 2), y.float())
                x = x + scale * grad.transpose(1, 2)
        return x.transpose(1, 2)

    def generate(self, counts: dict[int, int]) -> tuple[Tensor, Tensor]:
        gen = torch.Generator().manual_seed(torch.initial_seed() % (2**31))
        xs, ys = [], []
        for label, n in counts.items():
            for lo in range(0, n, self.hparams.sample_batch):
                y = torch.full((min(self.hparams.sample_batch, n - lo),), label, dtype=torch.long)
                xs.append(self.sample(y, gen).cpu())
                ys.append(y.float())
        return torch.cat(xs), torch.cat(ys)


# --------------------------------------------------------------------------- TimeVAE


class _TimeVAENet(nn.Module):
    """TimeVAE's interpretable architecture, conditioned on the label."""

    def __init__(self, channels: int, length: int, hidden: Sequence[int], latent: int, trend_degree: int):
        super().__init__()
        self.c, self.t, self.latent, self.p = channels, length, latent, trend_degree
        layers: list[nn.Module] = []
        cin, t = channels + 1, length
        for h in hidden:
            layers += [nn.Conv1d(cin, h, 3, stride=2, padding=1), nn.ReLU()]
            cin, t = h, (t + 1) // 2
        self.enc = nn.Sequential(*layers, nn.Flatten())
        self.enc_t = t
        self.mu = nn.Linear(cin * t, latent)
        self.logvar = nn.Linear(cin * t, latent)
        z = latent + 2
        self.level = nn.Linear(z, channels)
        self.trend = nn.Linear(z, channels * trend_degree)
        self.dec_in = nn.Linear(z, cin * t)
        dec: list[nn.Module] = []
        for h in list(reversed(hidden))[1:] + [hidden[0]]:
            dec += [nn.ConvTranspose1d(cin, h, 3, stride=2, padding=1, output_padding=1), nn.ReLU()]
            cin = h
        self.dec = nn.Sequential(*dec, nn.Flatten())
        self.dec_out = nn.Linear(cin * t * 2 ** len(hidden), length * channels)
        self.register_buffer("poly", torch.stack([(torch.arange(length) / length) ** (k + 1)
                                                  for k in range(trend_degree)]))  # (p, T)

    def encode(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        lab = y.float()[:, None, None].expand(-1, 1, x.shape[1])
        h = self.enc(torch.cat([x.transpose(1, 2), lab], dim=1))
        return self.mu(h), self.logvar(h)

    def decode(self, z: Tensor, y: Tensor) -> Tensor:
        zy = torch.cat([z, F.one_hot(y.long(), 2).float()], dim=-1)
        b = len(z)
        level = self.level(zy)[:, None, :]  # (B, 1, C)
        coef = self.trend(zy).view(b, self.c, self.p)
        trend = torch.einsum("bcp,pt->btc", coef, self.poly)
        h = self.dec_in(zy).view(b, -1, self.enc_t)
        resid = self.dec_out(self.dec(h)).view(b, self.t, self.c)
        return level + trend + resid


class TimeVAE(SyntheticUtility):
    """TimeVAE (module docstring): stage ``vae``, then ``counts[y]`` samples per label from the prior."""

    version = "1"
    stages = ("vae",)
    last_epoch_stages = ("vae",)
    search_space = {"lr": ("log", 1e-4, 1e-2), "reconstruction_weight": ("float", 0.5, 10.0)}

    def __init__(self, info: ClinicalInfo, hidden: Sequence[int] = (50, 100, 200), latent_dim: int = 8,
                 trend_degree: int = 2, reconstruction_weight: float = 3.0, epochs: int = 100,
                 lr: float = 1e-3,
                 downstream_hidden: int = 256, downstream_layers: int = 2,
                 downstream_dropout: float = 0.2, downstream_steps: int = 3000, downstream_lr: float = 1e-3,
                 downstream_batch_size: int = 256, downstream_eval_every: int = 10,
                 alphas: Sequence[float] = (0.2, 0.4, 0.6, 0.8, 1.0),
                 disc_hidden: int = 16, disc_steps: int = 2000, figure_series: int = 6):
        super().__init__()
        self.save_hyperparameters(ignore=["info"])
        self._init_eval(info)
        if not hidden or min(hidden) < 1 or latent_dim < 1 or trend_degree < 1 or epochs < 1:
            raise UserError("hidden, latent_dim, trend_degree and epochs must be >= 1")
        self.net = _TimeVAENet(info.n_channels, info.window, tuple(hidden), latent_dim, trend_degree)

    def _stage_epochs(self) -> int:
        return self.hparams.epochs

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.net.parameters(), lr=self.hparams.lr)

    def elbo_loss(self, x: Tensor, y: Tensor) -> Tensor:
        """``w * sum of squared errors + KL`` per series, averaged (TimeVAE's loss)."""
        mu, logvar = self.net.encode(x, y)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        rec = ((self.net.decode(z, y) - x) ** 2).flatten(1).sum(1)
        kl = -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum(1)
        return (self.hparams.reconstruction_weight * rec + kl).mean()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.elbo_loss(batch["x"], batch["y"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["y"]))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(batch_idx)
            self.log("val/loss", self.elbo_loss(batch["x"], batch["y"]), batch_size=len(batch["y"]))

    @torch.no_grad()
    def generate(self, counts: dict[int, int]) -> tuple[Tensor, Tensor]:
        self.net.eval()
        gen = torch.Generator().manual_seed(torch.initial_seed() % (2**31))
        y = torch.cat([torch.full((n,), label) for label, n in counts.items()])
        z = torch.randn((len(y), self.hparams.latent_dim), generator=gen)
        return self.net.decode(z, y).cpu(), y.float()
