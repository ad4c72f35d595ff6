"""The evaluation classifier of generated images ("the judge"), trained once per data set.

Generated images are scored without Inception weights (none offline): a small CNN is trained on
the data set's *real* training images, with two heads on one feature layer,

* the **class** (does a generated image show the class it was asked for?),
* one **attribute** (the spurious one the bias score counts: Waterbirds' background, CelebA's
  Male, FairFace's race),

each example weighted so that every (class, attribute) group counts equally (the training mix is
biased on purpose; an attribute head that learnt the class prior would under-count the rare
value). The last epoch's weights are kept; the validation split reports its accuracies (overall,
and worst group for the attribute), which the method logs beside the bias score. Its penultimate
features (``feature_dim`` wide, after a ReLU) are what the Fréchet distance and precision/recall
are computed on, so those metrics are named ``fd_cnn``, ``precision_cnn``, ``recall_cnn``.

Images are resized (area) to ``resolution`` first, so a 512-pixel pipeline is judged at the same
cost as a 16-pixel one. The result is a directory (``judge.pt`` weights, ``judge.json`` config,
attribute and accuracies) cached under ``<cache_dir>/judges/``, keyed by the data's fingerprint
and every argument.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.cache import cached_dir, stable_hash
from harness.errors import UserError
from harness.metrics.robust import per_group

JUDGE_VERSION = 1
FEATURES_NAME = "cnn"  # the metric suffix: fd_cnn, precision_cnn, recall_cnn


@dataclass
class JudgeConfig:
    """The judge's network and training (every default visible here)."""

    attribute: str | None = None  # the spurious attribute it labels (default: the data's first)
    resolution: int = 32
    channels: int = 32
    feature_dim: int = 64
    epochs: int = 8
    lr: float = 2e-3
    batch_size: int = 64
    max_train: int = 20000  # a random subset of larger training splits (CelebA, FairFace)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.resolution < 8 or self.epochs < 1 or self.feature_dim < 2 or self.max_train < 16:
            raise UserError(f"judge: need resolution >= 8, epochs >= 1, feature_dim >= 2, max_train >= 16; "
                            f"got {asdict(self)}")


