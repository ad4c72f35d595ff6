"""Spurious-correlation data, images and text: the robustness family's DataModules.

:class:`RobustImages` reads Waterbirds, SubpopBench's ``metadata.csv``, CelebA (txt or the
Kaggle CSVs) or the ImageNet-9 backgrounds-challenge layout with MiMu's class watermark
(:mod:`harness.datasets.robust_images`); without ``DATA=`` it writes a synthetic set in the
Waterbirds layout with two shortcuts of different strength (a background colour, a stamped
mark) and reads it back through the Waterbirds reader; its backbone is then, unless ``BACKBONE=``
names one or ``pretrained: false``, a small ViT pretrained once on a shortcut-free corpus of
the same synthetic world (:mod:`harness.datasets.robust_pretrain`), standing in for the
paper's in21k-pretrained ViT. Images are decoded once into a
cached uint8 array (keyed by the files' fingerprint, the resolution and the marks) and
batches are cut from it; augmentation (a random crop of the padded image, a horizontal
flip) is done in torch, on the batch.

:class:`RobustText` reads MNLI (jsonl or GLUE TSV) with HANS, or QQP with PAWS
(:mod:`harness.datasets.robust_text`); without ``DATA=`` it writes a synthetic MNLI/HANS set
with two shortcuts (lexical overlap, a negation word). Sentences are encoded once (a word
tokenizer built from the training text, or a local pretrained tokenizer: ``BACKBONE=``)
and cached.

``seed`` is the run's seed: the training order is a permutation drawn from (seed, epoch);
augmentation draws from the generators the runner seeds with it; the synthetic sets do not
depend on it (their writer has its own ``seed``).

Under DDP the loaders shard themselves (``shards_itself``): every rank walks the same global
batches and takes a strided share of each (``rows[rank::world]``), so ``batch_size`` stays
the global batch size, evaluation covers every example exactly once (the method gathers
the predictions) and N processes see the batches one process would.

Both serve batches as dicts: ``x`` (images, float, normalised) or ``input_ids`` /
``attention_mask`` / ``token_type_ids`` (text), plus ``y``, ``g`` (group: label x every
spurious attribute), ``idx`` (position in the split). The test loaders are one per test
set, in :attr:`RobustInfo.set_names` order (``test`` first: in-distribution). Group sizes per
split are tagged on every run (``data.groups.<split>.<group>``). JTT's second stage asks for
its error set to be upsampled: ``StageData(options={"upsample": indices, "factor": k})``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from harness.api import DataModule, RealData, StageData, choice
from harness.cache import cached_dir, fingerprint, stable_hash
from harness.datasets import robust_images as ri
from harness.datasets import robust_judge as rj
from harness.datasets import robust_pretrain as rp
from harness.datasets import robust_text as rt
from harness.datasets.robust_common import RobustTable, Split, group_ids, group_names
from harness.errors import UserError

IMAGE_LAYOUTS = ("waterbirds", "subpop", "celeba", "imagenet9", "fairface")
TEXT_LAYOUTS = ("mnli", "qqp")


@dataclass
class RobustInfo:
    """What a robustness method is built from (``dm.info``)."""

    modality: str  # "image" | "text"
    dataset: str
    class_names: list[str]
    attr_names: list[str]
    group_names: list[str]
    train_counts: list[int]  # examples per group in training
    set_names: list[str]  # test sets, "test" (in-distribution) first
    broken: dict[str, str]
    collapse: dict[str, list[int]]
    train_size: int
    resolution: int | None = None
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    vocab_size: int | None = None
    max_len: int | None = None
    backbone: str | None = None  # a local pretrained directory (ViT / BERT), or None
    #: the directory of the evaluation classifier of generated images (``robust_judge``), or None
    judge: str | None = None
    #: the training split in order, without augmentation (JTT's error set, MiMu diagnostics)
    train_eval_loader: Callable[[], DataLoader] | None = field(default=None, repr=False)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_groups(self) -> int:
        return len(self.group_names)

    @property
    def train_share(self) -> torch.Tensor:
        c = torch.tensor(self.train_counts, dtype=torch.float64)
        return c / c.sum()


class _Batches(Dataset):
    """Index batches -> dict batches, cut from arrays (a memory-mapped uint8 image array or
    token tensors); ``transform`` runs on the whole batch."""

    def __init__(self, arrays: dict[str, Any], y: np.ndarray, g: np.ndarray,
                 transform: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]):
        self.arrays, self.y, self.g, self.transform = arrays, y, g, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx: list[int]) -> dict[str, torch.Tensor]:
        idx_np = np.asarray(idx, dtype=np.int64)
        batch = {k: torch.as_tensor(np.ascontiguousarray(v[idx_np])) if isinstance(v, np.ndarray)
                 else v[torch.from_numpy(idx_np)] for k, v in self.arrays.items()}
        batch.update(y=torch.from_numpy(self.y[idx_np]), g=torch.from_numpy(self.g[idx_np]),
                     idx=torch.from_numpy(idx_np))
        return self.transform(batch)


class _BatchPlan(Sampler):
    """Index lists for this rank: a permutation drawn from (seed, epoch) (training; the first
    ``num_samples`` of it, repeated permutations if more) or the examples in order
    (evaluation), cut into global batches of ``batch_size``, of which this rank takes
    ``rows[rank::world]``. In training under DDP a last global batch with fewer rows than
    ranks is dropped, so every rank takes the same number of steps."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int = 0, rank: int = 0,
                 world: int = 1, num_samples: int | None = None):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world, self.epoch = rank, world, 0
        self.num_samples = n if num_samples is None else int(num_samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        keep_last = rest > 0 and (not self.shuffle or self.world == 1 or rest >= self.world)
        return full + int(keep_last)

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        rng = np.random.default_rng([self.seed, self.epoch])
        reps = -(-self.num_samples // self.n)
        return np.concatenate([rng.permutation(self.n) for _ in range(reps)])[:self.num_samples]

    def __iter__(self):
        order = self._order()
        for b in range(len(self)):
            rows = order[b * self.batch_size:(b + 1) * self.batch_size][self.rank::self.world]
            if len(rows):
                yield rows.tolist()


class _RobustBase(DataModule):
    """What images and text share: groups, stage data, loaders, stats."""

    real_data = RealData(dir_param="data_dir", synthetic_params=("synthetic",))
    backbone_param = "backbone"
    #: the loaders shard themselves across ranks (:class:`_BatchPlan`), so the runner turns
    #: Lightning's automatic DistributedSampler off
    shards_itself = True

    def __init__(self, data_dir: str | None, layout: str, batch_size: int, eval_batch_size: int,
                 cache_dir: str, backbone: str | None, num_workers: int, seed: int = 0):
        super().__init__()
        self.seed = int(seed)
        self.data_dir = Path(data_dir).expanduser() if data_dir else None
        self.layout = layout
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise UserError(f"batch_size and eval_batch_size must be >= 1, got {batch_size}, "
                            f"{eval_batch_size}")
        self.cache_dir = Path(cache_dir)
        self.backbone = str(Path(backbone).expanduser()) if backbone else None
        if self.backbone and not Path(self.backbone).is_dir():
            raise UserError(f"BACKBONE={backbone}: no such directory (a local pretrained model "
                            "directory; nothing is downloaded)")
        self.num_workers = int(num_workers)
        self._table: RobustTable | None = None
        self._upsample: np.ndarray | None = None
        self._epoch_size: int | None = None

    # -- reading ---------------------------------------------------------------------------
    def _read(self) -> RobustTable:
        raise NotImplementedError

    def _data_root(self, name: str, version: int, write: Callable[[Path, Any], Path]) -> Path:
        """``DATA=``, or the synthetic set ``write`` produces from ``self.synthetic``, cached
        under a key of its arguments and the writer's version."""
        if self.data_dir is not None:
            return self.data_dir
        cfg = self.synthetic
        key = stable_hash({**asdict(cfg), "writer": version})
        return cached_dir(self.cache_dir / "synthetic" / f"{name}-{key}", lambda tmp: write(tmp, cfg))

    @property
    def table(self) -> RobustTable:
        if self._table is None:
            self._table = self._read()
            self._check(self._table)
        return self._table

    @staticmethod
    def _check(t: RobustTable) -> None:
        for name, split in [("train", t.train), ("val", t.val), *t.tests.items()]:
            if len(split) == 0:
                raise UserError(f"{t.name}: the {name} split is empty")
        if "test" not in t.tests:
            raise UserError(f"{t.name}: the reader returned no in-distribution 'test' set")

    def prepare_data(self) -> None:
        """Read and check every file before any run starts (a DataFormatError names the file)."""
        self.table  # noqa: B018

    def _groups(self, split: Split) -> np.ndarray:
        return group_ids(split.y, split.attrs)

    def stats(self) -> dict[str, Any]:
        t = self.table
        names = group_names(t.class_names, t.attr_names)
        out: dict[str, Any] = {"layout": t.name, "attributes": ",".join(t.attr_names) or "none",
                               "test_sets": ",".join(t.tests)}
        for split_name, split in [("train", t.train), ("val", t.val), *t.tests.items()]:
            counts = np.bincount(self._groups(split), minlength=len(names))
            out[f"size.{split_name}"] = len(split)
            for n, c in zip(names, counts, strict=True):
                out[f"groups.{split_name}.{n}"] = int(c)
        return out

    def _info_fields(self) -> dict[str, Any]:
        t = self.table
        names = group_names(t.class_names, t.attr_names)
        counts = np.bincount(self._groups(t.train), minlength=len(names))
        return dict(dataset=t.name, class_names=list(t.class_names), attr_names=list(t.attr_names),
                    group_names=names, train_counts=[int(c) for c in counts],
                    set_names=list(t.tests), broken=dict(t.broken), collapse=dict(t.collapse),
                    train_size=len(t.train), backbone=self.backbone,
                    train_eval_loader=self._train_eval_loader)

    # -- stage data ---------------------------------------------------------------------------
    def use_stage_data(self, request: StageData) -> None:
        """The training split; JTT's upweighting stage: ``options = {"upsample": indices,
        "factor": k}`` adds k - 1 more copies of those examples (Liu et al. 2021, Eq. 2);
        with ``"epoch_size": n`` an epoch is a random n of that upsampled list (a fresh draw
        each epoch, without replacement), so the stage takes as many steps as plain training."""
        if request.part != "train" or request.domains is not None:
            super().use_stage_data(request)
        opts = dict(request.options)
        unknown = set(opts) - {"upsample", "factor", "epoch_size"}
        if unknown:
            raise UserError(f"{type(self).__name__}: unknown stage options {sorted(unknown)}")
        if "upsample" in opts:
            idx = np.asarray(opts["upsample"], dtype=np.int64)
            factor = int(opts.get("factor", 1))
            if factor < 1 or (idx.size and (idx.min() < 0 or idx.max() >= len(self.table.train))):
                raise UserError(f"upsample: factor {factor} or indices outside the training split")
            self._upsample = np.concatenate([np.arange(len(self.table.train))]
                                            + [idx] * (factor - 1)).astype(np.int64)
            size = opts.get("epoch_size")
            if size is not None and int(size) < 1:
                raise UserError(f"upsample: epoch_size must be >= 1, got {size}")
            self._epoch_size = None if size is None else min(int(size), len(self._upsample))
        else:
            self._upsample = self._epoch_size = None

    # -- loaders ------------------------------------------------------------------------------
    def _arrays(self, name: str) -> dict[str, Any]:
        raise NotImplementedError

    def _transform(self, train: bool) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        raise NotImplementedError

    def _split(self, name: str) -> Split:
        t = self.table
        return {"train": t.train, "val": t.val}.get(name) or t.tests[name]

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, name: str, train: bool, order: np.ndarray | None = None,
                shard: bool = True) -> DataLoader:
        split = self._split(name)
        ds = _Batches(self._arrays(name), split.y.astype(np.int64), self._groups(split),
                      self._transform(train))
        rank, world = self._rank_world() if shard else (0, 1)
        if order is not None:  # upsampled training: batches of positions in the index list
            plan = _BatchPlan(len(order), self.batch_size, True, self.seed, rank, world,
                              self._epoch_size)
            return DataLoader(_Remap(ds, order), sampler=plan, batch_size=None,
                              num_workers=self.num_workers)
        plan = _BatchPlan(len(ds), self.batch_size if train else self.eval_batch_size, train,
                          self.seed, rank, world)
        return DataLoader(ds, sampler=plan, batch_size=None, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self._upsample)

    def _train_eval_loader(self) -> DataLoader:
        """The whole training split in order, on every rank (JTT's error set)."""
        return self._loader("train", False, shard=False)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(name, False) for name in self.table.tests]


