"""One BPR run on an Amazon-format directory (or the default synthetic data) through the
harness's DataModule, model and a Lightning Trainer: the best validation epoch is tested.
Used to find why BPR-MF trailed RecBole's BPR on ML-100K (docs/aurl.md).

    .venv/bin/python scripts/mf_ablation.py mf 0.001 300 20 xavier 1e-4 --data /tmp/ml --category ML100K
    .venv/bin/python scripts/mf_ablation.py mf 0.01 30 30 normal 1e-4          # default synthetic data

Arguments: backbone, lr, max epochs, patience, init (``xavier``: the class's own; ``normal``:
N(0, 0.1), the initialisation before the fix), L2 weight. ML-100K as an Amazon ratings CSV:
scripts/recbole_side_by_side.py writes one under .cache/recbole-side/data/.
"""

from __future__ import annotations

import argparse
import copy
import logging
import time
import warnings

import lightning.pytorch as L
import torch
from torch import nn

from harness.datasets.amazon import AmazonDataModule
from harness.methods import cf


class Best(L.Callback):
    """Keeps the best validation epoch's weights; stops after ``patience`` epochs without gain."""

    def __init__(self, patience: int) -> None:
        self.best, self.epoch, self.state, self.history, self.patience = -1.0, 0, None, [], patience

    def on_train_epoch_end(self, trainer: L.Trainer, model: L.LightningModule) -> None:
        r = float(trainer.callback_metrics["val/recall_20"])
        self.history.append(round(r, 4))
        if r > self.best:
            self.best, self.epoch, self.state = r, trainer.current_epoch, copy.deepcopy(model.state_dict())
        if trainer.current_epoch - self.epoch >= self.patience:
            trainer.should_stop = True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, kind in (("backbone", str), ("lr", float), ("epochs", int), ("patience", int),
                       ("init", str), ("reg", float)):
        p.add_argument(name, type=kind)
    p.add_argument("--data", default=None)
    p.add_argument("--category", default="Synthetic")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.set_num_threads(a.threads)
    L.seed_everything(a.seed, verbose=False)
    dm = AmazonDataModule(data_dir=a.data, category=a.category, k_core=5, seed=a.seed)
    dm.setup()
    model = cf.BPR(dm.info, backbone=a.backbone, lr=a.lr, reg=a.reg)
    if a.init == "normal":
        for table in (model.encoder.user, model.encoder.item):
            nn.init.normal_(table.weight, std=0.1)
    best, t = Best(a.patience), time.time()
    trainer = L.Trainer(max_epochs=a.epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, callbacks=[best])
    trainer.fit(model, datamodule=dm)
    model.load_state_dict(best.state)
    res = trainer.test(model, datamodule=dm, verbose=False)[0]
    print(f"{a.backbone} lr={a.lr} init={a.init} reg={a.reg} seed={a.seed}: best epoch {best.epoch} "
          f"val {best.best:.4f} test recall_20 {res['test/recall_20']:.4f} ndcg_20 "
          f"{res['test/ndcg_20']:.4f} ({time.time() - t:.0f} s)")
    print("val recall_20 every 5th epoch:", best.history[::5])


if __name__ == "__main__":
    main()