class JudgeCNN(nn.Module):
    """Three conv blocks, global average pooling, a ``feature_dim`` ReLU layer, two linear heads."""

    def __init__(self, n_classes: int, n_attr: int, channels: int, feature_dim: int, resolution: int):
        super().__init__()
        c = channels
        self.resolution = resolution

        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(),
                                 nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

        self.body = nn.Sequential(block(3, c), block(c, 2 * c), block(2 * c, 4 * c), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(4 * c, feature_dim), nn.ReLU())
        self.cls_head = nn.Linear(feature_dim, n_classes)
        self.attr_head = nn.Linear(feature_dim, n_attr)

    def resize(self, x: Tensor) -> Tensor:
        if x.shape[-1] == self.resolution and x.shape[-2] == self.resolution:
            return x
        return F.interpolate(x, size=(self.resolution, self.resolution), mode="area"
                             if x.shape[-1] > self.resolution else "bilinear")

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features of images in [-1, 1] (any resolution)."""
        return self.body(self.resize(x))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f = self.features(x)
        return self.cls_head(f), self.attr_head(f), f


Loader = Callable[[str], tuple[np.ndarray, np.ndarray, np.ndarray]]  # split -> (x uint8 NHWC, y, attrs)


def _to_input(x: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    t = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).float().div_(255.0)  # a writable copy
    return (t - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _batched(model: JudgeCNN, x: np.ndarray, mean: Any, std: Any, bs: int = 256) -> tuple[Tensor, Tensor]:
    cls, attr = [], []
    with torch.no_grad():
        for lo in range(0, len(x), bs):
            c, a, _ = model(_to_input(x[lo:lo + bs], mean, std))
            cls.append(c.argmax(1))
            attr.append(a.argmax(1))
    return torch.cat(cls), torch.cat(attr)


def train_judge(cfg: JudgeConfig, load: Loader, class_names: list[str], attr_names: list[str],
                mean: tuple[float, ...], std: tuple[float, ...], out: Path) -> Path:
    """Train the judge on the ``train`` split that ``load`` returns, evaluate on ``val``, write ``out``."""
    if not attr_names:
        raise UserError("the judge needs a spurious attribute to label; this data set has none")
    attribute = cfg.attribute or attr_names[0]
    if attribute not in attr_names:
        raise UserError(f"judge.attribute {attribute!r} is not one of the data's attributes {attr_names}")
    k = attr_names.index(attribute)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    x, y, attrs = load("train")  # x may be a memory-mapped array: only the rows used are read
    keep = (np.sort(rng.choice(len(x), cfg.max_train, replace=False)) if len(x) > cfg.max_train
            else np.arange(len(x)))
    y, attrs = y[keep], attrs[keep]
    a = attrs[:, k].astype(np.int64)
    n_classes = len(class_names)
    group = y.astype(np.int64) * 2 + a
    counts = np.bincount(group, minlength=2 * n_classes).astype(np.float64)
    weight = 1.0 / counts[group]  # every (class, attribute) group sums to the same weight
    prob = weight / weight.sum()
    model = JudgeCNN(n_classes, 2, cfg.channels, cfg.feature_dim, cfg.resolution)
    # the images are resized once, up front (the judge always sees its own resolution), 512 at a time
    xs = torch.cat([model.resize(_to_input(x[keep[lo:lo + 512]], mean, std))
                    for lo in range(0, len(keep), 512)])
    ys, as_ = torch.from_numpy(y.astype(np.int64)), torch.from_numpy(a)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps = max(1, len(keep) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps)
    model.train()
    for _ in range(cfg.epochs):
        for _ in range(steps):  # group-balanced draws, with replacement
            idx = torch.from_numpy(rng.choice(len(keep), cfg.batch_size, p=prob))
            xb = xs[idx]
            xb = torch.where(torch.rand(len(idx), 1, 1, 1) < 0.5, xb.flip(-1), xb)
            c, at, _ = model(xb)
            loss = F.cross_entropy(c, ys[idx]) + F.cross_entropy(at, as_[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    xv, yv, av = load("val")
    pc, pa = _batched(model, xv, mean, std)
    yv_t, av_t = torch.from_numpy(yv.astype(np.int64)), torch.from_numpy(av[:, k].astype(np.int64))
    acc, count = per_group(pa == av_t, yv_t * 2 + av_t, 2 * n_classes)
    present = acc[count > 0]
    meta = {"config": asdict(cfg), "attribute": attribute, "attribute_index": k, "class_names": class_names,
            "n_classes": n_classes, "mean": list(mean), "std": list(std), "train_size": int(len(keep)),
            "val_class_acc": float((pc == yv_t).float().mean()),
            "val_attr_acc": float((pa == av_t).float().mean()),
            "val_attr_worst_group_acc": float(present.min()) if present.numel() else float("nan")}
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "judge.pt")
    (out / "judge.json").write_text(json.dumps(meta, indent=1))
    return out


def cached_judge(cfg: JudgeConfig, data_fingerprint: str, cache_dir: Path, load: Loader,
                 class_names: list[str], attr_names: list[str], mean: tuple[float, ...],
                 std: tuple[float, ...]) -> Path:
    """The judge's directory, trained on first use (keyed by the data and every argument)."""
    key = stable_hash({"cfg": asdict(cfg), "data": data_fingerprint, "mean": list(mean), "std": list(std),
                       "version": JUDGE_VERSION})
    return cached_dir(Path(cache_dir) / "judges" / key,
                      lambda tmp: train_judge(cfg, load, class_names, attr_names, mean, std, tmp))


def load_judge(path: str | Path) -> tuple[JudgeCNN, dict[str, Any]]:
    """The judge network (eval mode) and its ``judge.json``."""
    root = Path(path)
    meta = json.loads((root / "judge.json").read_text())
    cfg = meta["config"]
    model = JudgeCNN(meta["n_classes"], 2, cfg["channels"], cfg["feature_dim"], cfg["resolution"])
    model.load_state_dict(torch.load(root / "judge.pt", map_location="cpu", weights_only=True))
    return model.eval().requires_grad_(False), meta
