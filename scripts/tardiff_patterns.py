"""Which deterioration pattern each sampler's synthetic deaths carry (TarDiff's default data).

    python scripts/tardiff_patterns.py --run-dir runs --seed 0

Reloads, for one seed of a finished ``make bench METHOD=tardiff``, the shared diffusion and
classifier stages from ``--run-dir``, samples each sampler row's synthetic set again exactly as
its test did (same seed, same scale), and prints, for the real training deaths of each pattern
and for each row's synthetic deaths and survivors, the change over the window (mean of the last
6 hours minus the first 6, in the vitals' units) of the signals that tell the two patterns
apart: the shock trend (systolic BP down, heart rate up) and the late respiratory failure
(respiratory rate up, SpO2 down, temperature up). The real patterns come from the synthetic
writer (``synthetic_trajectories``), which the methods never see.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from harness import checkpoints
from harness.datasets.clinical import ClinicalSeries, stratified_split
from harness.datasets.clinical_grid import CHANNELS
from harness.datasets.clinical_mimic import synthetic_trajectories
from harness.methods import tardiff as td
from harness.runner import run_key, stage_dir
from harness.spec import load

SHOW = ("heart_rate", "sbp", "resp_rate", "temperature", "spo2")


def change(x: np.ndarray) -> np.ndarray:
    """Mean of the last 6 hours minus the first 6, per series and channel."""
    return x[:, -6:].mean(1) - x[:, :6].mean(1)


def row(name: str, x: np.ndarray) -> str:
    c = change(x).mean(0)
    return f"{name:<34} n={len(x):>4}  " + "  ".join(f"{k} {c[CHANNELS.index(k)]:+6.2f}" for k in SHOW)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, default=Path("runs"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=".cache/harness")
    a = ap.parse_args()
    bench = load("tardiff")
    specs = {r.label: r for r in bench.runs if r.seed == a.seed}
    dm = ClinicalSeries(**{**specs["tardiff"].dataset_params, "cache_dir": a.cache_dir})
    info = dm.info
    mean, std = np.array(info.mean), np.array(info.std)
    x, y = info.arrays("train")

    # the real deaths by pattern: the writer's latent patterns (replaying its draws), matched to
    # the training stays by their ICUSTAY_ID
    cfg = dm.synthetic
    rng = np.random.default_rng(cfg.seed)
    _, _, pattern = synthetic_trajectories(cfg, rng, cfg.window + cfg.extra_hours)
    rng.integers(0, 3, cfg.n_stays)  # subject ids
    rng.integers(0, 7, cfg.n_stays)  # admission ids
    icustay = 200000 + rng.permutation(cfg.n_stays * 5)[:cfg.n_stays]
    by_id = dict(zip(icustay.tolist(), pattern.tolist(), strict=True))
    split = stratified_split(dm._labels(), dm.test_share, dm.val_share, dm.split_seed)["train"]
    pat = np.array([by_id[i] for i in dm.grid["stay_ids"].numpy()[split]])
    raw = x.numpy() * std + mean
    print(row("real deaths, shock trend", raw[pat == 1]))
    print(row("real deaths, late respiratory", raw[pat == 2]))
    print(row("real survivors", raw[y.numpy() == 0]))

    counts = {0: int((y == 0).sum()), 1: int((y == 1).sum())}
    for label in ("diffusion", "classifier-guided", "tardiff"):
        spec = specs[label]
        model = td.TarDiff(info, **spec.params)
        stage = model.stages[-1]
        sdir = stage_dir(a.run_dir, spec, run_key(spec, dm), dm, model, stage)
        ckpt = sdir / ("last.ckpt" if stage == "diffusion" else "best.ckpt")
        if not ckpt.exists():
            print(f"{label}: no {ckpt}; run `make bench METHOD=tardiff` with this --run-dir first")
            continue
        model.load_state_dict(checkpoints.load(ckpt)["state_dict"])
        torch.manual_seed(a.seed)  # as the runner seeds the run
        model.finish_stages()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch.initial_seed() % (2**31) + 7)  # as the test does
            xs, ys = model.generate(counts)
        gen = xs.numpy() * std + mean
        print(row(f"{label}: synthetic deaths", gen[ys.numpy() == 1]))
        print(row(f"{label}: synthetic survivors", gen[ys.numpy() == 0]))


if __name__ == "__main__":
    main()
