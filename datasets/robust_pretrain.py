"""A stand-in for a pretrained ViT on the synthetic image world (no download, no GPU).

The paper fine-tunes a ViT-L/16 pretrained on ImageNet-21k: its features already describe
both the bird and the background, and fine-tuning on biased data decides which ones the
classifier leans on. A small ViT trained from scratch on 2,000 biased images never gets
there: it fits the background in the first epoch and never learns the bird (measured:
docs/robustness.md). So, for the synthetic set, the harness writes a *pretrained* small ViT
once, as a local transformers directory read exactly like ``BACKBONE=<dir>``:

* corpus: ``n`` pictures from the synthetic world's renderer with every feature drawn
  independently and uniformly: the body's shape, the plumage's stripe orientation, the
  background and the mark (so no feature predicts another);
* task: object recognition, as ImageNet's labels name objects and not their backgrounds: two
  binary heads on [CLS], the body's shape and the plumage's orientation (the sum of their
  cross-entropies); the downstream label is shape and stripes *together*, which the corpus
  never pairs, and the background and the mark are left for fine-tuning to pick up or not;
* the result is cached under ``<cache_dir>/backbones/``, keyed by every argument.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from harness.cache import cached_dir, stable_hash
from harness.errors import UserError

PRETRAIN_VERSION = 4  # 4: saved with ViT's (unused, zero) mask token, so loading it reports nothing missing


@dataclass
class PretrainConfig:
    """The pretraining corpus and the small ViT (every default visible here)."""

    n: int = 4000
    size: int = 64  # pictures are drawn at this size, then resized like the data
    resolution: int = 32
    patch_size: int = 8
    hidden_size: int = 64
    layers: int = 4
    heads: int = 4
    epochs: int = 12
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 16 or self.epochs < 1 or self.resolution % self.patch_size:
            raise UserError(f"pretrain: need n >= 16, epochs >= 1 and patch_size dividing resolution; "
                            f"got {asdict(self)}")


def _corpus(cfg: PretrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(n, R, R, 3) uint8 pictures and (n, 4) labels: shape, stripes, place, mark."""
    from PIL import Image

    from harness.datasets.robust_images import _render

    rng = np.random.default_rng([cfg.seed, 7])
    labels = rng.integers(0, 2, (cfg.n, 4))
    out = np.empty((cfg.n, cfg.resolution, cfg.resolution, 3), np.uint8)
    for i, (shape, stripes, place, mark) in enumerate(labels.tolist()):
        img = _render(rng, shape, place, mark, cfg.size, stripes=stripes)
        out[i] = np.asarray(img.resize((cfg.resolution, cfg.resolution), Image.BILINEAR))
    return out, labels


def _train(cfg: PretrainConfig, out_dir: Path) -> None:
    from transformers import ViTConfig, ViTModel

    from harness.datasets.robustness import random_crop_flip

    torch.manual_seed(cfg.seed)
    x_all, labels = _corpus(cfg)
    vit_cfg = ViTConfig(image_size=cfg.resolution, patch_size=cfg.patch_size, hidden_size=cfg.hidden_size,
                        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                        intermediate_size=4 * cfg.hidden_size, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    model = ViTModel(vit_cfg, add_pooling_layer=False, use_mask_token=True)  # MiMu masks patches with it
    heads = torch.nn.Linear(cfg.hidden_size, 2 * 2)
    params = list(model.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.05)
    x_t = torch.from_numpy(x_all).permute(0, 3, 1, 2)
    y_t = torch.from_numpy(labels)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps = cfg.epochs * ((cfg.n + cfg.batch_size - 1) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, 2 * (1 - step / steps)))
    model.train()
    for epoch in range(cfg.epochs):
        perm = torch.randperm(cfg.n, generator=gen)
        hits = torch.zeros(2)
        for start in range(0, cfg.n, cfg.batch_size):
            idx = perm[start:start + cfg.batch_size]
            x = random_crop_flip(x_t[idx].float() / 255.0, pad=max(1, cfg.resolution // 8))
            x = (x - 0.5) / 0.5
            logits = heads(model(pixel_values=x).last_hidden_state[:, 0]).view(-1, 2, 2)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 2), y_t[idx, :2].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            hits += (logits.argmax(-1) == y_t[idx, :2]).float().sum(0)
        acc = (hits / cfg.n).tolist()
        print(f"    pretraining the synthetic ViT: epoch {epoch + 1}/{cfg.epochs}, train accuracy "
              f"shape {acc[0]:.2f} stripes {acc[1]:.2f}", flush=True)
    model.save_pretrained(out_dir)
    (out_dir / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "size": cfg.resolution}))
    (out_dir / "pretraining.json").write_text(json.dumps(
        {**asdict(cfg), "final_train_accuracy": dict(zip(["shape", "stripes"], acc, strict=True))},
        indent=1))


def pretrained_vit(cfg: PretrainConfig, cache_dir: str | Path) -> Path:
    """The directory of the pretrained small ViT for ``cfg`` (trained once, then cached)."""
    key = stable_hash({**asdict(cfg), "version": PRETRAIN_VERSION})
    out = Path(cache_dir) / "backbones" / f"vit-synthetic-{key}"
    return cached_dir(out, lambda tmp: _train(cfg, tmp))
