"""Eddy-resolving synthetic ocean data: the two-layer QG model written as GLORYS netCDF.

:func:`simulate` spins the QG model (:mod:`harness.datasets.qg`, pyqg's "eddy"
configuration) up to its statistically steady eddying state, then records it and writes
two CF-compliant products in the GLORYS12 layout (dims ``time, depth, latitude,
longitude``), read back by :func:`harness.datasets.ocean_reader.open_ocean` exactly like
real files:

* ``hires/eddy_hires_<year>.nc``: the high-resolution run (``nx``), every
  ``hires_every_days`` days, ``uo``, ``vo`` (float32, not packed: the eddy benchmark rebuilds
  the streamfunction and the subgrid forcing from them) and ``zos``; the model's parameters
  are in the global attribute ``qg_config`` (JSON).
* ``daily/eddy_daily_<year>.nc``: a daily, coarse-grained analysis product (``nx_daily``)
  packed as int16 like PSY4/GLO12 files: ``uo``, ``vo``, ``zos`` and a temperature
  ``thetao`` derived from the layer interface, plus a seasonal cycle.

Layers map to two depth levels (the layers' mid-depths, 250 m and 1500 m). Physical
mapping, on an f-plane value ``f0`` for the conversions::

    zos      = f0 psi1 / g                                       (geostrophic sea level)
    eta      = f0 (psi2 - psi1) / g',   g' = f0^2 / (F1 H1)      (interface uplift, m)
    thetao_k = T_k - G_k eta + A_k sin(2 pi (doy - 105) / 365.25)    (doy: day of year)

so temperature anomalies are the eddies' interface heaving (cold domes over raised
interfaces) and a seasonal cycle gives the day-of-year climatology something to hold.
The domain (``L`` = 1000 km) is placed at 30-39 N, 140 E.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.cache import stable_hash
from harness.datasets.ocean_reader import write_glorys
from harness.datasets.qg import DAY, QGConfig, QGModel, coarsen
from harness.errors import UserError

G = 9.81
F0 = 1e-4
LAT0, LON0 = 30.0, 140.0
DEPTHS = (250.0, 1500.0)  # mid-depths of the two layers (H1 = 500 m, H2 = 2000 m)
T_MEAN = (14.0, 4.0)  # degC per layer
T_GRAD = (0.02, 0.004)  # degC per m of interface uplift
T_SEASON = (1.5, 0.05)  # seasonal amplitude, degC
START = np.datetime64("2000-01-01", "D")


@dataclass(frozen=True)
class EddySim:
    """What :func:`simulate` runs; every field is part of the cache key (grid sizes are
    checked: even, at least 4, none finer than ``nx``; a UserError otherwise).

    The spin-up runs at ``spinup_nx`` (cheaper) for ``spinup_days``, is spectrally
    interpolated to ``nx`` and adjusts there for ``adjust_days`` before recording starts;
    recording lasts ``days`` days.
    """

    nx: int = 256
    dt: float = 3600.0
    spinup_nx: int = 128
    spinup_days: float = 1800.0
    adjust_days: float = 180.0
    days: float = 2190.0
    hires_every_days: float = 8.0
    nx_daily: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("nx", "spinup_nx", "nx_daily"):
            n = getattr(self, name)
            if isinstance(n, bool) or not isinstance(n, int) or n < 4 or n % 2:
                raise UserError(f"sim.{name} must be an even integer >= 4 (a grid size), got {n!r}")
        if self.spinup_nx > self.nx or self.nx_daily > self.nx:
            raise UserError(f"sim: spinup_nx ({self.spinup_nx}) and nx_daily ({self.nx_daily}) "
                            f"must not exceed nx ({self.nx})")
        if not self.days >= 1 or not self.dt > 0:
            raise UserError(f"sim: days ({self.days}) must be >= 1 and dt ({self.dt}) positive")

    def key(self) -> str:
        return stable_hash(dataclasses.asdict(self))

    def qg(self, nx: int | None = None) -> QGConfig:
        return QGConfig(nx=nx or self.nx, dt=self.dt)


def upsample(q: torch.Tensor, nx: int) -> torch.Tensor:
    """Spectral interpolation of a periodic field ``[..., n, n]`` to ``[..., nx, nx]`` (zero padding)."""
    n = q.shape[-1]
    if nx == n:
        return q.clone()
    h = n // 2
    qh = torch.fft.rfft2(q)
    out = torch.zeros(*q.shape[:-2], nx, nx // 2 + 1, dtype=qh.dtype, device=q.device)
    out[..., :h, :h] = qh[..., :h, :h]
    out[..., nx - h + 1:, :h] = qh[..., n - h + 1:, :h]  # negative l (the Nyquist row dropped)
    return torch.fft.irfft2(out * (nx / n) ** 2, s=(nx, nx))


def grid(nx: int, L: float = 1e6) -> tuple[np.ndarray, np.ndarray]:
    """Cell-centre latitudes and longitudes (degrees) of the domain at resolution ``nx``."""
    y = (np.arange(nx) + 0.5) * L / nx
    lat = LAT0 + y / 111_320.0
    lon = LON0 + y / (111_320.0 * math.cos(math.radians(LAT0 + L / 2 / 111_320.0)))
    return lat, lon


def fields(psi: np.ndarray, u: np.ndarray, v: np.ndarray, day_of_year: np.ndarray,
           cfg: QGConfig) -> dict[str, np.ndarray]:
    """GLORYS variables from layer fields ``[time, 2, ny, nx]`` (see the module docstring)."""
    gprime = F0**2 / (cfg.F1 * cfg.H1)
    eta = F0 * (psi[:, 1] - psi[:, 0]) / gprime
    season = np.sin(2 * np.pi * (day_of_year - 105.0) / 365.25)[:, None, None]
    thetao = np.stack([T_MEAN[k] - T_GRAD[k] * eta + T_SEASON[k] * season for k in range(2)], 1)
    return {"uo": u, "vo": v, "zos": F0 * psi[:, 0] / G, "thetao": thetao}


def _write_years(out: Path, stem: str, times: np.ndarray, data: dict[str, list[np.ndarray]],
                 nx: int, pack: bool, attrs: dict[str, str]) -> None:
    import netCDF4

    lat, lon = grid(nx)
    years = times.astype("datetime64[Y]").astype(int) + 1970
    for year in np.unique(years):
        sel = years == year
        path = out / f"{stem}_{year}.nc"
        arrays = {k: np.stack([a for a, s in zip(v, sel, strict=True) if s]).astype(np.float32)
                  for k, v in data.items()}
        write_glorys(path, time=times[sel], depth=np.array(DEPTHS), lat=lat, lon=lon,
                     pack_int16=pack, **arrays)
        with netCDF4.Dataset(path, "a") as ds:
            ds.setncatts(attrs)


def _release_heap() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    The daily loop's FFTs of two grid sizes fragment glibc's heap: without this the
    resident memory of a six-year run grew by about 8 MB per recorded day (24 GB, and an
    OOM kill, before the end), though no Python object or tensor accumulates.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


def simulate(out_dir: str | Path, sim: EddySim | None = None, progress: bool = True,
             device: str | None = None) -> Path:
    """Run the QG model and write the ``hires/`` and ``daily/`` products into ``out_dir``."""
    sim = sim or EddySim()
    out = Path(out_dir)
    (out / "hires").mkdir(parents=True, exist_ok=True)
    (out / "daily").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    say(f"ocean simulation: spin-up {sim.spinup_days:.0f} d at nx={sim.spinup_nx}, "
        f"{sim.adjust_days:.0f} d at nx={sim.nx}, then {sim.days:.0f} d recorded")
    spin = QGModel(sim.qg(sim.spinup_nx), device=device)
    spin.random_init(sim.seed)
    spin.run(sim.spinup_days, progress=progress)
    hi = QGModel(sim.qg(), device=device)
    hi.set_q(upsample(spin.q, sim.nx))
    hi.run(sim.adjust_days, progress=progress)
    hi.t = 0.0
    cfg = hi.cfg
    per_day = int(round(DAY / cfg.dt))
    every = max(1, int(round(sim.hires_every_days)))
    n_days = int(round(sim.days))
    daily: dict[str, list[np.ndarray]] = {k: [] for k in ("uo", "vo", "zos", "thetao")}
    hires: dict[str, list[np.ndarray]] = {k: [] for k in ("uo", "vo", "zos")}
    d_times, h_times = [], []
    lo = QGModel(sim.qg(sim.nx_daily), device=device)
    for d in range(n_days):
        hi.step(per_day)
        _release_heap()
        day = START + np.timedelta64(d, "D")
        doy = np.array([(day - day.astype("datetime64[Y]")).astype(int) + 1.0])
        lo.set_q(coarsen(hi.q, sim.nx_daily))
        f = fields(lo.psi[None].cpu().numpy(), lo.u[None].cpu().numpy(), lo.v[None].cpu().numpy(),
                   doy, cfg)
        for k in daily:
            daily[k].append(np.array(f[k][0], np.float32))  # a copy: keep no parent arrays
        d_times.append(day)
        if d % every == every - 1:
            f = fields(hi.psi[None].cpu().numpy(), hi.u[None].cpu().numpy(),
                       hi.v[None].cpu().numpy(), doy, cfg)
            for k in hires:
                hires[k].append(np.array(f[k][0], np.float32))
            h_times.append(day)
        if progress and (d + 1) % max(1, n_days // 10) == 0:
            say(f"ocean simulation: recorded day {d + 1}/{n_days} "
                f"({time.perf_counter() - started:.0f} s)")
    attrs = {"title": "Two-layer QG eddy simulation (harness synthetic ocean)",
             "qg_config": json.dumps(dataclasses.asdict(cfg)),
             "simulation": json.dumps(dataclasses.asdict(sim)),
             "source": "harness.datasets.ocean_sim"}
    _write_years(out / "hires", "eddy_hires", np.array(h_times), hires, sim.nx, False, attrs)
    _write_years(out / "daily", "eddy_daily", np.array(d_times), daily, sim.nx_daily, True,
                 {**attrs, "qg_config": json.dumps(dataclasses.asdict(sim.qg(sim.nx_daily)))})
    (out / "simulation.json").write_text(json.dumps(
        {**dataclasses.asdict(sim), "seconds": round(time.perf_counter() - started, 1)}, indent=1))
    say(f"ocean simulation: done in {time.perf_counter() - started:.0f} s -> {out}")
    return out
