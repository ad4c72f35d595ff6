"""Ocean metrics: latitude-weighted RMSE and ACC (WeatherBench 2), offline R2 and correlation,
and the a-posteriori distances between kinetic-energy statistics of two simulations.

Gridded tensors end in ``[..., lat, lon]``; ``weights`` are cos(latitude) weights
``[lat, lon]`` (or broadcastable), ``mask`` is True on ocean points. Sums run over the
ocean points only, so land never enters a score.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def weighted_sse(pred: Tensor, true: Tensor, weights: Tensor) -> Tensor:
    """Sum over the last two dims of ``w (pred - true)^2`` (land: weight 0)."""
    return (weights * (pred - true) ** 2).sum(dim=(-2, -1))


def rmse(pred: Tensor, true: Tensor, weights: Tensor) -> Tensor:
    """Latitude-weighted RMSE per field: ``sqrt(sum w e^2 / sum w)`` over lat, lon (WB2 eq. 1)."""
    return torch.sqrt(weighted_sse(pred, true, weights) / weights.sum())


def acc(pred: Tensor, true: Tensor, clim: Tensor, weights: Tensor) -> Tensor:
    """Anomaly correlation coefficient per field against a climatology (WB2 eq. 3)::

        ACC = sum w f' o' / sqrt(sum w f'^2 sum w o'^2),   f' = f - c, o' = o - c

    (anomalies not re-centred, as WeatherBench 2).
    """
    f, o = pred - clim, true - clim
    num = (weights * f * o).sum(dim=(-2, -1))
    den = torch.sqrt((weights * f * f).sum(dim=(-2, -1)) * (weights * o * o).sum(dim=(-2, -1)))
    return num / den.clamp_min(1e-30)


def r2_score(pred: Tensor, true: Tensor) -> float:
    """Coefficient of determination over all elements: ``1 - MSE / Var(true)``."""
    mse = torch.mean((pred.double() - true.double()) ** 2)
    return float(1.0 - mse / torch.var(true.double(), unbiased=False).clamp_min(1e-300))


def correlation(pred: Tensor, true: Tensor) -> float:
    """Pearson correlation over all elements (0 when the prediction is constant)."""
    p, t = pred.double().flatten(), true.double().flatten()
    p, t = p - p.mean(), t - t.mean()
    den = torch.sqrt((p * p).sum() * (t * t).sum())
    return float((p * t).sum() / den) if den > 0 else 0.0


def spectrum_distance(spec: np.ndarray, ref: np.ndarray, kmax: int) -> np.ndarray:
    """RMS difference of two spectra over wavenumber bins ``1..kmax``, per layer.

    ``spec``, ``ref``: time-mean isotropic spectra ``[layers, nk]``. As the pyqg
    parameterization benchmarks (Ross et al. 2023, ``spectral_rmse``): linear spectra,
    wavenumbers below the low-resolution model's filter cutoff.
    """
    return np.sqrt(np.mean((spec[:, :kmax] - ref[:, :kmax]) ** 2, axis=1))


def distribution_distance(samples: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Wasserstein-1 distance between per-layer samples ``[layers, n]`` and ``[layers, m]``."""
    from scipy.stats import wasserstein_distance

    return np.array([wasserstein_distance(samples[i], ref[i]) for i in range(len(samples))])


def online_score(d_model: np.ndarray, d_noparam: np.ndarray) -> np.ndarray:
    """``1 - d(model, hi) / d(no-param, hi)``: 1 is perfect, 0 no better than no parameterization."""
    return 1.0 - np.asarray(d_model) / np.maximum(np.asarray(d_noparam), 1e-300)
