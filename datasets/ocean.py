"""Ocean datasets: the eddy-parameterization set and the forecasting set (DataModules).

Both are :class:`harness.api.DataModule` s that read CF netCDF in the GLORYS layout through
:func:`harness.datasets.ocean_reader.open_ocean`. Without ``data_dir`` they first write the
synthetic eddy simulation (:mod:`harness.datasets.ocean_sim`), cached by its arguments under
``cache_dir/synthetic``, and read it back through the same reader; with ``DATA=<dir>`` the
default :class:`harness.api.RealData` they declare points ``data_dir`` at the directory. Processed data is
cached under ``cache_dir/processed`` (:mod:`harness.cache`), keyed by the raw files'
fingerprint and every preprocessing argument; a cache that does not load is set aside
(``.corrupt``) and rebuilt. Sizes and periods are tagged on every run through ``stats()``.
Bad files or parameters raise :class:`harness.errors.UserError` s (``DataFormatError`` for
files), one line naming the file, from ``prepare_data``: before any run starts.

* :class:`EddyDataModule` (``ocean-eddy``): from high-resolution QG snapshots, coarse
  inputs ``(u, v)`` per layer on the ``nx_lo`` grid and the subgrid momentum forcing
  targets ``(Su, Sv)`` = coarsened high-res advection minus low-res advection of the
  coarsened state (:func:`qg.subgrid_forcing`), chronological train/val/test split, and
  the references of the online (a-posteriori) test. Its metadata :class:`EddyInfo` also runs
  that test (:meth:`EddyInfo.run_online`) and builds the low-resolution model
  (:meth:`EddyInfo.qg_model`), so the methods need nothing from the QG solver itself.
* :class:`ForecastDataModule` (``ocean-forecast``): windows of past days of 3-D fields
  and 2-D surface fields in, the next ``t_out`` days out, normalised with statistics of
  the training years computed lazily; land mask, cos(latitude) weights and a
  day-of-year climatology of the training years.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from harness.api import DataModule, RealData, choice
from harness.cache import cached_dir, cached_torch, fingerprint, is_complete, set_aside, stable_hash
from harness.datasets import ocean_sim
from harness.datasets.ocean_reader import open_ocean, parse_time_step
from harness.datasets.qg import DAY, QGConfig, QGModel, subgrid_forcing
from harness.errors import DataFormatError, UserError
from harness.metrics import ocean as om

LAYERS = ("upper", "lower")
log = logging.getLogger(__name__)


def _nc_files(d: Path) -> list[Path]:
    files = sorted(d.glob("*.nc"))
    if not files:
        raise DataFormatError(f"no netCDF files (*.nc) in {d}; point DATA= (data_dir) at a "
                              "directory of netCDF files in the GLORYS layout")
    return files


def _eddy_sim(sim: Mapping[str, Any] | None) -> ocean_sim.EddySim:
    """The simulation ``sim`` overrides, its unknown keys refused by name."""
    known = {f.name for f in dataclasses.fields(ocean_sim.EddySim)}
    if sim is not None and not isinstance(sim, Mapping):
        raise UserError(f"sim must be a mapping of simulation settings ({', '.join(sorted(known))}), "
                        f"got {sim!r}")
    unknown = sorted(set(sim or {}) - known)
    if unknown:
        raise UserError(f"sim: unknown settings {unknown}; use some of {', '.join(sorted(known))}")
    return ocean_sim.EddySim(**(sim or {}))


def _positive_int(name: str, value: Any, low: int = 1) -> None:
    """Refuse a ``value`` that is not a whole number >= ``low`` (``4.0`` passes, as before)."""
    whole = isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer()
    if not whole or value < low:
        raise UserError(f"{name} must be a whole number >= {low}, got {value!r}")


def _synthetic_dir(cache_dir: Path, sim: ocean_sim.EddySim) -> Path:
    out = cache_dir / "synthetic" / f"ocean-eddy-{sim.key()}"  # key: every EddySim field
    return cached_dir(out, lambda tmp: ocean_sim.simulate(tmp, sim))


def _where(files: list[Path]) -> str:
    """The files named in an error: the file, or the count and directory of several."""
    return str(files[0]) if len(files) == 1 else f"the {len(files)} files in {files[0].parent}"


@contextlib.contextmanager
def _reading(where: str) -> Iterator[None]:
    """A failure while reading the files' data (a truncated or corrupted chunk) as one line."""
    try:
        yield
    except (OSError, RuntimeError, EOFError, zlib.error) as exc:
        text = str(exc).strip().splitlines()
        raise DataFormatError(
            f"{where}: reading the data failed ({type(exc).__name__}: {text[0] if text else ''}); "
            "a file is truncated or corrupted: download or write it again") from None


def _same_qg_config(files: list[Path], cfg_json: str) -> None:
    """Every high-resolution file must come from the run the first one describes."""
    import netCDF4

    want = json.loads(cfg_json)
    for f in files[1:]:
        with _reading(str(f)), netCDF4.Dataset(f) as nc:
            other = nc.__dict__.get("qg_config")
        try:
            same = other is not None and json.loads(other) == want
        except ValueError:
            same = False
        if not same:
            raise DataFormatError(
                f"{f}: its 'qg_config' attribute ({'missing' if other is None else repr(other[:80])}) "
                f"differs from that of {files[0]}; every file must come from one QG run "
                "(harness.datasets.ocean_sim.simulate)")


def _stats_payload(stats: OnlineStats) -> dict[str, Any]:
    """An :class:`OnlineStats` as tensors and a float (loadable with ``weights_only=True``)."""
    return {"spectrum": torch.as_tensor(np.array(stats.spectrum)),
            "ke_samples": torch.as_tensor(np.array(stats.ke_samples)),
            "ke_series": torch.as_tensor(np.array(stats.ke_series)), "seconds": float(stats.seconds)}


