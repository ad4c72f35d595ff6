"""Clinical time series: one DataModule over every reader (TarDiff's data).

``ClinicalSeries`` reads a database in its own layout (``layout``: ``mimic3``, ``mimic4``, ``eicu``,
``mimic3-benchmarks``, ``physionet2012``; readers in :mod:`harness.datasets.clinical_mimic` and
:mod:`harness.datasets.clinical_readers`), or without ``data_dir`` writes a synthetic MIMIC-III
(:func:`~harness.datasets.clinical_mimic.write_synthetic_mimic3`) and reads it back through the
MIMIC-III reader. Each ICU stay becomes the first ``window`` hours of the seven vitals on an hourly
grid (:func:`~harness.datasets.clinical_grid.build_grid`), cached as one file keyed by the tables'
fingerprint and the reader's arguments, so ``CHARTEVENTS`` is streamed once.

Tasks: ``mortality`` (in-hospital death) or ``los`` (ICU length of stay above ``los_days``).
Splits: a stratified random ``test_share`` of the stays is the test set (TarDiff: 80/20), and a
stratified ``val_share`` of the rest is validation, both drawn with ``split_seed`` (a data argument,
not the run's seed: every run of a benchmark sees the same split). Hours before a channel's first
observation take the training split's median of that channel; then each channel is standardised
with the training split's mean and standard deviation of the observed values. Batches are dicts:
``x`` ``(B, window, 7)`` standardised, ``mask`` ``(B, window, 7)`` (1 where observed), ``y`` (0/1).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from harness.api import DataModule, RealData, choice
from harness.cache import cached_dir, cached_torch, fingerprint, stable_hash
from harness.datasets.clinical_grid import CHANNELS, UNITS, build_grid
from harness.errors import UserError

LAYOUTS = ("mimic3", "mimic4", "eicu", "mimic3-benchmarks", "physionet2012")
TASKS = ("mortality", "los")
GRID_VERSION = 1
#: above this many raw files (mimic3-benchmarks, PhysioNet 2012) the fingerprint is of names and
#: sizes only (stat calls), not of contents
STAT_FINGERPRINT_FILES = 64


@dataclass
class ClinicalInfo:
    """What a clinical method is built from."""

    channels: list[str]
    units: list[str]
    window: int
    task: str
    n_train: int
    n_val: int
    n_test: int
    train_positives: int
    mean: list[float]  # per channel, of the observed training values (the standardisation)
    std: list[float]
    source: str
    #: ``arrays("train" | "val")`` -> ``(x, y)`` float tensors of that split (the test split comes
    #: only through the test loader)
    arrays: Any = field(repr=False, default=None)

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @property
    def positive_rate(self) -> float:
        return self.train_positives / max(self.n_train, 1)


def read_cohort(layout: str, root: Path, window: int, min_stay_hours: float | None, block_mb: int = 16):
    """The :class:`~harness.datasets.clinical_grid.Cohort` of ``layout`` in ``root``."""
    from harness.datasets import clinical_mimic as cm

    if layout == "mimic3":
        return cm.read_mimic3(root, window, min_stay_hours, block_mb=block_mb)
    if layout == "mimic4":
        return cm.read_mimic4(root, window, min_stay_hours, block_mb=block_mb)
    from harness.datasets import clinical_readers as cr

    if layout == "eicu":
        return cr.read_eicu(root, window, min_stay_hours)
    if layout == "mimic3-benchmarks":
        return cr.read_mimic3_benchmarks(root, window, min_stay_hours)
    return cr.read_physionet2012(root, window, min_stay_hours)


def raw_files(layout: str, root: Path) -> list[Path]:
    """The raw files a layout reads, for the fingerprint (without reading their contents)."""
    if layout in ("mimic3-benchmarks", "physionet2012"):
        pats = ("**/episode*.csv",) if layout == "mimic3-benchmarks" else ("set-*/*.txt", "Outcomes-*.txt")
        return sorted(p for pat in pats for p in root.glob(pat) if p.is_file())
    names = {"mimic3": ("ICUSTAYS", "ADMISSIONS", "PATIENTS", "CHARTEVENTS"),
             "mimic4": ("icu/icustays", "icu/chartevents", "hosp/admissions", "hosp/patients"),
             "eicu": ("patient", "vitalPeriodic")}[layout]
    out = []
    for n in names:
        out += [p for p in (root / f"{n}.csv", root / f"{n}.csv.gz") if p.is_file()]
    return out


def files_fingerprint(files: list[Path], root: Path) -> str:
    """:func:`harness.cache.fingerprint` of a few large tables; names and sizes of many small files."""
    if len(files) <= STAT_FINGERPRINT_FILES:
        return fingerprint(files)
    return stable_hash([(str(p.relative_to(root)), p.stat().st_size) for p in files])


def stratified_split(y: np.ndarray, test_share: float, val_share: float, seed: int
                     ) -> dict[str, np.ndarray]:
    """Indices of train / val / test, stratified by ``y``, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(test_share * len(idx)))
        rest = idx[n_test:]
        n_val = int(round(val_share * len(rest)))
        out["test"].append(idx[:n_test])
        out["val"].append(rest[:n_val])
        out["train"].append(rest[n_val:])
    return {k: np.sort(np.concatenate(v)) for k, v in out.items()}


