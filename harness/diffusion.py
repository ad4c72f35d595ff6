"""Diffusion backbones built from a config or loaded from a local diffusers pipeline directory;
nothing is downloaded. ``diffusers`` and ``transformers`` are imported inside the functions.

Two kinds, one interface (:class:`Denoiser`):

* **pixel** (no ``BACKBONE=``): a class-conditional ``UNet2DModel`` over images in [-1, 1],
  built from :class:`PixelUNetConfig` (the small CPU default), with a DDPM schedule from the
  same config;
* **latent** (``BACKBONE=<dir>``): a Stable-Diffusion-layout directory (``unet/``, ``vae/``,
  ``text_encoder/``, ``tokenizer/``, ``scheduler/``, as ``save_pretrained`` writes them): its
  ``UNet2DConditionModel`` denoises the VAE's latents, conditioned on the text encoder's
  embedding of one prompt per class; the VAE and the text encoder stay frozen and out of the
  checkpoints (the prompt embeddings are computed once).

:func:`write_tiny_pipeline` writes a tiny random pipeline in that layout (a word-level
tokenizer, a 2-layer CLIP text encoder, a 1-level VAE, a 2-level UNet): the tests drive the
latent path end to end with it on a CPU.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from harness.errors import UserError

PIPELINE_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclass
class PixelUNetConfig:
    """The small class-conditional pixel UNet and its noise schedule (every default visible)."""

    channels: Sequence[int] = (32, 64)
    layers_per_block: int = 1
    norm_groups: int = 8
    mid_attention: bool = False
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"  # DDPM's 1e-4 .. 0.02


def _require_diffusers() -> Any:
    try:
        import diffusers
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise UserError("diffusers is not installed; run `make setup`") from exc
    return diffusers


def _zero_out(unet: nn.Module) -> nn.Module:
    """Zero the UNet's output convolution: it predicts 0 until trained (InvDiff's delta init)."""
    nn.init.zeros_(unet.conv_out.weight)
    nn.init.zeros_(unet.conv_out.bias)
    return unet


def check_pipeline_dir(path: str | Path) -> Path:
    """``path`` if it holds a Stable-Diffusion-layout pipeline, else a UserError naming what lacks."""
    root = Path(path).expanduser()
    missing = [p for p in PIPELINE_PARTS if not (root / p).is_dir()]
    if missing:
        raise UserError(f"BACKBONE={path}: not a diffusers pipeline directory; missing "
                        f"{', '.join(p + '/' for p in missing)} (a Stable Diffusion directory saved with "
                        "save_pretrained, e.g. stable-diffusion-v1-4; nothing is downloaded)")
    return root


class Denoiser(nn.Module):
    """The trainable UNet (``unet``) with what turns data into its input and back.

    ``predict(unet, z, t, y)`` is any UNet of this kind (the main one or a delta) applied to
    latents ``z`` at timesteps ``t`` for classes ``y``; ``encode`` / ``decode`` map images in
    [-1, 1] to the UNet's space and back; ``make_delta(channels)`` builds a smaller UNet of the
    same kind with a zero output layer.
    """

    def __init__(self, n_classes: int, resolution: int, backbone: str | None = None,
                 pixel: PixelUNetConfig | None = None, prompts: Sequence[str] = ()):
        super().__init__()
        diffusers = _require_diffusers()
        self.n_classes, self.resolution = int(n_classes), int(resolution)
        self.kind = "latent" if backbone else "pixel"
        self._frozen: list[nn.Module] = []  # moved with the module, never checkpointed
        if backbone is None:
            cfg = pixel or PixelUNetConfig()
            ch = tuple(int(c) for c in cfg.channels)
            if not ch or any(c % cfg.norm_groups for c in ch):
                raise UserError(f"unet channels {list(ch)} must be a non-empty list of multiples of "
                                f"norm_groups={cfg.norm_groups}")
            if resolution % 2 ** (len(ch) - 1):
                raise UserError(f"resolution {resolution} must be divisible by 2^(levels-1) = "
                                f"{2 ** (len(ch) - 1)} for a {len(ch)}-level UNet")
            self.pixel_cfg = cfg
            self.unet = self._pixel_unet(ch, cfg.layers_per_block)
            self.scheduler_config = dict(diffusers.DDPMScheduler(
                num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule).config)
            self.latent_shape = (3, resolution, resolution)
            self.scaling = 1.0
        else:
            root = check_pipeline_dir(backbone)
            self.unet = diffusers.UNet2DConditionModel.from_pretrained(root / "unet")
            vae = diffusers.AutoencoderKL.from_pretrained(root / "vae").eval().requires_grad_(False)
            self._frozen.append(vae)
            self.vae = [vae]  # a list: not a registered submodule (not in the state dict)
            self.scaling = float(vae.config.scaling_factor)
            factor = 2 ** (len(vae.config.block_out_channels) - 1)
            if resolution % factor:
                raise UserError(f"resolution {resolution} must be divisible by the VAE's factor {factor}")
            side = resolution // factor
            self.latent_shape = (int(self.unet.config.in_channels), side, side)
            self.scheduler_config = dict(diffusers.DDPMScheduler.from_pretrained(root / "scheduler").config)
            if len(prompts) != n_classes:
                raise UserError(f"the latent backbone needs one prompt per class ({n_classes}); got "
                                f"{len(prompts)}")
            self.register_buffer("prompt_embeds", _embed_prompts(root, list(prompts)), persistent=False)
        self.scheduler_config.pop("_class_name", None)
        self.scheduler_config.pop("_diffusers_version", None)

    def _pixel_unet(self, channels: Sequence[int], layers_per_block: int) -> nn.Module:
        from diffusers import UNet2DModel

        n = len(channels)
        return UNet2DModel(sample_size=self.resolution, in_channels=3, out_channels=3,
                           block_out_channels=tuple(channels), layers_per_block=layers_per_block,
                           down_block_types=("DownBlock2D",) * n, up_block_types=("UpBlock2D",) * n,
                           norm_num_groups=self.pixel_cfg.norm_groups,
                           add_attention=self.pixel_cfg.mid_attention, num_class_embeds=self.n_classes)

    def make_delta(self, channels: Sequence[int]) -> nn.Module:
        """A smaller UNet of the same kind (``channels`` per level), output layer zeroed."""
        ch = tuple(int(c) for c in channels)
        if self.kind == "pixel":
            if any(c % self.pixel_cfg.norm_groups for c in ch) or self.resolution % 2 ** (len(ch) - 1):
                raise UserError(f"delta channels {list(ch)}: multiples of norm_groups="
                                f"{self.pixel_cfg.norm_groups}, at most log2(resolution) levels")
            return _zero_out(self._pixel_unet(ch, 1))
        from diffusers import UNet2DConditionModel

        cfg = self.unet.config
        n = len(ch)
        groups = min(32, *ch)
        return _zero_out(UNet2DConditionModel(
            sample_size=cfg.sample_size, in_channels=cfg.in_channels, out_channels=cfg.out_channels,
            block_out_channels=ch, layers_per_block=1, norm_num_groups=groups,
            down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
            cross_attention_dim=cfg.cross_attention_dim, attention_head_dim=max(1, min(ch) // 8)))

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Denoiser:
        super()._apply(fn, *args, **kwargs)
        for m in self._frozen:
            m._apply(fn, *args, **kwargs)
        return self

    def predict(self, unet: nn.Module, z: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """The noise ``unet`` predicts for latents ``z`` at timesteps ``t``, conditioned on class ``y``."""
        if self.kind == "pixel":
            return unet(z, t, class_labels=y).sample
        return unet(z, t, encoder_hidden_states=self.prompt_embeds[y]).sample

    def encode(self, x: Tensor, sample: bool = True) -> Tensor:
        """Images in [-1, 1] -> the UNet's space (the VAE's scaled latents; ``sample=False``: its mean)."""
        if self.kind == "pixel":
            return x
        with torch.no_grad():
            dist = self.vae[0].encode(x.to(self.vae[0].dtype)).latent_dist
            return (dist.sample() if sample else dist.mode()).float() * self.scaling

    def decode(self, z: Tensor) -> Tensor:
        """The UNet's space -> images in [-1, 1]."""
        if self.kind == "pixel":
            return z.clamp(-1, 1)
        with torch.no_grad():
            return self.vae[0].decode((z / self.scaling).to(self.vae[0].dtype)).sample.float().clamp(-1, 1)

    def train_scheduler(self) -> Any:
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(self.scheduler_config)

    def sample_scheduler(self) -> Any:
        from diffusers import DDIMScheduler

        return DDIMScheduler.from_config(self.scheduler_config)