def _stats_from(d: Mapping[str, Any]) -> OnlineStats:
    return OnlineStats(d["spectrum"].numpy(), d["ke_samples"].numpy(), d["ke_series"].numpy(),
                       float(d["seconds"]))


_EDDY_KEYS = frozenset({"x", "y", "n_train", "n_val", "cfg_lo", "q0", "reference", "noparam", "times"})


def _eddy_payload_ok(d: Any) -> bool:
    """Whether a loaded eddy cache holds what :meth:`EddyDataModule.setup` reads."""
    return isinstance(d, dict) and _EDDY_KEYS <= set(d) and isinstance(d["x"], Tensor) \
        and isinstance(d["reference"], dict) and isinstance(d["reference"].get("spectrum"), Tensor)


# ---------------------------------------------------------------------------- online test
def psi_from_uv(u: Tensor, v: Tensor, model: QGModel) -> Tensor:
    """Streamfunction from velocities on the model grid: ``lap psi = dv/dx - du/dy``."""
    zh = model.ik * torch.fft.rfft2(v) - model.il * torch.fft.rfft2(u)
    wv2 = torch.where(model.wv2 > 0, model.wv2, 1.0)
    ph = torch.where(model.wv2 > 0, -zh / wv2, 0.0)
    return torch.fft.irfft2(ph, s=(model.ny, model.nx))


def q_from_psi(psi: Tensor, cfg: QGConfig) -> Tensor:
    """Layer PV from streamfunction (the model's definition of q)."""
    n = psi.shape[-1]
    k = torch.fft.fftfreq(n, d=cfg.L / n, dtype=torch.float64).to(psi) * 2 * math.pi
    lap = lambda f: torch.fft.ifft2(-(k[None, :] ** 2 + k[:, None] ** 2) * torch.fft.fft2(f)).real  # noqa: E731
    p1, p2 = psi[..., 0, :, :], psi[..., 1, :, :]
    return torch.stack([lap(p1) + cfg.F1 * (p2 - p1), lap(p2) + cfg.F2 * (p1 - p2)], dim=-3)


@dataclass
class OnlineStats:
    """Time-mean KE spectrum ``[2, nk]`` and a sample of grid-point KE ``[2, n]`` of a run."""

    spectrum: np.ndarray
    ke_samples: np.ndarray
    ke_series: np.ndarray  # domain-mean KE per layer at each kept snapshot [t, 2]
    seconds: float = 0.0


def online_run(cfg: QGConfig, q0: Tensor, days: float, discard_days: float, every_days: float,
               uv_parameterization: Any = None, samples: int = 40_000, seed: int = 0) -> OnlineStats:
    """Run the low-resolution model from ``q0`` ``[members, 2, n, n]`` with a parameterization
    and collect KE statistics after ``discard_days`` (the a-posteriori test of the card)."""
    import time

    started = time.perf_counter()
    m = QGModel(cfg, batch=(q0.shape[0],), dtype=q0.dtype, device=q0.device,
                uv_parameterization=uv_parameterization)
    m.set_q(q0)
    m.run(discard_days)
    specs, kes, series = [], [], []

    def keep(model: QGModel) -> None:
        specs.append(model.ke_spectrum()[1].mean(0))
        ke = 0.5 * (model.u ** 2 + model.v ** 2)  # [members, 2, n, n]
        kes.append(ke.transpose(0, 1).reshape(2, -1))
        series.append(model.ke().mean(0))

    m.run(days - discard_days, every=every_days * DAY, callback=keep, keep=False)
    if not specs:
        raise UserError("online test: no snapshot kept (online_days <= online_discard_days)")
    allke = torch.cat(kes, 1).cpu().numpy()
    rng = np.random.default_rng(seed)
    pick = rng.choice(allke.shape[1], size=min(samples, allke.shape[1]), replace=False)
    return OnlineStats(torch.stack(specs).mean(0).cpu().numpy(), allke[:, pick],
                       torch.stack(series).cpu().numpy(), time.perf_counter() - started)


@dataclass
class EddyInfo:
    """Metadata the eddy methods need (``cfg_lo``: the low-resolution model's parameters)."""

    cfg_lo: QGConfig
    in_names: tuple[str, ...]
    out_names: tuple[str, ...]
    in_scale: Tensor  # per-channel std of the training inputs
    out_scale: Tensor  # per-channel std of the training targets
    online_q0: Tensor  # [members, 2, n, n] coarse-grained hi-res PV at the test period's start
    online: dict[str, Any]  # days, discard_days, every_days, kmax
    reference: OnlineStats  # high-resolution statistics over the test period
    noparam: OnlineStats  # the low-resolution model without parameterization

    def run_online(self, uv_parameterization: Callable[[QGModel], tuple[Tensor, Tensor]] | None = None
                   ) -> OnlineStats:
        """The online test: the low-resolution model from ``online_q0`` with the momentum
        parameterization ``uv_parameterization(model) -> (du, dv)`` inside (:func:`online_run`)."""
        o = self.online
        return online_run(self.cfg_lo, self.online_q0, o["days"], o["discard_days"], o["every_days"],
                          uv_parameterization=uv_parameterization)

    def qg_model(self, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float64) -> QGModel:
        """A low-resolution model (``cfg_lo``), e.g. for its spectral derivative operators."""
        return QGModel(self.cfg_lo, device=device, dtype=dtype)

    def distances(self, run: OnlineStats) -> dict[str, np.ndarray]:
        """Spectrum and KE-distribution distances of a run to the high-res reference."""
        k = self.online["kmax"]
        return {"spectrum": om.spectrum_distance(run.spectrum, self.reference.spectrum, k),
                "distribution": om.distribution_distance(run.ke_samples, self.reference.ke_samples)}

    def scores(self, run: OnlineStats) -> dict[str, float]:
        """``ke_spectrum_score`` and ``ke_distribution_score`` (overall and per layer)."""
        d, d0 = self.distances(run), self.distances(self.noparam)
        out = {}
        for name, key in (("spectrum", "ke_spectrum_score"), ("distribution", "ke_distribution_score")):
            s = om.online_score(d[name], d0[name])
            out[key] = float(s.mean())
            for i, layer in enumerate(LAYERS):
                out[f"{key}_{layer}"] = float(s[i])
        return out