class _Remap(Dataset):
    """Positions in an upsampled index list -> the underlying examples."""

    def __init__(self, ds: _Batches, order: np.ndarray):
        self.ds, self.order = ds, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, pos: list[int]) -> dict[str, torch.Tensor]:
        return self.ds[self.order[np.asarray(pos, dtype=np.int64)].tolist()]


class RobustImages(_RobustBase):
    """Image data with spurious attributes (see the module docstring).

    ``layout``: ``waterbirds`` (also the synthetic set), ``subpop`` (SubpopBench
    ``metadata.csv``), ``celeba`` (``target`` vs the ``spurious`` attribute(s) by name; default
    Blond_Hair and Male), ``imagenet9`` (backgrounds challenge + MiMu's class watermark when
    ``marks``), ``fairface`` (``target`` / ``spurious`` as ``column`` or ``column=value``;
    default gender and race=White).
    """

    def __init__(self, data_dir: str | None = None, layout: str = "waterbirds",
                 target: str | None = None, spurious: str | list[str] | None = None,
                 subpop_name: str | None = None, marks: bool = True, mark_seed: int = 0,
                 synthetic: dict[str, Any] | None = None, pretrained: bool = True,
                 pretrain: dict[str, Any] | None = None, resolution: int = 32, augment: bool = True,
                 judge: dict[str, Any] | None = None, batch_size: int = 64, eval_batch_size: int = 256,
                 backbone: str | None = None,
                 cache_dir: str = ".cache/harness", num_workers: int = 0, seed: int = 0):
        super().__init__(data_dir, choice("layout", layout, IMAGE_LAYOUTS), batch_size, eval_batch_size,
                         cache_dir, backbone, num_workers, seed)
        if data_dir is None and layout != "waterbirds":
            raise UserError(f"layout {layout!r} reads real data: pass DATA=<dir> (the synthetic set "
                            "is written in the waterbirds layout)")
        self.target, self.spurious = target, spurious
        self.subpop_name, self.marks, self.mark_seed = subpop_name, bool(marks), int(mark_seed)
        self.synthetic = ri.SyntheticImages(**(synthetic or {})) if data_dir is None else None
        self.resolution = int(resolution)
        if not 8 <= self.resolution <= 1024:
            raise UserError(f"resolution must be between 8 and 1024 pixels, got {resolution}")
        # the synthetic world's stand-in for an in21k-pretrained ViT (robust_pretrain)
        self.pretrain = (rp.PretrainConfig(**{"resolution": self.resolution, **(pretrain or {})})
                         if pretrained and data_dir is None and not backbone else None)
        self.augment = bool(augment)
        # the classifier that labels generated images (InvDiff's evaluation), trained once on the
        # real training images (robust_judge)
        self.judge = rj.JudgeConfig(**judge) if judge is not None else None
        self._judge_path: Path | None = None
        self.save_hyperparameters()
        self._decoded: dict[str, np.ndarray] = {}
        self.mean, self.std = self._normalisation()

    def _normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """A local backbone's image_mean / image_std (preprocessor_config.json), else 0.5 / 0.5
        (ViT in21k's)."""
        if self.backbone:
            cfg = Path(self.backbone) / "preprocessor_config.json"
            if cfg.exists():
                d = json.loads(cfg.read_text())
                if "image_mean" in d and "image_std" in d:
                    return tuple(d["image_mean"]), tuple(d["image_std"])
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    def _root(self) -> Path:
        return self._data_root("waterbirds", ri.SYNTHETIC_VERSION, ri.write_synthetic_waterbirds)

    def _read(self) -> RobustTable:
        root = self._root()
        if self.layout == "waterbirds":
            return ri.read_waterbirds(root)
        if self.layout == "subpop":
            return ri.read_subpop_metadata(root, self.subpop_name or "")
        if self.layout == "celeba":
            return ri.read_celeba(root, self.target or "Blond_Hair", self.spurious or "Male")
        if self.layout == "fairface":
            return ri.read_fairface(root, self.target or "gender", self.spurious or "race")
        return ri.read_imagenet9(root, marks=self.marks, mark_seed=self.mark_seed)

    def prepare_data(self) -> None:
        """Read and check the files; build the pretrained stand-in once, before any run (the
        runner prepares every dataset in its own process first, so parallel jobs share it)."""
        super().prepare_data()
        if self.pretrain is not None:
            rp.pretrained_vit(self.pretrain, self.cache_dir)
        self._judge_dir()

    def _judge_dir(self) -> Path | None:
        """The judge's directory (trained on first use), or None without ``judge``; looked up
        once per instance (the key fingerprints every image file)."""
        if self.judge is None:
            return None
        if self._judge_path is not None:
            return self._judge_path
        t = self.table

        def load(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            split = self._split(name)
            return np.asarray(self._arrays(name)["x"]), split.y, split.attrs

        self._judge_path = rj.cached_judge(self.judge, self.fingerprint(), self.cache_dir, load,
                                           list(t.class_names), list(t.attr_names), self.mean, self.std)
        return self._judge_path

    def fingerprint(self) -> str:
        t = self.table
        paths = [p for s in [t.train, t.val, *t.tests.values()] for p in (s.paths or [])]
        return stable_hash([fingerprint(t.files), ri.images_fingerprint(paths)])

    @property
    def info(self) -> RobustInfo:
        fields = self._info_fields()
        if self.pretrain is not None:
            fields["backbone"] = str(rp.pretrained_vit(self.pretrain, self.cache_dir))
        judge = self._judge_dir()
        fields["judge"] = str(judge) if judge is not None else None
        return RobustInfo(modality="image", resolution=self.resolution, image_mean=self.mean,
                          image_std=self.std, **fields)

    def _arrays(self, name: str) -> dict[str, Any]:
        if name not in self._decoded:
            self._decoded[name] = ri.decode_images(self._split(name), self.resolution,
                                                   self.cache_dir / "images")
        return {"x": self._decoded[name]}

    def _transform(self, train: bool) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        res, augment = self.resolution, self.augment and train

        def transform(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            x = batch["x"].permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W)
            if augment:
                x = random_crop_flip(x, pad=max(1, res // 8))
            batch["x"] = (x - mean) / std
            return batch

        return transform


def random_crop_flip(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Per image: a random res x res crop of the reflect-padded image and a horizontal flip
    with probability 1/2 (torch's global RNG, seeded by the runner)."""
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (b,))
    dx = torch.randint(0, 2 * pad + 1, (b,))
    rows = (dy.view(b, 1) + torch.arange(h).view(1, h))  # (B, H)
    cols = (dx.view(b, 1) + torch.arange(w).view(1, w))  # (B, W)
    flip = torch.rand(b) < 0.5
    cols = torch.where(flip.view(b, 1), cols.flip(1), cols)
    bi = torch.arange(b).view(b, 1, 1)
    out = padded.permute(0, 2, 3, 1)[bi, rows.view(b, h, 1), cols.view(b, 1, w)]  # (B, H, W, 3)
    return out.permute(0, 3, 1, 2).contiguous()


class RobustText(_RobustBase):
    """Sentence-pair data with spurious attributes: ``mnli`` (+ HANS) or ``qqp`` (+ PAWS)."""

    def __init__(self, data_dir: str | None = None, layout: str = "mnli",
                 synthetic: dict[str, Any] | None = None, max_len: int = 32, min_count: int = 1,
                 batch_size: int = 64, eval_batch_size: int = 256, backbone: str | None = None,
                 cache_dir: str = ".cache/harness", num_workers: int = 0, seed: int = 0):
        super().__init__(data_dir, choice("layout", layout, TEXT_LAYOUTS), batch_size, eval_batch_size,
                         cache_dir, backbone, num_workers, seed)
        if data_dir is None and layout != "mnli":
            raise UserError(f"layout {layout!r} reads real data: pass DATA=<dir> (the synthetic set "
                            "is written in the MNLI/HANS layout)")
        self.synthetic = rt.SyntheticText(**(synthetic or {})) if data_dir is None else None
        self.max_len, self.min_count = int(max_len), int(min_count)
        if self.max_len < 4:
            raise UserError(f"max_len must be at least 4 tokens, got {max_len}")
        self.save_hyperparameters()
        self._encoded: dict[str, dict[str, torch.Tensor]] | None = None
        self._vocab_size: int | None = None

    def _root(self) -> Path:
        return self._data_root("nli", rt.SYNTHETIC_VERSION, rt.write_synthetic_nli)

    def _read(self) -> RobustTable:
        root = self._root()
        return rt.read_mnli(root) if self.layout == "mnli" else rt.read_qqp(root)

    def fingerprint(self) -> str:
        return fingerprint(self.table.files)

    def _encode(self) -> dict[str, dict[str, torch.Tensor]]:
        if self._encoded is None:
            tok = rt.load_tokenizer(self.backbone) if self.backbone else None
            self._encoded, self._vocab_size = rt.encode_table(
                self.table, tok, self.max_len, self.cache_dir / "text", min_count=self.min_count)
        return self._encoded

    @property
    def info(self) -> RobustInfo:
        self._encode()
        return RobustInfo(modality="text", vocab_size=self._vocab_size, max_len=self.max_len,
                          **self._info_fields())

    def _arrays(self, name: str) -> dict[str, Any]:
        return dict(self._encode()[name])

    def _transform(self, train: bool) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        def transform(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            n = int(batch["attention_mask"].sum(1).max())  # trim the padding every example has
            for k in ("input_ids", "attention_mask", "token_type_ids"):
                batch[k] = batch[k][:, :n]
            return batch

        return transform
