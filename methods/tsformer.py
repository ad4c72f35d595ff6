"""TSformer (non-autoregressive 3-D Swin U-Net ocean forecaster) and its baselines.

Every row is a :class:`Forecaster` on :class:`~harness.datasets.ocean.ForecastDataModule`
windows: ``t_in`` past days of normalised 3-D fields ``x3 [B, T_in, C3, D, H, W]`` and
surface fields ``x2 [B, T_in, C2, H, W]`` in, ``t_out`` lead days out.

* ``persistence``: the last input day for every lead;
* ``climatology``: the day-of-year climatology of the training years;
* ``unet-ar`` (:class:`UNetAR`): a U-Net trained one day ahead and rolled out day by day;
* ``tsformer`` (:class:`TSformer`): :class:`~harness.methods.swin.TSformerNet`, every lead
  day in one forward pass, trained on the mean over leads.

Test metrics, in physical units over ocean points with cos(latitude) weights
(WeatherBench 2): ``rmse_<var>_d<lead>`` and ``acc_<var>_d<lead>`` per variable and lead
day, for 3-D variables over all depth levels, their means over leads ``rmse_<var>`` and
``acc_<var>``, per depth level ``rmse_<var>_l<k>`` (mean over leads), and
``forecast_seconds`` (wall time of one forecast of all leads, per sample). RMSE averages
the squared error over test forecasts before the square root; ACC is averaged over
forecasts. A plot of RMSE against lead day goes to MLflow.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from harness.api import Method, choice
from harness.datasets.ocean import ForecastInfo
from harness.errors import UserError
from harness.methods.swin import TSformerNet, UNet2d, rollout
from harness.metrics import ocean as om


class Forecaster(Method):
    """Shared evaluation of a forecaster: ``forecast(x3, x2, doy) -> (y3, y2)`` normalised;
    ``doy [B, t_in + t_out]`` is the day of year of every day of the window. Saves every
    constructor keyword of the subclass as a hyperparameter."""

    metrics = {"loss": "min", "rmse": "min", "forecast_seconds": "min"}
    metric_prefixes = {"rmse_": "min", "acc_": "max"}

    def __init__(self, info: ForecastInfo):
        super().__init__()
        self.save_hyperparameters(ignore=["info"])  # the subclass's keywords too
        self.info = info
        self.register_buffer("mask3", info.mask3.float(), persistent=False)
        self.register_buffer("mask2", info.mask2.float(), persistent=False)
        self.register_buffer("weights", info.weights.float(), persistent=False)
        self.register_buffer("clim3", info.clim3, persistent=False)
        self.register_buffer("clim2", info.clim2, persistent=False)
        self._acc: dict[str, Any] = {}

    def forecast(self, x3: Tensor, x2: Tensor, doy: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    # -- evaluation ------------------------------------------------------------------------
    def _errors(self, y3: Tensor, y2: Tensor, t3: Tensor, t2: Tensor, doy: Tensor) -> dict[str, Tensor]:
        """Per-sample, per-lead weighted MSE and ACC terms, physical units.

        Returns ``mse3 [B, T, C3, D]``, ``mse2 [B, T, C2]``, ``acc3 [B, T, C3]``, ``acc2 [B, T, C2]``."""
        i = self.info
        w3 = self.weights * self.mask3  # [D, H, W]
        w2 = self.weights * self.mask2
        p3, o3 = i.denorm3(y3), i.denorm3(t3)
        p2, o2 = i.denorm2(y2), i.denorm2(t2)
        c3, c2 = i.denorm3(self.clim3[doy]), i.denorm2(self.clim2[doy])
        mse3 = om.weighted_sse(p3, o3, w3) / w3.sum(dim=(-2, -1))
        mse2 = om.weighted_sse(p2, o2, w2) / w2.sum()
        # ACC of a 3-D variable over all its levels: flatten depth into the spatial sum
        acc3 = om.acc(p3.flatten(-3, -2), o3.flatten(-3, -2), c3.flatten(-3, -2), w3.flatten(-3, -2))
        acc2 = om.acc(p2, o2, c2, w2)
        return {"mse3": mse3, "mse2": mse2, "acc3": acc3, "acc2": acc2}

    def _eval_step(self, batch: tuple[Tensor, ...], stage: str) -> None:
        x3, x2, t3, t2, doy = batch
        start = time.perf_counter()
        with torch.no_grad():
            y3, y2 = self.forecast(x3, x2, doy)
        seconds = time.perf_counter() - start
        e = self._errors(y3, y2, t3, t2, doy[:, -self.info.t_out:])
        acc = self._acc.setdefault(stage, {k: [] for k in (*e, "seconds")})
        for k, v in e.items():
            acc[k].append(v.double().cpu())
        acc["seconds"].append(torch.tensor([seconds / len(x3)] * len(x3), dtype=torch.float64))

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def summarise(self, stage: str) -> dict[str, float]:
        """Metrics from the accumulated per-sample terms (see the module docstring)."""
        acc = {k: torch.cat(v) for k, v in self._acc.pop(stage).items()}
        i, out = self.info, {}
        std3 = i.std3.double()
        norm = []  # normalised RMSE of every variable, for the validation score
        for c, var in enumerate(i.var3):
            mse = acc["mse3"][:, :, c].mean(0)  # [T, D]
            rm = mse.mean(-1).sqrt()  # [T] over all levels
            for t in range(i.t_out):
                out[f"rmse_{var}_d{t + 1}"] = float(rm[t])
                out[f"acc_{var}_d{t + 1}"] = float(acc["acc3"][:, t, c].mean())
            out[f"rmse_{var}"] = float(rm.mean())
            out[f"acc_{var}"] = float(acc["acc3"][:, :, c].mean())
            for k in range(mse.shape[-1]):
                out[f"rmse_{var}_l{k}"] = float(mse[:, k].sqrt().mean())
            norm.append((mse / std3[c] ** 2).mean(-1).sqrt().mean())
        for c, var in enumerate(i.var2):
            rm = acc["mse2"][:, :, c].mean(0).sqrt()
            for t in range(i.t_out):
                out[f"rmse_{var}_d{t + 1}"] = float(rm[t])
                out[f"acc_{var}_d{t + 1}"] = float(acc["acc2"][:, t, c].mean())
            out[f"rmse_{var}"] = float(rm.mean())
            out[f"acc_{var}"] = float(acc["acc2"][:, :, c].mean())
            norm.append(rm.mean() / float(i.std2[c]))
        out["rmse"] = float(torch.stack(norm).mean())  # mean normalised RMSE over variables
        out["forecast_seconds"] = float(acc["seconds"].mean())
        return out

    def on_validation_epoch_end(self) -> None:
        if "val" in self._acc:
            self.log("val/rmse", self.summarise("val")["rmse"])

    def on_test_epoch_end(self) -> None:
        out = self.summarise("test")
        for k, v in out.items():
            self.log(f"test/{k}", v)
        self._plot(out)

    def _plot(self, out: dict[str, float]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = [*self.info.var3, *self.info.var2]
        leads = np.arange(1, self.info.t_out + 1)
        fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), squeeze=False)
        for ax, var in zip(axes[0], names, strict=True):
            ax.plot(leads, [out[f"rmse_{var}_d{t}"] for t in leads], marker=".")
            ax.set_title(f"RMSE {var}", fontsize=9)
            ax.set_xlabel("lead day", fontsize=8)
        fig.suptitle(type(self).__name__, fontsize=9)
        fig.tight_layout()
        self.log_figure(fig, "rmse_by_lead.png")


class Persistence(Forecaster):
    """Every lead day equals the last observed day."""

    stages = ()  # nothing to train

    def __init__(self, info: ForecastInfo):
        super().__init__(info)

    def forecast(self, x3: Tensor, x2: Tensor, doy: Tensor) -> tuple[Tensor, Tensor]:
        t = self.info.t_out
        return (x3[:, -1:].expand(-1, t, *x3.shape[2:]), x2[:, -1:].expand(-1, t, *x2.shape[2:]))


class Climatology(Forecaster):
    """The training years' day-of-year climatology (smoothed) of each target day."""

    stages = ()  # nothing to train

    def __init__(self, info: ForecastInfo):
        super().__init__(info)

    def forecast(self, x3: Tensor, x2: Tensor, doy: Tensor) -> tuple[Tensor, Tensor]:
        out = doy[:, -self.info.t_out:]
        return self.clim3[out] * self.mask3, self.clim2[out] * self.mask2


