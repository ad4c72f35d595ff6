"""Seconds per LightGCN training epoch and per full-ranking evaluation.

    .venv/bin/python scripts/time_lightgcn.py                 # default data + ~1M interactions
    .venv/bin/python scripts/time_lightgcn.py --sizes default --device cuda

Times the harness's own code paths (the DataModule's training batches, the model's
training step, the full-ranking validation over every user) with a Lightning
Trainer, so the figures include the framework's per-step overhead. One warm-up
epoch is run first; the median of the timed epochs is reported.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import lightning.pytorch as L
import torch

from harness.datasets.amazon import AmazonDataModule
from harness.methods.cf import BPR

SIZES = {
    # the aurl benchmark's default synthetic set
    "default": {},
    # about 1M interactions after 5-core filtering
    "1m": {"n_users": 60000, "n_items": 20000, "n_topics": 50, "mean_activity": 17.0},
}


class Timer(L.Callback):
    def __init__(self) -> None:
        self.train: list[float] = []
        self.val: list[float] = []

    def _sync(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_epoch_start(self, trainer, pl_module):
        self._sync(pl_module)
        self._t = time.perf_counter()

    def on_validation_epoch_start(self, trainer, pl_module):
        self._sync(pl_module)
        self.train.append(time.perf_counter() - self._t)
        self._v = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module):
        self._sync(pl_module)
        self.val.append(time.perf_counter() - self._v)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", default="default,1m")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--cache-dir", default=".cache/harness")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    print("| data | users | items | train interactions | device | s / train epoch "
          "| s / full evaluation |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        t0 = time.perf_counter()
        dm = AmazonDataModule(synthetic=SIZES[size], batch_size=args.batch_size,
                              cache_dir=args.cache_dir)
        dm.setup()
        prep = time.perf_counter() - t0
        d = dm.info
        model = BPR(d, backbone="lightgcn", dim=64, n_layers=3, lr=1e-3)
        timer = Timer()
        trainer = L.Trainer(max_epochs=args.epochs + 1, accelerator=args.device, devices=1,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0,
                            callbacks=[timer])
        trainer.fit(model, datamodule=dm)
        train = statistics.median(timer.train[1:])
        val = statistics.median(timer.val[1:])
        dev = torch.cuda.get_device_name(0) if args.device == "cuda" else f"cpu x{torch.get_num_threads()}"
        print(f"| {size} | {d.n_users} | {d.n_items} | {len(d.train_user)} | {dev} | {train:.3f} "
              f"| {val:.3f} |  (data prepared in {prep:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