class _OceanFiles(DataModule):
    """The netCDF files a DataModule reads: ``data_dir`` (its ``product`` subdirectory when
    present), or the synthetic simulation's ``product`` written first; and their fingerprint.
    Also the parts both ocean DataModules share: ``info`` and ``stats()`` (after
    :meth:`setup`) and the three loaders over the subclass's ``_loader(part, shuffle)``.

    ``DATA=<dir>`` sets ``data_dir`` (the default :class:`RealData`: ``DATASET`` picks one of
    the benchmark's dataset labels); ``sim`` stays, unused with ``data_dir``, as before."""

    real_data = RealData()
    product: str
    data_dir: str | None
    cache_dir: Path
    sim: ocean_sim.EddySim
    _fingerprint: str | None
    _info: Any
    _stats: dict[str, Any]

    def setup(self, stage: str | None = None) -> None:
        raise NotImplementedError

    def _loader(self, part: str, shuffle: bool) -> DataLoader:
        raise NotImplementedError

    @property
    def info(self) -> Any:
        """The set's metadata (``EddyInfo`` or ``ForecastInfo``), set up on first use."""
        if self._info is None:
            self.setup()
        assert self._info is not None
        return self._info

    def stats(self) -> dict[str, Any]:
        """Sizes and periods of the set (``data.<name>`` tags), set up on first use."""
        if self._info is None:
            self.setup()
        return dict(self._stats)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def raw_dir(self) -> Path:
        if self.data_dir is None:
            return _synthetic_dir(self.cache_dir, self.sim) / self.product
        d = Path(self.data_dir).expanduser()
        if not d.is_dir():
            raise DataFormatError(f"data directory {d} does not exist; point DATA= (data_dir) at a "
                                  "directory of netCDF files")
        return d / self.product if (d / self.product).is_dir() else d

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = fingerprint(_nc_files(self.raw_dir()))
        return self._fingerprint


