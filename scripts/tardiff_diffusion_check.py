"""How well TarDiff's 1-D UNet learns the synthetic ICU series, without the runner.

    python scripts/tardiff_diffusion_check.py --norm-groups 32 --steps 600
    python scripts/tardiff_diffusion_check.py --norm-groups 8 --steps 600

Trains the diffusion model of ``methods/tardiff.py`` (AdamW with a 100-step warm-up, batch 128)
on the default benchmark's synthetic MIMIC-III training split, and every third of ``--steps``
samples as many series as the training split has (unguided DDIM) and prints the per-channel
ratio of the spread of the series' levels (the standard deviation over series of each series'
mean over time, generated / real) and the discriminative score (500 steps). This is how the
GroupNorm setting was chosen (docs/tardiff.md).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from harness.datasets.clinical import ClinicalSeries
from harness.methods import tardiff as td


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--norm-groups", type=int, default=8)
    ap.add_argument("--signal", type=float, default=0.5)
    ap.add_argument("--cache-dir", default=".cache/harness")
    a = ap.parse_args()
    dm = ClinicalSeries(synthetic={"n_stays": 2000, "signal": a.signal}, batch_size=128,
                        cache_dir=a.cache_dir)
    info = dm.info
    x, y = info.arrays("train")
    m = td.TarDiff(info, guidance="none", model_channels=32, channel_mult=(1, 2), res_blocks=1,
                   attention_levels=(), heads=4, norm_groups=a.norm_groups, lr=a.lr, warmup_steps=100)
    opt = torch.optim.AdamW(m.unet.parameters(), lr=a.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))
    torch.manual_seed(0)
    t0 = time.perf_counter()
    for step in range(1, a.steps + 1):
        idx = torch.randint(0, len(x), (128,))
        m.unet.train()
        loss = m.diffusion_loss(x[idx], y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % max(1, a.steps // 3) == 0:
            took = time.perf_counter() - t0
            xs = m.sample(y.long(), torch.Generator().manual_seed(1))
            ratio = (xs.mean(1).std(0) / x.mean(1).std(0)).numpy()
            disc = td.discriminative_score(x, xs, 0, 16, 500)
            print(f"norm_groups {a.norm_groups} step {step} ({took:.0f} s of training): level spread "
                  f"generated/real {np.round(ratio, 2)}, discriminative score {disc:.3f}", flush=True)
            t0 = time.perf_counter() - took


if __name__ == "__main__":
    main()