def _masked_mse(y: Tensor, t: Tensor, mask: Tensor) -> Tensor:
    """MSE over ocean points (mask broadcast over batch, time and variables)."""
    m = mask.expand_as(y)
    return ((y - t) ** 2 * m).sum() / m.sum().clamp_min(1)


class _Trained(Forecaster):
    """A trained forecaster. With ``anomalies`` the network sees and predicts departures from
    the training years' day-of-year climatology (added back to its output), so the seasonal
    cycle is known exactly and the network spends itself on the eddies. ``anomalies`` is
    ``True`` (every variable), ``False``, or a list of variable names (e.g. ``[thetao]``: only
    the variables with a seasonal cycle; a climatology estimated from a few years keeps eddy
    noise, which would be added to fields that have no cycle).

    ``roll_augment`` shifts every training sample (inputs and targets together, in anomaly
    space) by a random periodic offset in lat and lon: an exact symmetry of a doubly periodic,
    statistically homogeneous domain such as the QG simulation's, which teaches translation
    equivariance to a network that does not have it built in (absolute position embeddings,
    a fixed window grid). ``True`` needs data marked periodic (``ForecastInfo.periodic``) and
    is refused otherwise, since on a regional sea it is wrong; ``"auto"`` turns it on exactly
    when the data is periodic."""

    def __init__(self, info: ForecastInfo, lr: float, weight_decay: float,
                 anomalies: bool | list[str] = False, roll_augment: bool | str = False,
                 loss_weights: str = "values"):
        super().__init__(info)
        self.lr, self.weight_decay = lr, weight_decay
        self.loss_weights = choice("loss_weights", loss_weights, ("values", "variables"))
        choice("roll_augment", roll_augment, (True, False, "auto"))
        if roll_augment is True and not info.periodic:
            raise UserError("roll_augment needs a doubly periodic domain; this data is not marked "
                            "periodic (a regional sea): use roll_augment: auto or false")
        self.roll_augment = info.periodic if roll_augment == "auto" else bool(roll_augment)
        if self.roll_augment and not (bool(info.mask3.all()) and bool(info.mask2.all())):
            raise UserError("roll_augment: the data is marked periodic but has land points; use "
                            "roll_augment: false")
        if not isinstance(anomalies, bool | list | tuple | type(None)):
            raise UserError(f"anomalies must be true, false or a list of variable names, got {anomalies!r}")
        names = [*info.var3, *info.var2] if anomalies is True else list(anomalies or [])
        unknown = sorted(set(names) - {*info.var3, *info.var2})
        if unknown:
            raise UserError(f"anomalies: unknown variables {unknown}; the data has "
                            f"{[*info.var3, *info.var2]}")
        self.anomalies = bool(names)
        sel3 = torch.tensor([v in names for v in info.var3], dtype=torch.float32)
        sel2 = torch.tensor([v in names for v in info.var2], dtype=torch.float32)
        # the climatology that is removed and restored: selected variables, ocean points only
        self.register_buffer("aclim3", info.clim3 * sel3[:, None, None, None] * self.mask3, persistent=False)
        self.register_buffer("aclim2", info.clim2 * sel2[:, None, None] * self.mask2, persistent=False)

    def _shift(self, x3: Tensor, x2: Tensor, doy: Tensor, sign: float) -> tuple[Tensor, Tensor]:
        """``x -/+ climatology`` of the days ``doy [B, T]`` for the selected variables (identity
        without ``anomalies``)."""
        if not self.anomalies:
            return x3, x2
        return x3 + sign * self.aclim3[doy], x2 + sign * self.aclim2[doy]

    def net_forecast(self, x3: Tensor, x2: Tensor, doy: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forecast(self, x3: Tensor, x2: Tensor, doy: Tensor) -> tuple[Tensor, Tensor]:
        t_in = x3.shape[1]
        a3, a2 = self._shift(x3, x2, doy[:, :t_in], -1.0)
        y3, y2 = self.net_forecast(a3, a2, doy)
        return self._shift(y3, y2, doy[:, t_in:t_in + y3.shape[1]], 1.0)

    def train_forward(self, a3: Tensor, a2: Tensor) -> tuple[Tensor, Tensor]:
        """The network's training prediction from (anomaly) inputs: the first ``n`` lead days."""
        raise NotImplementedError

    @staticmethod
    def _roll(tensors: list[Tensor], shifts: Tensor) -> list[Tensor]:
        """Roll sample ``b`` of every tensor by ``shifts[b] = (dy, dx)`` over its last two axes."""
        return [torch.stack([torch.roll(x[b], (int(dy), int(dx)), dims=(-2, -1))
                             for b, (dy, dx) in enumerate(shifts)]) for x in tensors]

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        """Loss in anomaly space, which equals the loss on the fields themselves (the same
        climatology is added to prediction and target)."""
        x3, x2, t3, t2, doy = batch
        t_in = x3.shape[1]
        a3, a2 = self._shift(x3, x2, doy[:, :t_in], -1.0)
        b3, b2 = self._shift(t3, t2, doy[:, t_in:], -1.0)
        if self.roll_augment:
            h, w = x3.shape[-2:]
            shifts = torch.stack([torch.randint(h, (len(x3),)), torch.randint(w, (len(x3),))], 1)
            a3, a2, b3, b2 = self._roll([a3, a2, b3, b2], shifts)
        y3, y2 = self.train_forward(a3, a2)
        loss = self._loss(y3, y2, b3[:, : y3.shape[1]], b2[:, : y2.shape[1]])
        self.log("train/loss", loss, on_epoch=True, on_step=False)
        return loss

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        steps = self.trainer.estimated_stepping_batches if self.trainer else 1000
        # at least 30 steps: OneCycleLR divides by its warm-up length (tiny runs in tests)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, self.lr, total_steps=max(int(steps), 30),
                                                    pct_start=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _loss(self, y3: Tensor, y2: Tensor, t3: Tensor, t2: Tensor) -> Tensor:
        """Masked MSE in normalised units. ``loss_weights = "values"``: every value counts the
        same (a 3-D variable with D levels weighs D times a surface one); ``"variables"``: the
        mean over variables of each variable's MSE, as the validation score ``rmse`` weighs them."""
        if self.loss_weights == "variables":
            per = [_masked_mse(y3[:, :, c], t3[:, :, c], self.mask3) for c in range(y3.shape[2])]
            per += [_masked_mse(y2[:, :, c], t2[:, :, c], self.mask2) for c in range(y2.shape[2])]
            return torch.stack(per).mean()
        n3, n2 = t3[0, 0].numel(), t2[0, 0].numel()  # weigh 3-D and surface values by count
        return (n3 * _masked_mse(y3, t3, self.mask3) + n2 * _masked_mse(y2, t2, self.mask2)) / (n3 + n2)


class UNetAR(_Trained):
    """Autoregressive baseline: :class:`~harness.methods.swin.UNet2d` trained to predict the
    next day, rolled out day by day (its own predictions fed back) for every lead."""

    def __init__(self, info: ForecastInfo, lr: float = 1e-3, weight_decay: float = 1e-4, base: int = 32,
                 padding_mode: str = "zeros", anomalies: bool | list[str] = False,
                 roll_augment: bool | str = False, loss_weights: str = "values"):
        super().__init__(info, lr, weight_decay, anomalies, roll_augment, loss_weights)
        choice("padding_mode", padding_mode, ("zeros", "reflect", "replicate"))
        self.net = UNet2d(len(info.var3), len(info.var2), len(info.depth), info.t_in, base=base,
                          padding_mode=padding_mode)

    def train_forward(self, a3: Tensor, a2: Tensor) -> tuple[Tensor, Tensor]:
        return self.net(a3, a2, self.mask3, self.mask2)  # one day ahead

    def net_forecast(self, x3: Tensor, x2: Tensor, doy: Tensor) -> tuple[Tensor, Tensor]:
        return rollout(self.net, x3, x2, self.info.t_out, self.mask3, self.mask2)


class TSformer(_Trained):
    """TSformer: :class:`~harness.methods.swin.TSformerNet` predicts all ``t_out`` lead days in
    one pass; the loss is the masked MSE over every lead day and variable (normalised units)."""

    def __init__(self, info: ForecastInfo, lr: float = 1e-3, weight_decay: float = 1e-4, dim: int = 48,
                 heads: int = 4, window: tuple[int, ...] = (2, 2, 4, 4), patch: int = 2,
                 blocks: tuple[int, int] = (2, 2), mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 anomalies: bool | list[str] = False, roll_augment: bool | str = False,
                 loss_weights: str = "values"):
        super().__init__(info, lr, weight_decay, anomalies, roll_augment, loss_weights)
        _check_tsformer(info, dim, heads, window, patch, blocks)
        self.net = TSformerNet(len(info.var3), len(info.var2), len(info.depth), info.t_in, info.t_out,
                               tuple(info.mask2.shape), dim=dim, heads=heads, window=tuple(window),
                               patch=patch, blocks=tuple(blocks), mlp_ratio=mlp_ratio,
                               drop_path=drop_path)

    def train_forward(self, a3: Tensor, a2: Tensor) -> tuple[Tensor, Tensor]:
        return self.net(a3, a2, self.mask3, self.mask2)  # every lead day

    def net_forecast(self, x3: Tensor, x2: Tensor, doy: Tensor) -> tuple[Tensor, Tensor]:
        return self.net(x3, x2, self.mask3, self.mask2)


def _check_tsformer(info: ForecastInfo, dim: int, heads: int, window: Any, patch: int,
                    blocks: Any) -> None:
    """Refuse TSformer settings the network cannot take, naming the parameter."""
    if not info.var2:
        raise UserError("tsformer needs at least one surface variable (var2, e.g. [zos])")
    if not isinstance(window, list | tuple) or len(window) != 4:
        raise UserError(f"window must be four sizes (time, depth, lat, lon), got {window!r}")
    if not isinstance(blocks, list | tuple) or len(blocks) != 2:
        raise UserError(f"blocks must be two block counts (stage 1, stage 2), got {blocks!r}")
    for name, value in (("dim", dim), ("heads", heads), ("patch", patch), *(
            (f"window[{i}]", w) for i, w in enumerate(window))):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{name} must be a positive integer, got {value!r}")
    if dim % heads:
        raise UserError(f"dim {dim} must be divisible by heads {heads}")