class EddyDataModule(_OceanFiles):
    """Subgrid momentum forcing from high-resolution QG runs (the eddy CNN's data).

    ``data_dir``: a directory of high-resolution snapshots written by
    :func:`ocean_sim.simulate` (``hires/*.nc``, or the directory itself), e.g. a longer
    run made on a GPU; their ``qg_config`` attribute gives the model. Without it the
    default simulation (``sim`` overrides :class:`ocean_sim.EddySim`) is written first.

    ``filter``: the coarse-graining operator (:func:`qg.coarsen`). ``"model"`` (default;
    pyqg benchmarks' Operator 1) truncates to the coarse grid and applies the coarse model's
    own exponential filter, so coarse-grained states have the spectral shape of the
    low-resolution model's states, which the parameterization then sees online;
    ``"gaussian"`` is Operator 2 (a Gaussian of width 2 dx_lo, the GZ21 choice); ``"sharp"``
    truncates only.
    """

    product = "hires"

    def __init__(self, data_dir: str | None = None, sim: dict[str, Any] | None = None,
                 nx_lo: int = 64, filter: str = "model", split: tuple[float, float] = (0.7, 0.15),
                 batch_size: int = 16,
                 online_days: float = 450.0, online_discard_days: float = 150.0,
                 online_every_days: float = 2.0, online_members: int = 1,
                 cache_dir: str = ".cache/harness", seed: int = 0, num_workers: int = 0):
        super().__init__()
        self.data_dir = data_dir
        self.sim = _eddy_sim(sim)
        if isinstance(nx_lo, bool) or not isinstance(nx_lo, int) or nx_lo < 4 or nx_lo % 2:
            raise UserError(f"nx_lo must be an even integer >= 4 (the low-resolution grid), got {nx_lo!r}")
        self.nx_lo = nx_lo
        self.filter = choice("filter", filter, ("model", "gaussian", "sharp"))
        self.split = _fractions(split)
        _positive_int("batch_size", batch_size)
        self.batch_size = batch_size
        _positive_int("online_members", online_members)
        self.online = {"days": online_days, "discard_days": online_discard_days,
                       "every_days": online_every_days, "members": online_members}
        self.cache_dir = Path(cache_dir)
        self.seed = seed
        self.num_workers = num_workers
        self._fingerprint: str | None = None
        self._info: EddyInfo | None = None
        self._stats: dict[str, Any] = {}
        self._payload: dict[str, Any] | None = None

    def _processed_path(self) -> Path:
        # every argument _process reads; v: the payload's layout (3: plain tensors, weights_only)
        key = stable_hash({"fp": self.fingerprint(), "nx_lo": self.nx_lo, "filter": self.filter,
                           "split": self.split, "online": self.online, "v": 3})
        return self.cache_dir / "processed" / f"ocean-eddy-{key}.pt"

    def prepare_data(self) -> None:
        """Check and process the snapshots once into the cache (a cache file that does not
        load is set aside and rebuilt); every data error is raised here."""
        if self._payload is None:
            self._payload = cached_torch(self._processed_path(), self._process, _eddy_payload_ok)

    def _process(self) -> dict[str, Any]:
        files = _nc_files(self.raw_dir())
        data = open_ocean(files, variables=("uo", "vo"), chunks=None)
        try:
            return self._forcing(files, data)
        finally:
            data.close()

    def _forcing(self, files: list[Path], data: Any) -> dict[str, Any]:
        where = _where(files)
        cfg_json = data.ds.attrs.get("qg_config")
        if cfg_json is None:
            raise DataFormatError(
                f"{files[0]} has no 'qg_config' attribute: the eddy benchmark learns the subgrid "
                "forcing of the two-layer QG model and needs high-resolution QG snapshots written "
                "by harness.datasets.ocean_sim.simulate (reanalysis files carry no QG state)")
        try:
            cfg_hi = QGConfig(**json.loads(cfg_json))
        except (TypeError, ValueError) as exc:
            raise DataFormatError(
                f"{files[0]}: its 'qg_config' attribute is not a QG model configuration ({exc}); "
                "write the snapshots with harness.datasets.ocean_sim.simulate") from None
        _same_qg_config(files, cfg_json)
        sizes = dict(data.ds.sizes)
        dims = {v: data.ds[v].dims for v in ("uo", "vo")}
        if sizes.get("lat") != cfg_hi.nx or sizes.get("lon") != cfg_hi.nx or sizes.get("depth") != 2 \
                or any(d != ("time", "depth", "lat", "lon") for d in dims.values()):
            raise DataFormatError(
                f"{files[0]}: expected uo, vo on 2 layers on a {cfg_hi.nx}^2 grid (its qg_config), "
                f"got {sizes} (uo{dims['uo']}, vo{dims['vo']}); write the snapshots with "
                "harness.datasets.ocean_sim.simulate")
        if self.nx_lo > cfg_hi.nx:
            raise UserError(f"nx_lo {self.nx_lo} is finer than the high-resolution grid "
                            f"({cfg_hi.nx}) of {files[0]}; choose nx_lo <= {cfg_hi.nx}")
        cfg_lo = dataclasses.replace(cfg_hi, nx=self.nx_lo)
        with _reading(where):
            u_all = np.asarray(data.ds.uo.values, dtype=np.float64)
            v_all = np.asarray(data.ds.vo.values, dtype=np.float64)
        times = data.times
        for name, values in (("uo", u_all), ("vo", v_all)):
            bad = ~np.isfinite(values)
            if bad.any():
                first = int(np.flatnonzero(bad.reshape(len(values), -1).any(1))[0])
                every = " (all of them)" if bad.all() else ""
                raise DataFormatError(
                    f"{where}: {name} holds {int(bad.sum())} NaN or fill values{every}, the first "
                    f"on {str(times[first])[:10]}; QG snapshots cover the whole periodic domain "
                    "(no land): write them again with harness.datasets.ocean_sim.simulate")
        n = len(u_all)
        n_train, n_val = int(n * self.split[0]), int(n * self.split[1])
        parts = {"train": n_train, "val": n_val, "test": n - n_train - n_val}
        empty = [k for k, v in parts.items() if v < 1]
        if empty:
            raise UserError(f"dataset ocean-eddy: {n} snapshots in {where} leave the {empty[0]} "
                            f"split empty (split {list(self.split)}: train, val fractions); use more "
                            "snapshots (a longer run) or other split fractions")
        hi = None
        xs, ys, qs, specs, kes = [], [], [], [], []
        for s in range(0, n, 8):
            u = torch.from_numpy(u_all[s:s + 8])
            v = torch.from_numpy(v_all[s:s + 8])
            if hi is None or hi.batch != (len(u),):
                hi = QGModel(cfg_hi, batch=(len(u),))
            hi.set_q(q_from_psi(psi_from_uv(u, v, hi), cfg_hi))
            f = subgrid_forcing(hi, cfg_lo, self.filter)
            xs.append(torch.cat([f["u"], f["v"]], 1).float())  # [b, 4]: u1 u2 v1 v2
            ys.append(torch.cat([f["Su"], f["Sv"]], 1).float())
            qs.append(f["q"])
            specs.append(hi.ke_spectrum()[1][..., : self.nx_lo // 2])
            kes.append(0.5 * (f["u"] ** 2 + f["v"] ** 2))
        x, y, q = torch.cat(xs), torch.cat(ys), torch.cat(qs)
        spec, ke = torch.cat(specs), torch.cat(kes)
        test0 = n_train + n_val
        members = self.online["members"]
        # the online runs start from the first test snapshots, spaced over the test period
        starts = np.linspace(test0, n - 1, members).round().astype(int)
        q0 = q[starts]
        ke_test = ke[test0:].transpose(0, 1).reshape(2, -1).numpy()
        rng = np.random.default_rng(0)
        pick = rng.choice(ke_test.shape[1], size=min(40_000, ke_test.shape[1]), replace=False)
        reference = OnlineStats(spec[test0:].mean(0).numpy(), ke_test[:, pick], np.zeros((0, 2)))
        noparam = online_run(cfg_lo, q0, self.online["days"], self.online["discard_days"],
                             self.online["every_days"])
        # plain tensors, numbers, strings, lists and dicts only: loads with weights_only=True
        return {"x": x, "y": y, "n_train": n_train, "n_val": n_val, "cfg_lo": dataclasses.asdict(cfg_lo),
                "q0": q0, "reference": _stats_payload(reference), "noparam": _stats_payload(noparam),
                "times": [str(t) for t in times]}

    def setup(self, stage: str | None = None) -> None:
        if self._info is not None:
            return
        self.prepare_data()
        d = self._payload
        assert d is not None
        a, b = d["n_train"], d["n_train"] + d["n_val"]
        self.x, self.y = d["x"], d["y"]
        self.parts = {"train": slice(0, a), "val": slice(a, b), "test": slice(b, len(self.x))}
        self._stats = {"snapshots": len(self.x), "train": a, "val": b - a, "test": len(self.x) - b,
                       "nx_lo": self.nx_lo, "first": d["times"][0], "last": d["times"][-1]}
        self._info = EddyInfo(
            cfg_lo=QGConfig(**d["cfg_lo"]), in_names=("u_upper", "u_lower", "v_upper", "v_lower"),
            out_names=("Su_upper", "Su_lower", "Sv_upper", "Sv_lower"),
            in_scale=self.x[:a].std(dim=(0, 2, 3)), out_scale=self.y[:a].std(dim=(0, 2, 3)),
            online_q0=d["q0"], online={**self.online, "kmax": int(0.65 * self.nx_lo / 2)},
            reference=_stats_from(d["reference"]), noparam=_stats_from(d["noparam"]))

    def _loader(self, part: str, shuffle: bool) -> DataLoader:
        sl = self.parts[part]
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(TensorDataset(self.x[sl], self.y[sl]), batch_size=self.batch_size,
                          shuffle=shuffle, generator=g if shuffle else None,
                          num_workers=self.num_workers)


# ---------------------------------------------------------------------------- forecasting
@dataclass
class ForecastInfo:
    """Metadata of a forecasting set. Fields are normalised per variable and depth level
    (``mean``/``std`` of the training period); ``mask3``/``mask2`` are True on ocean."""

    var3: tuple[str, ...]
    var2: tuple[str, ...]
    depth: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    t_in: int
    t_out: int
    mean3: Tensor  # [C3, D]
    std3: Tensor
    mean2: Tensor  # [C2]
    std2: Tensor
    mask3: Tensor  # [D, H, W] bool
    mask2: Tensor  # [H, W] bool
    weights: Tensor  # [H, W] cos(lat), mean 1 over surface ocean points
    clim3: Tensor  # [366, C3, D, H, W] normalised day-of-year climatology of the training years
    clim2: Tensor  # [366, C2, H, W]
    periodic: bool = False  # doubly periodic domain (the QG simulation), not a regional sea

    def denorm3(self, x: Tensor) -> Tensor:
        """Physical units of normalised 3-D fields ``[..., C3, D, H, W]``."""
        return x * self.std3.to(x)[..., None, None] + self.mean3.to(x)[..., None, None]

    def denorm2(self, x: Tensor) -> Tensor:
        return x * self.std2.to(x)[..., None, None] + self.mean2.to(x)[..., None, None]


class _Windows(Dataset):
    """Windows ``(x3, x2, y3, y2, doy)`` read from memory-mapped normalised fields; ``doy`` is
    the 0-based day of year of every day of the window, inputs then targets."""

    def __init__(self, path3: Path, path2: Path, doy: np.ndarray, starts: np.ndarray,
                 t_in: int, t_out: int):
        self.path3, self.path2, self.doy, self.starts = path3, path2, doy, starts
        self.t_in, self.t_out = t_in, t_out
        self._a3: np.ndarray | None = None
        self._a2: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[Tensor, ...]:
        if self._a3 is None:  # opened lazily: each loader worker maps the files itself
            self._a3 = np.load(self.path3, mmap_mode="r")
            self._a2 = np.load(self.path2, mmap_mode="r")
        s, a, b = int(self.starts[i]), self.t_in, self.t_in + self.t_out
        f3 = torch.from_numpy(np.array(self._a3[s:s + b]))
        f2 = torch.from_numpy(np.array(self._a2[s:s + b]))
        return f3[:a], f2[:a], f3[a:], f2[a:], torch.from_numpy(self.doy[s:s + b].astype(np.int64))


class ForecastDataModule(_OceanFiles):
    """Daily 3-D ocean fields plus 2-D surface fields for multi-day forecasting.

    ``data_dir``: GLORYS-style netCDF files (one directory; ``daily/`` inside is used when
    present), e.g. CMEMS ``GLOBAL_MULTIYEAR_PHY_001_030`` subsets; any CF naming the reader
    understands (HYCOM, NEMO) works. ``region`` (lat_min, lat_max, lon_min, lon_max),
    ``depth`` (levels or a range) and ``time`` select a subset; ``coarsen`` block-averages
    the grid. ``split``: the fractions of days for training and validation (the rest is the
    test period), or ISO dates ``[val_start, test_start]``. Without ``data_dir`` the
    synthetic eddy simulation's daily product is used. ``train_stride``/``eval_stride``: days
    between window starts for training and for the test (``val_stride`` for validation, the
    test's by default). ``periodic``: whether the domain is doubly periodic (default: true
    for the simulation, false for ``data_dir``), which allows ``roll_augment`` in the models.

    ``time_step``: the files' time step (``1D``, daily means, as GLORYS/CMEMS; ``<n>D`` or
    ``<n>h``). Times that repeat, go back, are irregular, or typically spaced otherwise (monthly
    or yearly files) are refused, naming both steps. Missing steps (a day absent from a
    download) are allowed: no window straddles one, and their count is the ``missing_days``
    tag. Data errors (files, variables, dims, NaN variables or days, too few windows in a
    split) are raised by :meth:`prepare_data`.
    """

    product = "daily"

    def __init__(self, data_dir: str | None = None, sim: dict[str, Any] | None = None,
                 var3: tuple[str, ...] = ("thetao", "uo", "vo"), var2: tuple[str, ...] = ("zos",),
                 region: tuple[float, float, float, float] | None = None,
                 depth: Any = None, time: tuple[str, str] | None = None, coarsen: int = 1,
                 t_in: int = 5, t_out: int = 10, split: Any = (0.6, 0.2), train_stride: int = 1,
                 eval_stride: int = 1, val_stride: int | None = None, clim_window: int = 15,
                 batch_size: int = 8, periodic: bool | None = None, time_step: str = "1D",
                 cache_dir: str = ".cache/harness", seed: int = 0, num_workers: int = 0):
        super().__init__()
        self.data_dir, self.sim = data_dir, _eddy_sim(sim)
        parse_time_step(time_step)
        self.time_step = time_step
        # the built-in simulation is doubly periodic; real data is a regional sea unless told
        self.periodic = data_dir is None if periodic is None else bool(periodic)
        for name, value in (("coarsen", coarsen), ("t_in", t_in), ("t_out", t_out),
                            ("train_stride", train_stride), ("eval_stride", eval_stride),
                            ("batch_size", batch_size)):
            _positive_int(name, value)
        if val_stride is not None:
            _positive_int("val_stride", val_stride)
        _positive_int("clim_window", clim_window, 0)
        self.val_stride = eval_stride if val_stride is None else int(val_stride)
        for name, names in (("var3", var3), ("var2", var2)):
            if isinstance(names, str) or not all(isinstance(v, str) for v in names):
                raise UserError(f"{name} must be a list of variable names, got {names!r}")
        if not var3:
            raise UserError("var3 must name at least one 3-D variable (e.g. [thetao, uo, vo])")
        self.var3, self.var2 = tuple(var3), tuple(var2)
        if region is not None and (not isinstance(region, list | tuple) or len(region) != 4):
            raise UserError(f"region must be [lat_min, lat_max, lon_min, lon_max], got {region!r}")
        if time is not None and (not isinstance(time, list | tuple) or len(time) != 2):
            raise UserError(f"time must be [start, end] (ISO dates), got {time!r}")
        self.region = tuple(region) if region is not None else None
        self.depth = list(depth) if isinstance(depth, list | tuple) else depth
        self.time = tuple(time) if time is not None else None
        self.coarsen = int(coarsen)
        self.t_in, self.t_out = int(t_in), int(t_out)
        if not isinstance(split, list | tuple) or len(split) != 2:
            raise UserError(f"split must be two fractions (train, val) or two ISO dates "
                            f"[val_start, test_start], got {split!r}")
        self.split = list(split)
        self.train_stride, self.eval_stride = train_stride, eval_stride
        self.clim_window = clim_window
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.cache_dir = Path(cache_dir)
        self._fingerprint: str | None = None
        self._info: ForecastInfo | None = None
        self._stats: dict[str, Any] = {}
        self._meta: dict[str, Any] | None = None

    def _processed_dir(self) -> Path:
        # every argument _process reads (t_in, t_out and the strides only pick windows in
        # setup, and the window check runs on every prepare_data); v: the layout of the files
        key = stable_hash({"fp": self.fingerprint(), "var3": self.var3, "var2": self.var2,
                           "region": self.region, "depth": self.depth, "time": self.time,
                           "coarsen": self.coarsen, "split": self.split, "clim": self.clim_window,
                           "time_step": self.time_step, "v": 2})
        return self.cache_dir / "processed" / f"ocean-forecast-{key}"

    def prepare_data(self) -> None:
        """Check and process the files once into the cache (an unreadable cache is set aside
        and rebuilt), then check that every split holds a window (on every call: the windows
        depend on t_in, t_out and the strides, which the cache does not)."""
        if self._meta is None:
            d = self._processed_dir()
            meta = _load_processed(d)
            if meta is None:
                cached_dir(d, self._process)
                meta = _load_processed(d, set_aside_bad=False)
            self._meta = meta
        self.starts = self._windows(self._meta)

    def _source(self) -> str:
        return str(self.raw_dir()) if self.data_dir is not None else \
            f"the synthetic simulation ({self.raw_dir()})"

    def _windows(self, m: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Window starts per split (strided; none straddles a missing day), or a UserError
        naming the split that has none and the parameters to change."""
        a, b = (int(x) for x in m["split"])
        tix, nt = m["tindex"], len(m["doy"])
        span = self.t_in + self.t_out
        out = {}
        for part, lo, hi, stride in (("train", 0, a, self.train_stride), ("val", a, b, self.val_stride),
                                     ("test", b, nt, self.eval_stride)):
            starts = np.arange(lo, hi - span + 1, stride)
            starts = starts[tix[starts + span - 1] - tix[starts] == span - 1]
            if len(starts) == 0:
                gaps = int(tix[hi - 1] - tix[lo] + 1 - (hi - lo)) if hi > lo else 0
                missing = f", {gaps} missing days inside" if gaps else ""
                stride_name = {"train": "train_stride", "val": "val_stride", "test": "eval_stride"}
                raise UserError(
                    f"dataset ocean-forecast ({self._source()}): the {part} split ({hi - lo} days from "
                    f"{m['times'][lo][:10] if hi > lo else '-'}{missing}) holds no window of t_in "
                    f"{self.t_in} + t_out {self.t_out} consecutive days; use a shorter t_in / t_out, "
                    f"other split points (split {self.split}), a smaller {stride_name[part]} or "
                    "more days")
            out[part] = starts
        return out

    def _split_index(self, times: np.ndarray) -> tuple[int, int]:
        n = len(times)
        if all(isinstance(s, int | float) for s in self.split):
            a, b = int(n * self.split[0]), int(n * (self.split[0] + self.split[1]))
        else:
            t = np.array([np.datetime64(str(x)[:10]) for x in times])
            try:
                a, b = (int(np.searchsorted(t, np.datetime64(str(s)))) for s in self.split)
            except ValueError:
                raise UserError(f"split {self.split}: give two fractions or two ISO dates "
                                "[val_start, test_start] such as 2015-01-01") from None
        for part, size in (("train", a), ("val", b - a), ("test", n - b)):
            if size < 1:
                raise UserError(f"dataset ocean-forecast ({self._source()}): split {self.split} of "
                                f"{n} days ({str(times[0])[:10]} .. {str(times[-1])[:10]}) leaves "
                                f"the {part} split empty; use other split points or more days")
        return a, b

    def _process(self, out: Path) -> None:
        """Check, normalise, fill land with 0 and write memory-mapped arrays chunk by chunk."""
        files = _nc_files(self.raw_dir())
        data = open_ocean(files, variables=self.var3 + self.var2, region=self.region,
                          depth=self.depth, time=self.time, time_step=self.time_step)
        try:
            self._write(out, data, _where(files))
        finally:
            data.close()

    def _write(self, out: Path, data: Any, where: str) -> None:
        ds = data.ds
        for names, want in ((self.var3, True), (self.var2, False)):
            for v in names:
                if ("depth" in ds[v].dims) != want:
                    has = f"has the depth dimension ({ds.sizes['depth']} levels)" if not want else \
                        f"has no depth dimension (dims {ds[v].dims})"
                    kind = "var3 (3-D fields: time, depth, lat, lon)" if want else \
                        "var2 (surface fields: time, lat, lon)"
                    raise DataFormatError(f"{where}: {v} {has}, but it is listed in {kind}; move "
                                          "it to the other list or give files with that layout")
        if self.coarsen > 1:
            c = self.coarsen
            ds = ds.coarsen({d: c for d in data.horizontal_dims}, boundary="trim").mean(skipna=True)
        times, tix = data.times, data.time_index
        missing = int(tix[-1] + 1 - len(tix))
        if missing:
            log.warning("%s: %d of %d time steps (%s) are missing; no window straddles them",
                        where, missing, int(tix[-1] + 1), self.time_step)
        a, b = self._split_index(times)
        train = ds.isel(time=slice(0, a))
        mean = {v: train[v].mean(dim=[d for d in train[v].dims if d != "depth"], skipna=True)
                for v in self.var3 + self.var2}
        std = {v: train[v].std(dim=[d for d in train[v].dims if d != "depth"], skipna=True)
               for v in self.var3 + self.var2}
        import dask

        with _reading(where), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: refused below
            mean, std = dask.compute(mean, std)
            first = ds.isel(time=0).compute()
        depth = np.asarray(ds["depth"].values) if "depth" in ds.dims else np.zeros(1)
        for v in self.var3 + self.var2:
            for k, (mu, sd) in enumerate(zip(np.atleast_1d(mean[v].values), np.atleast_1d(std[v].values),
                                             strict=True)):
                level = f" at depth {float(depth[k]):g} m" if v in self.var3 else ""
                period = f"the training period ({str(times[0])[:10]} .. {str(times[a - 1])[:10]})"
                if not np.isfinite(mu):
                    raise DataFormatError(
                        f"{where}: {v}{level} holds no value in {period}: all NaN or _FillValue; "
                        "check the variable (or its packing), or choose other depth levels or region")
                if not (np.isfinite(sd) and sd > 0):
                    raise DataFormatError(
                        f"{where}: {v}{level} is constant ({float(mu):g}) over {period}; a field "
                        "without variation cannot be normalised or forecast: check the files")
        mean3 = np.stack([mean[v].values for v in self.var3]).astype(np.float32)
        std3 = np.stack([std[v].values for v in self.var3]).astype(np.float32)
        mean2 = np.array([float(mean[v]) for v in self.var2], np.float32)
        std2 = np.array([float(std[v]) for v in self.var2], np.float32)
        mask3 = np.isfinite(first[self.var3[0]].values)  # [D, H, W]
        mask2 = np.isfinite(first[self.var2[0]].values) if self.var2 else mask3[0]
        for name, mask in (("depth level", mask3), ("surface", mask2[None])):
            empty = [k for k in range(len(mask)) if not mask[k].any()]
            if empty:
                raise DataFormatError(
                    f"{where}: no ocean point on {str(times[0])[:10]} ({name} {empty[0]}: "
                    f"{self.var3[0] if name == 'depth level' else (self.var2 or self.var3)[0]} is "
                    "NaN everywhere); choose other depth levels or region, or check the first day")
        nt, (nd, nh, nw) = len(times), mask3.shape
        f3 = np.lib.format.open_memmap(out / "fields3.npy", "w+", np.float32,
                                       (nt, len(self.var3), nd, nh, nw))
        f2 = np.lib.format.open_memmap(out / "fields2.npy", "w+", np.float32, (nt, len(self.var2), nh, nw))
        for s in range(0, nt, 64):
            with _reading(where), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                part = ds.isel(time=slice(s, s + 64)).compute()
            for i, v in enumerate(self.var3):
                x = part[v].values
                _check_days(x, mask3, v, times[s:], where)
                x = (x - mean3[i][:, None, None]) / std3[i][:, None, None]
                f3[s:s + 64, i] = np.where(np.isfinite(x), x, 0.0)
            for i, v in enumerate(self.var2):
                x = part[v].values
                _check_days(x, mask2, v, times[s:], where)
                x = (x - mean2[i]) / std2[i]
                f2[s:s + 64, i] = np.where(np.isfinite(x), x, 0.0)
        f3.flush()
        f2.flush()
        doy = np.array([_day_of_year(t) for t in times], np.int16)
        clim3 = _doy_climatology(f3[:a], doy[:a], self.clim_window)
        clim2 = _doy_climatology(f2[:a], doy[:a], self.clim_window)
        del f3, f2
        lat = np.asarray(ds["lat"].values)
        lon = np.asarray(ds["lon"].values)
        lat2 = lat if lat.ndim == 2 else np.broadcast_to(lat[:, None], (nh, nw))
        w = np.cos(np.deg2rad(lat2)) * mask2
        w = w / w[mask2].mean()
        np.savez(out / "meta.npz", mean3=mean3, std3=std3, mean2=mean2, std2=std2, mask3=mask3,
                 mask2=mask2, weights=w.astype(np.float32), clim3=clim3, clim2=clim2, doy=doy,
                 lat=lat, lon=lon, depth=np.asarray(ds["depth"].values), split=np.array([a, b]),
                 tindex=np.asarray(tix, np.int64))
        (out / "times.json").write_text(json.dumps([str(t) for t in times]))

    def setup(self, stage: str | None = None) -> None:
        if self._info is not None:
            return
        self.prepare_data()
        m = self._meta
        assert m is not None
        a, b = (int(x) for x in m["split"])
        nt = len(m["doy"])
        self.doy = m["doy"]
        t = lambda k: torch.from_numpy(np.ascontiguousarray(m[k]))  # noqa: E731
        times = m["times"]
        self._stats = {"days": nt, "train_days": a, "val_days": b - a, "test_days": nt - b,
                       "grid": "x".join(str(s) for s in m["mask3"].shape), "first": times[0][:10],
                       "test_start": times[b][:10], "last": times[-1][:10],
                       "train_windows": len(self.starts["train"]),
                       "test_windows": len(self.starts["test"]),
                       "missing_days": int(m["tindex"][-1] + 1 - nt)}
        self._info = ForecastInfo(
            var3=self.var3, var2=self.var2, depth=m["depth"], lat=m["lat"], lon=m["lon"],
            t_in=self.t_in, t_out=self.t_out, mean3=t("mean3"), std3=t("std3"), mean2=t("mean2"),
            std2=t("std2"), mask3=t("mask3"), mask2=t("mask2"), weights=t("weights"),
            clim3=t("clim3"), clim2=t("clim2"), periodic=self.periodic)

    def _loader(self, part: str, shuffle: bool) -> DataLoader:
        d = self._processed_dir()
        ds = _Windows(d / "fields3.npy", d / "fields2.npy", self.doy, self.starts[part],
                      self.t_in, self.t_out)
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=shuffle,
                          generator=g if shuffle else None, num_workers=self.num_workers)


_META_KEYS = ("mean3", "std3", "mean2", "std2", "mask3", "mask2", "weights", "clim3", "clim2", "doy",
              "lat", "lon", "depth", "split", "tindex")


def _load_processed(d: Path, set_aside_bad: bool = True) -> dict[str, Any] | None:
    """The metadata of a processed forecast directory (``meta.npz`` arrays and ``times``),
    with its field arrays' headers checked; ``None`` if it is not there, or, when it does not
    load (truncated, corrupted, an older layout), after setting it aside."""
    if not is_complete(d):
        return None
    try:
        with np.load(d / "meta.npz", allow_pickle=False) as z:
            m: dict[str, Any] = {k: z[k] for k in _META_KEYS}
        m["times"] = json.loads((d / "times.json").read_text())
        nt = len(m["doy"])
        f3 = np.load(d / "fields3.npy", mmap_mode="r", allow_pickle=False)
        f2 = np.load(d / "fields2.npy", mmap_mode="r", allow_pickle=False)
        if not (len(m["times"]) == len(m["tindex"]) == nt == len(f3) == len(f2)) \
                or f3.shape[2:] != m["mask3"].shape:
            raise ValueError("its arrays disagree in size")
        del f3, f2
    except Exception as exc:  # any failure: rebuild from the raw files
        if not set_aside_bad:
            raise
        set_aside(d, f"{type(exc).__name__}: {exc}")
        return None
    return m


def _check_days(x: np.ndarray, mask: np.ndarray, name: str, times: np.ndarray, where: str) -> None:
    """Refuse a day on which variable ``name`` (``x``: ``[t, *mask.shape]``) has no value on any
    ocean point of ``mask`` (the first day's): a missing day filled with ``_FillValue``."""
    seen = np.isfinite(x).reshape(len(x), -1)[:, mask.reshape(-1)].any(1)
    if not seen.all():
        i = int(np.flatnonzero(~seen)[0])
        raise DataFormatError(
            f"{where}: {name} is NaN (or _FillValue) on every ocean point on {str(times[i])[:10]}; "
            "remove that day from the files (missing days are allowed) or fill it")


def _fractions(split: Any) -> tuple[float, float]:
    """``split`` as given (a pair of fractions for training and validation), or a UserError."""
    ok = (isinstance(split, list | tuple) and len(split) == 2
          and all(isinstance(f, int | float) and not isinstance(f, bool) for f in split))
    if not ok or not (split[0] > 0 and split[1] > 0 and split[0] + split[1] < 1):
        raise UserError(f"split must be two fractions (train, val) > 0 with a sum below 1, "
                        f"got {split!r}")
    return tuple(split)


def _day_of_year(t: Any) -> int:
    """0-based day of year of a numpy datetime64 or cftime date (day 365 only in leap years)."""
    if isinstance(t, np.datetime64):
        return int((t.astype("datetime64[D]") - t.astype("datetime64[Y]")).astype(int))
    return int(t.dayofyr) - 1


def _doy_climatology(x: np.ndarray, doy: np.ndarray, window: int) -> np.ndarray:
    """Day-of-year mean ``[366, ...]`` smoothed by a circular +-``window``-day box (WB2 style)."""
    s = np.zeros((366, *x.shape[1:]), np.float64)
    c = np.zeros(366)
    for i in range(0, len(x), 64):
        np.add.at(s, doy[i:i + 64], x[i:i + 64])
        np.add.at(c, doy[i:i + 64], 1)
    k = np.arange(-window, window + 1)
    ss = sum(np.roll(s, j, axis=0) for j in k)
    cc = sum(np.roll(c, j) for j in k)
    shape = (-1, *([1] * (x.ndim - 1)))
    clim = ss / np.maximum(cc, 1).reshape(shape)
    missing = cc == 0
    if missing.any():  # a training period shorter than a year: those days get the overall mean
        import logging

        logging.getLogger(__name__).warning(
            "climatology: %d days of the year have no training data within +-%d days; they use "
            "the training mean (use more training years)", int(missing.sum()), window)
        clim[missing] = s.sum(0) / c.sum()
    return clim.astype(np.float32)
