"""Throughput of the robustness family on this machine: the image pipeline reading from its
decoded cache (images/s, with the training augmentation), and training (samples/s) of the
default profile's ViT and text encoder.

    .venv/bin/python scripts/time_robust.py [--threads 2] [--cache .cache/harness]

Each figure is the median of ``--repeats`` passes; the first pass (cache build, warm-up) is
not counted.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from harness.datasets.robustness import RobustImages, RobustText
from harness.methods.robust import ERM


def _median_rate(fn, n: int, repeats: int) -> float:
    fn()  # warm-up
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        rates.append(n / (time.perf_counter() - t))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default=".cache/harness")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    images = RobustImages(cache_dir=args.cache)
    images.prepare_data()
    n_img = images.info.train_size

    def read_images() -> None:
        for _ in images.train_dataloader():
            pass

    print(f"image pipeline from the cache (decode once, crop+flip per batch): "
          f"{_median_rate(read_images, n_img, args.repeats):,.0f} images/s ({n_img} images, "
          f"{images.resolution}px, {args.threads} threads)")

    for name, dm, kw in [("ViT (images)", images, {"lr": 1e-4}),
                         ("text encoder", RobustText(cache_dir=args.cache, batch_size=32),
                          {"lr": 2e-3, "layers": 2})]:
        dm.prepare_data()
        model = ERM(dm.info, **kw)
        opt = model.configure_optimizers()
        batches = [b for _, b in zip(range(args.steps), dm.train_dataloader(), strict=False)]
        n = sum(len(b["y"]) for b in batches)

        def train(model=model, opt=opt, batches=batches) -> None:
            for b in batches:
                opt.zero_grad()
                model.loss(b).backward()
                opt.step()

        print(f"training {name}: {_median_rate(train, n, args.repeats):,.0f} samples/s "
              f"(batch {len(batches[0]['y'])}, {sum(p.numel() for p in model.parameters()):,} parameters)")


if __name__ == "__main__":
    main()
