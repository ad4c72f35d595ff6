"""Mesoscale eddy parameterization with momentum conservation (the eddy CNN) and its baselines.

The task (:class:`~harness.datasets.ocean.EddyDataModule`): from the coarse velocities
``(u, v)`` of both layers, predict the subgrid momentum forcing ``(Su, Sv)`` that the
low-resolution QG model misses. Every row is an :class:`EddyParameterization`:

* ``no-param`` (:class:`NoParameterization`): zero forcing;
* ``smagorinsky`` (:class:`Smagorinsky`): the eddy viscosity of Smagorinsky (1963);
* ``cnn`` / ``cnn-soft`` / ``cnn-hard`` (:class:`EddyCNN`): the fully convolutional
  network of Guillaumin & Zanna (2021) as in the m2lines pyqg benchmarks, with no
  constraint, momentum conservation as a soft penalty, or as a hard constraint (the
  domain mean of each output channel is subtracted, so the domain integral is exactly 0).

Test metrics: offline ``r2_upper``/``r2_lower`` and ``corr_*`` (per layer, the mean over
the u and v components), ``conservation_error`` (mean over test samples and channels of
``|<S_pred>| / rms(S_true)``, ``<.>`` the domain mean) and the online (a-posteriori) test:
the low-resolution model run with the parameterization inside from coarse-grained
high-resolution states, scored against the high-resolution run with
``ke_spectrum_score`` / ``ke_distribution_score`` = 1 - d(model, hi) / d(no-param, hi)
(see :class:`harness.datasets.ocean.EddyInfo`, which also runs the low-resolution model: the
methods import only the dataset's metadata types). A plot of the KE spectra goes to MLflow.

Note on the online effect of momentum conservation in this model: the QG model feels a
momentum forcing only through its curl, and the curl of a domain-uniform forcing is zero
on a doubly periodic domain, so the hard constraint changes the offline prediction and its
conservation error but not the online tendency of the PV; the soft penalty changes the
online run only through what the network learns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from harness.api import Method, choice
from harness.datasets.ocean import LAYERS, EddyInfo, OnlineStats
from harness.metrics import ocean as om

_METRICS = {
    "r2_upper": "max", "r2_lower": "max", "corr_upper": "max", "corr_lower": "max",
    "conservation_error": "min", "ke_spectrum_score": "max", "ke_distribution_score": "max",
    "ke_spectrum_score_upper": "max", "ke_spectrum_score_lower": "max",
    "ke_distribution_score_upper": "max", "ke_distribution_score_lower": "max",
    "online_seconds": "min", "r2": "max", "loss": "min",
}


class EddyParameterization(Method):
    """Shared evaluation: offline metrics over the test set, then the online test (``online``:
    whether to run it). Saves every constructor keyword of the subclass as a hyperparameter."""

    metrics = _METRICS

    def __init__(self, info: EddyInfo, online: bool = True):
        super().__init__()
        self.save_hyperparameters(ignore=["info"])  # the subclass's keywords too
        self.info = info
        self.online = online
        self.register_buffer("in_scale", info.in_scale.clone().float())
        self.register_buffer("out_scale", info.out_scale.clone().float())
        self._test: list[tuple[Tensor, Tensor]] = []
        self._ops: Any = None  # the low-resolution QGModel of the spectral derivatives

    # -- to implement ----------------------------------------------------------------------
    def forcing(self, x: Tensor) -> Tensor:
        """Subgrid momentum forcing ``[b, 4, n, n]`` (Su upper, lower, Sv upper, lower; physical
        units) from coarse velocities ``x`` ``[b, 4, n, n]`` (u upper, lower, v upper, lower)."""
        raise NotImplementedError

    # -- evaluation ------------------------------------------------------------------------
    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        with torch.no_grad():
            self._test.append((self.forcing(x).float().cpu(), y.float().cpu()))

    def on_test_epoch_end(self) -> None:
        pred = torch.cat([p for p, _ in self._test])
        true = torch.cat([t for _, t in self._test])
        self._test.clear()
        out = self.offline_metrics(pred, true)
        if self.online:
            run = self.online_stats()
            out.update(self.info.scores(run))
            out["online_seconds"] = run.seconds
            self._plot(run)
        for k, v in out.items():
            self.log(f"test/{k}", float(v), sync_dist=False)

    @staticmethod
    def offline_metrics(pred: Tensor, true: Tensor) -> dict[str, float]:
        """Per-layer R2 and correlation (mean over u and v), and the conservation error."""
        out: dict[str, float] = {}
        for i, layer in enumerate(LAYERS):
            chans = (i, i + 2)  # Su and Sv of the layer
            out[f"r2_{layer}"] = float(np.mean([om.r2_score(pred[:, c], true[:, c]) for c in chans]))
            out[f"corr_{layer}"] = float(np.mean([om.correlation(pred[:, c], true[:, c]) for c in chans]))
        rms = true.double().pow(2).mean(dim=(0, 2, 3)).sqrt()  # [4]
        mean = pred.double().mean(dim=(2, 3)).abs()  # [b, 4]
        out["conservation_error"] = float((mean / rms).mean())
        return out

    def _uv_parameterization(self, model: Any) -> tuple[Tensor, Tensor]:
        """The momentum forcing of the low-resolution ``model`` (a QGModel) in its state."""
        x = torch.cat([model.u, model.v], dim=-3).to(self.device, torch.float32)
        with torch.no_grad():
            s = self.forcing(x).to(model.dtype).to(model.device)
        return s[:, :2], s[:, 2:]

    def online_stats(self) -> OnlineStats:
        """Run the low-resolution model with this parameterization (the a-posteriori test)."""
        was = self.training
        self.eval()
        try:
            return self.info.run_online(self._uv_parameterization)
        finally:
            self.train(was)

    def _plot(self, run: OnlineStats) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n = run.spectrum.shape[1]
        k = np.arange(1, n + 1)
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        for i, (ax, layer) in enumerate(zip(axes, LAYERS, strict=True)):
            ax.loglog(k, self.info.reference.spectrum[i, :n], "k", lw=2, label="high-res")
            ax.loglog(k, self.info.noparam.spectrum[i, :n], "tab:gray", ls="--", label="no-param")
            ax.loglog(k, run.spectrum[i], "tab:red", label=type(self).__name__)
            ax.axvline(self.info.online["kmax"], color="k", lw=0.5, ls=":")
            ax.set_title(f"KE spectrum, {layer} layer", fontsize=9)
            ax.set_xlabel("wavenumber (domain modes)", fontsize=8)
            ax.legend(fontsize=7)
        fig.tight_layout()
        self.log_figure(fig, "ke_spectra.png")

    def _ops_model(self) -> Any:
        if self._ops is None or self._ops.device != self.device:
            self._ops = self.info.qg_model(self.device, torch.float32)
        return self._ops


class NoParameterization(EddyParameterization):
    """The low-resolution model as it is: zero subgrid forcing."""

    stages = ()  # nothing to train

    def __init__(self, info: EddyInfo, online: bool = True):
        super().__init__(info, online)

    def forcing(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)

    def online_stats(self) -> OnlineStats:  # the dataset ran exactly this run already
        return self.info.noparam


class Smagorinsky(EddyParameterization):
    """Smagorinsky (1963) eddy viscosity, as in pyqg's ``Smagorinsky`` parameterization::

        nu = (C dx)^2 sqrt(2 (Sxx^2 + Syy^2 + 2 Sxy^2)),   Sxx = du/dx, Syy = dv/dy,
        Sxy = (du/dy + dv/dx) / 2,   Su = 2 (d(nu Sxx)/dx + d(nu Sxy)/dy),
        Sv = 2 (d(nu Sxy)/dx + d(nu Syy)/dy)

    per layer, spectral derivatives on the low-resolution grid.
    """

    stages = ()  # nothing to train

    def __init__(self, info: EddyInfo, constant: float = 0.1, online: bool = True):
        super().__init__(info, online)
        self.constant = constant

    def forcing(self, x: Tensor) -> Tensor:
        m = self._ops_model()
        x = x.to(torch.float32)
        u, v = x[:, :2], x[:, 2:]
        sxx, syy = m.ddx(u), m.ddy(v)
        sxy = 0.5 * (m.ddy(u) + m.ddx(v))
        nu = (self.constant * self.info.cfg_lo.dx) ** 2 * torch.sqrt(2 * (sxx**2 + syy**2 + 2 * sxy**2))
        su = 2 * (m.ddx(nu * sxx) + m.ddy(nu * sxy))
        sv = 2 * (m.ddx(nu * sxy) + m.ddy(nu * syy))
        return torch.cat([su, sv], dim=1)


class FCNN(nn.Module):
    """The GZ21 / m2lines fully convolutional network::

        conv 128 (5x5) -> 64 (5x5) -> 32 (3x3) x 5 -> out (3x3)

    each hidden convolution followed by ReLU and BatchNorm, circular padding (a doubly
    periodic domain), no pooling: the output has the input's grid. ``width`` scales the
    hidden channels (1 = the paper's).
    """

    def __init__(self, c_in: int = 4, c_out: int = 4, width: float = 1.0, padding_mode: str = "circular"):
        super().__init__()
        chans = [max(1, round(c * width)) for c in (128, 64, 32, 32, 32, 32, 32)]
        kernels = [5, 5, 3, 3, 3, 3, 3]
        layers: list[nn.Module] = []
        prev = c_in
        for c, k in zip(chans, kernels, strict=True):
            layers += [nn.Conv2d(prev, c, k, padding=k // 2, padding_mode=padding_mode),
                       nn.ReLU(), nn.BatchNorm2d(c)]
            prev = c
        layers.append(nn.Conv2d(prev, c_out, 3, padding=1, padding_mode=padding_mode))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class EddyCNN(EddyParameterization):
    """The eddy CNN: :class:`FCNN` on normalised inputs, trained on the MSE of the
    normalised forcing, with momentum conservation as

    * ``constraint="soft"``: the loss adds ``lam * mean_c <S_c>^2`` (domain mean of each
      predicted channel, normalised units), a penalty on the domain integral;
    * ``constraint="hard"``: ``S_c <- S_c - <S_c>`` on the output, so the domain integral of
      the predicted forcing is zero to round-off, in training and in use;
    * ``constraint="none"``: the unconstrained network.
    """

    def __init__(self, info: EddyInfo, constraint: str = "none", lam: float = 1.0, lr: float = 1e-3,
                 width: float = 1.0, weight_decay: float = 0.0, online: bool = True):
        super().__init__(info, online)
        self.constraint = choice("constraint", constraint, ("none", "soft", "hard"))
        self.lam, self.lr, self.weight_decay = lam, lr, weight_decay
        self.net = FCNN(len(info.in_names), len(info.out_names), width)
        self._val: list[tuple[Tensor, Tensor]] = []

    def normalised(self, x: Tensor) -> Tensor:
        """Network output in normalised units, the hard constraint applied."""
        out = self.net(x / self.in_scale[:, None, None])
        if self.constraint == "hard":
            out = out - out.mean(dim=(-2, -1), keepdim=True)
        return out

    def forcing(self, x: Tensor) -> Tensor:
        return self.normalised(x.to(self.in_scale.dtype)) * self.out_scale[:, None, None]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        pred = self.normalised(x)
        mse = torch.mean((pred - y / self.out_scale[:, None, None]) ** 2)
        loss = mse
        if self.constraint == "soft":
            penalty = pred.mean(dim=(-2, -1)).pow(2).mean()
            loss = loss + self.lam * penalty
            self.log("train/penalty", penalty, on_epoch=True, on_step=False)
        self.log("train/mse", mse, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self._val.append((self.forcing(x).float(), y.float()))

    def on_validation_epoch_end(self) -> None:
        pred = torch.cat([p for p, _ in self._val])
        true = torch.cat([t for _, t in self._val])
        self._val.clear()
        r2 = float(np.mean([om.r2_score(pred[:, c], true[:, c]) for c in range(pred.shape[1])]))
        self.log("val/r2", r2)
        self.log("val/loss", torch.mean(((pred - true) / self.out_scale[:, None, None]) ** 2))

    def configure_optimizers(self) -> Any:
        opt = torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        steps = int(self.trainer.estimated_stepping_batches) if self.trainer else 1000
        # at least 30 steps: OneCycleLR divides by its warm-up length (tiny runs in tests)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, self.lr, total_steps=max(steps, 30), pct_start=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