class _Rows(Dataset):
    """Rows of a split, served a batch of indices at a time."""

    def __init__(self, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor):
        self.x, self.mask, self.y = x, mask, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx: list[int]) -> dict[str, torch.Tensor]:
        i = torch.as_tensor(idx)
        return {"x": self.x[i], "mask": self.mask[i], "y": self.y[i]}


class _Plan(Sampler):
    """Index batches: shuffled each epoch (torch's global RNG, seeded by the runner) or in order."""

    def __init__(self, n: int, batch_size: int, shuffle: bool):
        self.n, self.batch_size, self.shuffle = n, batch_size, shuffle

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.n) if self.shuffle else torch.arange(self.n)
        for lo in range(0, self.n, self.batch_size):
            yield order[lo:lo + self.batch_size].tolist()


class ClinicalSeries(DataModule):
    """ICU stays as hourly series of seven vitals, with a mortality or length-of-stay label (see the
    module docstring). ``synthetic``: arguments of
    :class:`~harness.datasets.clinical_mimic.SyntheticMimic` (used without ``data_dir``)."""

    real_data = RealData(dir_param="data_dir", synthetic_params=("synthetic",))

    def __init__(self, data_dir: str | None = None, layout: str = "mimic3", task: str = "mortality",
                 los_days: float = 3.0, window: int = 24, min_stay_hours: float | None = None,
                 test_share: float = 0.2, val_share: float = 0.1, split_seed: int = 0,
                 synthetic: dict[str, Any] | None = None, batch_size: int = 256, eval_batch_size: int = 1024,
                 block_mb: int = 16, cache_dir: str = ".cache/harness", num_workers: int = 0, seed: int = 0):
        super().__init__()
        from harness.datasets.clinical_mimic import SyntheticMimic

        self.layout = choice("layout", layout, LAYOUTS)
        self.task = choice("task", task, TASKS)
        if data_dir is None and layout != "mimic3":
            raise UserError(f"layout {layout!r} reads real data: pass DATA=<dir> (the synthetic set is "
                            "written in the MIMIC-III layout)")
        self.data_dir = Path(data_dir).expanduser() if data_dir else None
        if self.data_dir is not None and not self.data_dir.is_dir():
            raise UserError(f"DATA={data_dir}: no such directory")
        self.window, self.los_days = int(window), float(los_days)
        if not 1 <= self.window <= 24 * 14:
            raise UserError(f"window must be between 1 and 336 hours, got {window}")
        self.min_stay_hours = None if min_stay_hours is None else float(min_stay_hours)
        if not (0 < test_share < 1 and 0 < val_share < 1):
            raise UserError(f"test_share and val_share must be in (0, 1), got {test_share}, {val_share}")
        self.test_share, self.val_share = float(test_share), float(val_share)
        self.split_seed = int(split_seed)
        self.synthetic = (SyntheticMimic(**{"window": self.window, **(synthetic or {})})
                          if data_dir is None else None)
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise UserError("batch_size and eval_batch_size must be >= 1")
        self.block_mb = int(block_mb)
        self.cache_dir = Path(cache_dir)
        self.num_workers = int(num_workers)
        self.seed = int(seed)  # the run's seed; the split is split_seed's, the same for every run
        self.save_hyperparameters()
        self._grid: dict[str, Any] | None = None
        self._splits: dict[str, _Rows] | None = None
        self._fp: str | None = None

    # -- reading -------------------------------------------------------------------------------
    def _root(self) -> Path:
        if self.data_dir is not None:
            return self.data_dir
        from harness.datasets.clinical_mimic import SYNTHETIC_VERSION, write_synthetic_mimic3

        cfg = self.synthetic
        key = stable_hash({**asdict(cfg), "writer": SYNTHETIC_VERSION})
        return cached_dir(self.cache_dir / "synthetic" / f"mimic3-{key}",
                          lambda tmp: write_synthetic_mimic3(tmp, cfg))

    def _files_fp(self) -> str | None:
        """The raw files' fingerprint, computed once; None when the layout's files are absent."""
        if self._fp is None:
            root = self._root()
            files = raw_files(self.layout, root)
            self._fp = files_fingerprint(files, root) if files else ""
        return self._fp or None

    def fingerprint(self) -> str:
        fp = self._files_fp()
        if fp is None:
            self.grid  # noqa: B018  (the reader names what is missing)
        return str(fp)

    @property
    def grid(self) -> dict[str, Any]:
        """The cached per-stay tensors: ``values`` (NaN before a channel's first observation),
        ``mask``, ``mortality``, ``los_days``, ``stay_ids``, ``counts``."""
        if self._grid is None:
            root = self._root()
            args = {"layout": self.layout, "window": self.window, "min_stay_hours": self.min_stay_hours,
                    "version": GRID_VERSION}
            fp = self._files_fp()

            def build() -> dict[str, Any]:
                cohort = read_cohort(self.layout, root, self.window, self.min_stay_hours, self.block_mb)
                values, mask = build_grid(cohort.events, len(cohort.stay_ids), self.window,
                                          fill=np.full(len(CHANNELS), np.nan, np.float32))
                return {"values": torch.from_numpy(values), "mask": torch.from_numpy(mask),
                        "mortality": torch.from_numpy(cohort.mortality.astype(np.int64)),
                        "los_days": torch.from_numpy(cohort.los_days.astype(np.float32)),
                        "stay_ids": torch.from_numpy(cohort.stay_ids.astype(np.int64)),
                        "counts": {k: int(v) for k, v in cohort.counts.items()}, "source": cohort.source}

            if fp is None:
                build()  # raises the reader's DataFormatError
            path = self.cache_dir / "clinical" / f"{self.layout}-{stable_hash({**args, 'files': fp})}.pt"
            self._grid = cached_torch(path, build)
            if len(self._grid["stay_ids"]) == 0:
                raise UserError(f"{self.layout}: no ICU stay passes the cohort filters (adults, a stay of at "
                                f"least {self.min_stay_hours or self.window} hours); counts: "
                                f"{self._grid['counts']}")
        return self._grid

    def prepare_data(self) -> None:
        """Read (or load from the cache) and check the data before any run."""
        self._prepared()

    def _labels(self) -> np.ndarray:
        g = self.grid
        if self.task == "mortality":
            return g["mortality"].numpy().astype(np.int64)
        return (g["los_days"].numpy() > self.los_days).astype(np.int64)

    def _prepared(self) -> dict[str, _Rows]:
        if self._splits is not None:
            return self._splits
        g = self.grid
        y = self._labels()
        if len(np.unique(y)) < 2:
            raise UserError(f"{self.layout}: every stay has the same {self.task} label; the task needs both")
        idx = stratified_split(y, self.test_share, self.val_share, self.split_seed)
        values, mask = g["values"].numpy(), g["mask"].numpy()
        tr = idx["train"]
        observed = mask[tr] > 0
        obs_vals = [values[tr][..., c][observed[..., c]] for c in range(len(CHANNELS))]
        median = np.array([np.median(v) if len(v) else 0.0 for v in obs_vals], np.float32)
        mean = np.array([v.mean() if len(v) else 0.0 for v in obs_vals], np.float32)
        std = np.array([v.std() if len(v) > 1 else 1.0 for v in obs_vals], np.float32)
        std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
        filled = np.where(np.isnan(values), median[None, None, :], values)
        x = torch.from_numpy(((filled - mean) / std).astype(np.float32))
        m = torch.from_numpy(mask)
        yt = torch.from_numpy(y.astype(np.float32))
        self._splits = {k: _Rows(x[v], m[v], yt[v]) for k, v in idx.items()}
        self._norm = (mean, std)
        return self._splits

    # -- the contract --------------------------------------------------------------------------
    @property
    def info(self) -> ClinicalInfo:
        s = self._prepared()
        mean, std = self._norm

        def arrays(name: str) -> tuple[torch.Tensor, torch.Tensor]:
            if name not in ("train", "val"):
                raise UserError(f"info.arrays serves 'train' and 'val' only (the test split comes through "
                                f"the test loader), not {name!r}")
            return s[name].x, s[name].y

        return ClinicalInfo(channels=list(CHANNELS), units=list(UNITS), window=self.window, task=self.task,
                            n_train=len(s["train"]), n_val=len(s["val"]), n_test=len(s["test"]),
                            train_positives=int(s["train"].y.sum()), mean=[float(v) for v in mean],
                            std=[float(v) for v in std], source=str(self.grid["source"]), arrays=arrays)

    def stats(self) -> dict[str, Any]:
        s = self._prepared()
        out: dict[str, Any] = {"layout": self.layout, "task": self.task, "window_hours": self.window}
        for k, r in s.items():
            out[f"size.{k}"] = len(r)
            out[f"positives.{k}"] = int(r.y.sum())
        out["observed_share"] = round(float(self.grid["mask"].mean()), 4)
        for k, v in self.grid["counts"].items():
            out[f"rows.{k}"] = v
        return out

    def _loader(self, name: str, train: bool) -> DataLoader:
        rows = self._prepared()[name]
        bs = self.batch_size if train else self.eval_batch_size
        return DataLoader(rows, batch_size=None, sampler=_Plan(len(rows), bs, train),
                          num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