def _embed_prompts(root: Path, prompts: list[str]) -> Tensor:
    """The frozen text encoder's last hidden states of each prompt, (n, L, D)."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(root / "tokenizer")
    enc = AutoModel.from_pretrained(root / "text_encoder").eval()
    length = min(int(getattr(tok, "model_max_length", 77) or 77), 77)
    ids = tok(prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = enc(input_ids=ids["input_ids"]).last_hidden_state
    return out.float()


# --------------------------------------------------------------------------- tiny pipeline


@dataclass
class TinyPipelineConfig:
    """A random Stable-Diffusion-layout pipeline small enough for a CPU test."""

    words: list[str] = field(default_factory=lambda: ["a", "photo", "of", "the", "bird", "landbird",
                                                      "waterbird", "person", "face"])
    text_dim: int = 32
    unet_channels: tuple[int, ...] = (32, 64)
    vae_channels: tuple[int, ...] = (32, 32)
    latent_channels: int = 4
    seed: int = 0


def write_tiny_pipeline(out: str | Path, cfg: TinyPipelineConfig | None = None) -> Path:
    """Write a tiny random pipeline (the layout :class:`Denoiser` reads) to ``out``; returns it."""
    diffusers = _require_diffusers()
    from transformers import BertTokenizer, CLIPTextConfig, CLIPTextModel

    cfg = cfg or TinyPipelineConfig()
    root = Path(out)
    torch.manual_seed(cfg.seed)
    (root / "tokenizer").mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *cfg.words]
    (root / "tokenizer" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizer(str(root / "tokenizer" / "vocab.txt"), model_max_length=16)
    tok.save_pretrained(root / "tokenizer")
    text = CLIPTextConfig(vocab_size=len(vocab), hidden_size=cfg.text_dim, intermediate_size=2 * cfg.text_dim,
                          num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=16,
                          pad_token_id=0, bos_token_id=2, eos_token_id=3)
    CLIPTextModel(text).save_pretrained(root / "text_encoder")
    n = len(cfg.vae_channels)
    diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=cfg.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        latent_channels=cfg.latent_channels, norm_num_groups=min(32, *cfg.vae_channels),
    ).save_pretrained(root / "vae")
    m = len(cfg.unet_channels)
    diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=cfg.latent_channels, out_channels=cfg.latent_channels,
        block_out_channels=cfg.unet_channels, layers_per_block=1, norm_num_groups=min(32, *cfg.unet_channels),
        down_block_types=("CrossAttnDownBlock2D",) * (m - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (m - 1),
        cross_attention_dim=cfg.text_dim, attention_head_dim=8).save_pretrained(root / "unet")
    diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                            beta_end=0.012).save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                       "harness_tiny": True}, indent=1))
    return root
