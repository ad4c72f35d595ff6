"""Amazon reviews for collaborative filtering: a synthetic writer and the DataModule.

Real data: a directory holding one category in the 2014, 2018 or 2023 format, or
the ratings-only CSV (see :mod:`harness.datasets.amazon_readers`). Without a
directory, :func:`write_synthetic` writes a 2018-format category
(``Synthetic_5.json.gz`` plus ``meta_Synthetic.json.gz``) and the DataModule
reads it back through the same reader as real data. The DataModule de-duplicates,
k-cores and splits once into a cached tensor file (in ``prepare_data``, where bad files and
empty splits are refused; a cache file that does not load is set aside and rebuilt) and
serves BPR-style training batches
(with sampled negatives) and per-user full-ranking evaluation batches, sharded across ranks
by itself.

The synthetic generator exists to make popularity bias measurable: item
popularity is Pareto-distributed (Gini >= 0.6 after 5-core filtering), user
activity is log-normal, every user has one or two taste topics, and a share of
each user's interactions is exposure noise drawn from global popularity alone.
A tail item is therefore relevant only to users of its topic, while head
items collect interactions from everyone: the situation in which a CF model
learns to rank by popularity and AURL-style debiasing has something to fix.
Titles are built from topic-specific attribute words, so they carry signal.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from harness.api import DataModule, RealData, choice
from harness.cache import cached_dir, cached_torch, fingerprint, is_complete, stable_hash
from harness.datasets import amazon_readers as ar
from harness.errors import DataFormatError, UserError

log = logging.getLogger(__name__)

SPLITS = {
    "ratio": ar.split_ratio,
    "temporal": ar.split_temporal,
    "global_time": ar.split_global_time,
    "loo": ar.split_leave_one_out,
}


# --------------------------------------------------------------------------- synthetic data


@dataclass
class SyntheticConfig:
    """Arguments of :func:`write_synthetic`; every default is visible here."""

    n_users: int = 3000
    n_items: int = 1500
    n_topics: int = 20
    mean_activity: float = 16.0  # mean interactions per user (log-normal, min 5)
    activity_sigma: float = 0.8
    popularity_alpha: float = 0.9  # Pareto shape of item popularity (smaller = longer tail)
    exposure_noise: float = 0.25  # share of interactions drawn from global popularity alone
    seed: int = 0

    def key(self) -> str:
        return stable_hash(asdict(self), 12)


_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "di", "fe", "go"]
_GENERIC = ["set", "kit", "pack", "bottle", "case", "tool", "cream", "bag", "lamp", "brush"]


def _word(rng: np.random.Generator, n: int = 3) -> str:
    return "".join(rng.choice(_SYLLABLES, size=n))


def synthetic_interactions(cfg: SyntheticConfig) -> dict[str, np.ndarray]:
    """Draw users' interactions: topic preference x item popularity, plus exposure noise.

    Returns arrays ``user``, ``item``, ``timestamp`` (seconds), ``item_topic``.
    Sampling without replacement per user uses the Gumbel-top-k trick.
    """
    rng = np.random.default_rng(cfg.seed)
    item_topic = rng.integers(0, cfg.n_topics, cfg.n_items)
    popularity = rng.pareto(cfg.popularity_alpha, cfg.n_items) + 1.0
    popularity /= popularity.sum()
    # one or two taste topics per user
    main = rng.integers(0, cfg.n_topics, cfg.n_users)
    second = rng.integers(0, cfg.n_topics, cfg.n_users)
    has_second = rng.random(cfg.n_users) < 0.5
    mu = np.log(max(cfg.mean_activity - 5, 1.0)) - cfg.activity_sigma**2 / 2
    activity = 5 + np.floor(rng.lognormal(mu, cfg.activity_sigma, cfg.n_users)).astype(int)
    activity = np.minimum(activity, cfg.n_items // 4)
    users, items = [], []
    for u in range(cfg.n_users):
        in_topic = (item_topic == main[u]) | (has_second[u] & (item_topic == second[u]))
        # mixture: (1 - noise) * topic-restricted popularity + noise * global popularity
        p_topic = np.where(in_topic, popularity, 0.0)
        if p_topic.sum() == 0:  # a topic without items (tiny catalogues)
            p_topic = popularity
        p = (1 - cfg.exposure_noise) * p_topic / p_topic.sum() + cfg.exposure_noise * popularity
        keys = np.log(p + 1e-300) + rng.gumbel(size=cfg.n_items)
        chosen = np.argpartition(-keys, activity[u])[: activity[u]]
        users.append(np.full(len(chosen), u))
        items.append(chosen)
    user = np.concatenate(users)
    item = np.concatenate(items)
    start = 1_388_534_400 + rng.integers(0, 4 * 365 * 86400, cfg.n_users)  # 2014 .. 2018
    gaps = rng.exponential(20 * 86400, len(user)).astype(np.int64)
    order = np.lexsort((rng.random(len(user)), user))
    user, item, gaps = user[order], item[order], gaps[order]
    first = np.r_[True, user[1:] != user[:-1]]
    csum = np.cumsum(gaps)
    base = np.maximum.accumulate(np.where(first, csum - gaps, 0))
    timestamp = start[user] + (csum - base)
    return {"user": user, "item": item, "timestamp": timestamp, "item_topic": item_topic}


def write_synthetic(out_dir: str | Path, cfg: SyntheticConfig | None = None,
                    category: str = "Synthetic") -> Path:
    """Write ``<category>_5.json.gz`` and ``meta_<category>.json.gz`` in the 2018 format.

    Files are gzip'd with ``mtime=0`` so the same config always gives the same bytes
    (and so the same data fingerprint and run keys).
    """
    cfg = cfg or SyntheticConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    d = synthetic_interactions(cfg)
    rng = np.random.default_rng(cfg.seed + 1)
    topic_words = [[_word(rng) for _ in range(6)] for _ in range(cfg.n_topics)]
    topic_names = [_word(rng, 2).title() for _ in range(cfg.n_topics)]
    brands = [_word(rng, 2).title() for _ in range(40)]
    asins = [f"B{(i * 7919 + 1000003) % 10**9:09d}" for i in range(cfg.n_items)]
    users = [f"A{(u * 104729 + 99991) % 10**12:012d}X" for u in range(cfg.n_users)]

    def gz(path: Path):
        return gzip.GzipFile(filename="", mode="wb", fileobj=open(path, "wb"), mtime=0)

    with gz(out_dir / f"{category}_5.json.gz") as f:
        for u, i, t in zip(d["user"], d["item"], d["timestamp"], strict=True):
            rec = {
                "overall": float(rng.integers(3, 6)),
                "verified": True,
                "reviewerID": users[u],
                "asin": asins[i],
                "reviewText": "great " + topic_words[d["item_topic"][i]][0],
                "summary": "Five Stars",
                "unixReviewTime": int(t),
            }
            if rng.random() < 0.05:
                rec["vote"] = f"{rng.integers(1, 3000):,}"
            f.write((json.dumps(rec) + "\n").encode())
    with gz(out_dir / f"meta_{category}.json.gz") as f:
        for i in range(cfg.n_items):
            t = d["item_topic"][i]
            words = rng.choice(topic_words[t], size=2, replace=False)
            title = f"{rng.choice(brands)} {words[0]} {words[1]} {rng.choice(_GENERIC)}"
            rec = {
                "asin": asins[i],
                "title": title,
                "brand": title.split()[0],
                "category": [category, topic_names[t]],
                "main_cat": category,
                "price": f"${rng.uniform(3, 80):.2f}",
            }
            f.write((json.dumps(rec) + "\n").encode())
    return out_dir


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0 = equal, 1 = all mass on one)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))


# --------------------------------------------------------------------------- processed data


@dataclass
class RecData:
    """What a CF method needs to know about its data; tensors are on the CPU.

    ``*_indptr``/``*_indices`` are CSR rows per user (item ids). ``head_item`` marks
    the top-20% items by training popularity, ``active_user`` the top-20% users by
    training interactions.
    """

    n_users: int
    n_items: int
    train_user: torch.Tensor
    train_item: torch.Tensor
    train_indptr: torch.Tensor
    train_indices: torch.Tensor
    valid_indptr: torch.Tensor
    valid_indices: torch.Tensor
    test_indptr: torch.Tensor
    test_indices: torch.Tensor
    item_popularity: torch.Tensor
    head_item: torch.Tensor
    active_user: torch.Tensor


_PAYLOAD_KEYS = frozenset({"n_users", "n_items", "user", "item", "timestamp", "train", "valid",
                           "test", "stats"})


def _payload_ok(p: Any) -> bool:
    """Whether a loaded cache holds what :meth:`AmazonDataModule.setup` reads."""
    return isinstance(p, dict) and _PAYLOAD_KEYS <= set(p) and all(
        isinstance(p[k], torch.Tensor) for k in ("user", "item", "train", "valid", "test"))


def _csr(user: np.ndarray, item: np.ndarray, n_users: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = np.lexsort((item, user))
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(user, minlength=n_users), out=indptr[1:])
    return torch.from_numpy(indptr), torch.from_numpy(item[order].astype(np.int64))


class _PairSet:
    """Membership of (user, item) codes ``user * n_items + item``: a bitmap when the code
    space fits in 32 MiB of bits (a vectorised lookup), else a sorted array searched."""

    BITMAP_LIMIT = 1 << 28

    def __init__(self, codes: np.ndarray, space: int):
        codes = np.unique(codes.astype(np.int64))
        self.bits: np.ndarray | None = None
        self.sorted = codes
        if space <= self.BITMAP_LIMIT:
            byte = codes >> 3
            first = np.flatnonzero(np.r_[True, byte[1:] != byte[:-1]])
            bits = np.zeros((space + 7) // 8, np.uint8)
            if len(codes):
                bits[byte[first]] = np.bitwise_or.reduceat(
                    np.left_shift(1, codes & 7).astype(np.uint8), first)
            self.bits = bits

    def contains(self, q: np.ndarray) -> np.ndarray:
        """Bool mask: which codes of ``q`` are in the set."""
        if self.bits is not None:
            return ((self.bits[q >> 3] >> (q & 7).astype(np.uint8)) & 1).astype(bool)
        if not len(self.sorted):
            return np.zeros(len(q), bool)
        pos = np.searchsorted(self.sorted, q).clip(max=len(self.sorted) - 1)
        return self.sorted[pos] == q


class _TrainBatches(Dataset):
    """One rank's share of a group of consecutive global batches: (users, positive items,
    sampled negatives, sizes), the batches end to end (``harness.methods.cf.split_group``).

    Negatives are uniform over items, resampled while they hit the user's training
    items. They are drawn for the whole group (all its global batches at once, vectorised)
    from the group's own seed and then sliced per batch and rank, so N ranks together see
    exactly the batches one process would.
    """

    def __init__(self, user: np.ndarray, item: np.ndarray, n_items: int):
        self.user, self.item, self.n_items = user, item, n_items
        self.known = _PairSet(user.astype(np.int64) * n_items + item, (int(user.max()) + 1) * n_items
                              if len(user) else 0)

    def __len__(self) -> int:
        return len(self.user)

    def __getitem__(self, key: tuple[tuple[int, ...], list[np.ndarray], slice]
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, ...]]:
        group_seed, batches, share = key
        rng = np.random.default_rng(list(group_seed))
        idx = np.concatenate(batches)
        u, i = self.user[idx], self.item[idx]
        neg = rng.integers(0, self.n_items, len(idx))
        code = u.astype(np.int64) * self.n_items
        todo = np.arange(len(idx))
        for _ in range(10):  # only the redrawn negatives are checked again
            todo = todo[self.known.contains(code[todo] + neg[todo])]
            if not len(todo):
                break
            neg[todo] = rng.integers(0, self.n_items, len(todo))
        ends = np.cumsum([len(rows) for rows in batches])
        parts = [np.arange(end - len(rows), end)[share] for rows, end in zip(batches, ends, strict=True)]
        take = np.concatenate(parts)
        sizes = tuple(len(p) for p in parts)
        return (*(torch.from_numpy(np.ascontiguousarray(a[take])) for a in (u, i, neg)), sizes)


class _EpochBatchSampler(Sampler):
    """Yields ``(seed, [global batch rows, ...], this rank's slice)`` per group of ``group``
    consecutive batches; a fresh permutation per epoch.

    Every rank walks the same permutation and takes a strided share of each global
    batch, so ``batch_size`` stays the global batch size under DDP.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 group: int = 1):
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, 0
        self.rank, self.world, self.group = rank, world, max(1, group)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def n_batches(self) -> int:
        """Optimiser steps per epoch."""
        return (self.n + self.batch_size - 1) // self.batch_size

    def __len__(self) -> int:
        return (self.n_batches() + self.group - 1) // self.group

    def __iter__(self):
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        share = slice(self.rank, None, self.world)
        bs, nb = self.batch_size, self.n_batches()
        for g in range(len(self)):
            batches = [perm[b * bs : (b + 1) * bs]
                       for b in range(g * self.group, min((g + 1) * self.group, nb))]
            yield (self.seed, self.epoch, g), batches, share


class AmazonDataModule(DataModule):
    """Amazon reviews (2014 / 2018 / 2023 / ratings CSV) or synthetic 2018-format data.

    Preprocessing: duplicate (user, item) pairs keep the earliest, iterative k-core,
    then a split (``ratio`` per user at random, ``temporal`` per user by time,
    ``global_time`` at global time cuts, ``loo`` leave-one-out). Processed tensors
    are cached under ``cache_dir`` keyed by the raw files' fingerprint and these
    arguments. ``DATASET=`` names the category read from ``DATA=``.

    Training loader items are groups of ``group_batches`` consecutive batches of
    ``batch_size`` (the method takes one optimiser step per batch: ``batch_size`` keeps its
    meaning); grouping spreads Lightning's per-step cost over many small CF steps.
    """

    real_data = RealData(category_param="category")
    #: the loaders shard themselves across ranks (exactly, without padding), so the
    #: runner turns Lightning's automatic DistributedSampler off for this dataset
    shards_itself = True

    def __init__(
        self,
        data_dir: str | None = None,
        category: str = "Synthetic",
        k_core: int = 5,
        split: str = "ratio",
        split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
        split_seed: int = 0,
        head_share: float = 0.2,
        active_share: float = 0.2,
        batch_size: int = 2048,
        eval_batch_size: int = 1024,
        group_batches: int = 16,
        cache_dir: str = ".cache/harness",
        synthetic: dict[str, Any] | None = None,
        seed: int = 0,
    ):
        super().__init__()
        choice("split", split, tuple(SPLITS))
        self.data_dir = data_dir
        self.category = category
        self.k_core = k_core
        self.split = split
        self.split_ratios = tuple(split_ratios)
        self.split_seed = split_seed
        self.head_share = head_share
        self.active_share = active_share
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        if group_batches < 1:
            raise UserError(f"group_batches must be >= 1; got {group_batches}")
        self.group_batches = group_batches
        self.cache_dir = Path(cache_dir)
        self.synthetic = SyntheticConfig(**(synthetic or {}))
        self.seed = seed
        self._info: RecData | None = None
        self._stats: dict[str, Any] = {}
        self._fingerprint: str | None = None
        self._payload: dict[str, Any] | None = None

    # -- raw files ------------------------------------------------------------------------

    def raw_dir(self) -> Path:
        """The directory read: the user's, or the cached synthetic set (written if missing)."""
        if self.data_dir is not None:
            return Path(self.data_dir).expanduser()
        # the writer names its files after the category: the key holds both
        key = stable_hash([self.category, asdict(self.synthetic)], 12)
        out = self.cache_dir / "synthetic" / f"amazon-{key}"
        if not is_complete(out):
            log.info("writing synthetic Amazon data to %s", out)
        return cached_dir(out, lambda tmp: write_synthetic(tmp, self.synthetic, self.category))

    def fingerprint(self) -> str:
        """Fingerprint of the raw files (cheap; see :func:`harness.cache.fingerprint`)."""
        if self._fingerprint is None:
            _, reviews, meta = ar.find_files(self.raw_dir(), self.category)
            self._fingerprint = fingerprint([p for p in (reviews, meta) if p is not None])
        return self._fingerprint

    def _processed_path(self) -> Path:
        # every argument the payload depends on; v: its layout (2: empty splits refused)
        args = {
            "fp": self.fingerprint(), "category": self.category, "k": self.k_core,
            "split": self.split, "ratios": self.split_ratios, "split_seed": self.split_seed,
            "v": 2,
        }
        return self.cache_dir / "processed" / f"amazon-{stable_hash(args, 16)}.pt"

    def prepare_data(self) -> None:
        """Write synthetic data if needed, then read, filter and split once into the cache (a
        cache file that does not load is set aside and rebuilt); data errors are raised here."""
        if self._payload is None:
            self._payload = cached_torch(self._processed_path(), self._process, _payload_ok)

    def _process(self) -> dict[str, Any]:
        fmt, reviews, _ = ar.find_files(self.raw_dir(), self.category)
        log.info("reading %s (%s format)", reviews, fmt)
        inter, stats = ar.read_interactions(reviews, fmt, progress=True)
        n_read = len(inter)
        inter = ar.k_core(ar.dedupe_keep_earliest(inter), self.k_core)
        if len(inter) == 0:
            raise DataFormatError(
                f"no interactions left in {reviews} after {self.k_core}-core filtering (of "
                f"{n_read} read): every user and item needs {self.k_core} interactions; use a "
                "larger category, the complete reviews file, or a smaller k_core"
            )
        split_fn = SPLITS[self.split]
        kwargs: dict[str, Any] = {}
        if self.split != "loo":
            kwargs["ratios"] = self.split_ratios
        if self.split == "ratio":
            kwargs["seed"] = self.split_seed
        tr, va, te = split_fn(inter, **kwargs)
        for part, rows in (("train", tr), ("valid", va), ("test", te)):
            if len(rows) == 0:
                raise UserError(
                    f"dataset amazon ({reviews}, category {self.category}): the {part} split is "
                    f"empty ({len(inter)} interactions after {self.k_core}-core, split "
                    f"{self.split!r}, split_ratios {list(self.split_ratios)}); give the {part} "
                    "split a share (split_ratios), use another split or more data"
                )
        return {
            "n_users": inter.n_users, "n_items": inter.n_items,
            "user": torch.from_numpy(inter.user), "item": torch.from_numpy(inter.item),
            "timestamp": torch.from_numpy(inter.timestamp),
            "train": torch.from_numpy(tr), "valid": torch.from_numpy(va),
            "test": torch.from_numpy(te),
            "stats": {"lines": stats.lines, "malformed": stats.malformed, "format": fmt},
        }

    def setup(self, stage: str | None = None) -> None:
        if self._info is not None:
            return
        self.prepare_data()
        p = self._payload
        assert p is not None
        n_users, n_items = p["n_users"], p["n_items"]
        user, item = p["user"].numpy(), p["item"].numpy()
        tr, va, te = p["train"].numpy(), p["valid"].numpy(), p["test"].numpy()
        pop = np.bincount(item[tr], minlength=n_items)
        head = ar.item_groups(item[tr], n_items, self.head_share)
        active = ar.user_groups(user[tr], n_users, self.active_share)
        t_ptr, t_idx = _csr(user[tr], item[tr], n_users)
        v_ptr, v_idx = _csr(user[va], item[va], n_users)
        s_ptr, s_idx = _csr(user[te], item[te], n_users)
        stats = dict(p["stats"])
        stats.update(
            users=n_users, items=n_items, interactions=len(user), train=len(tr),
            valid=len(va), test=len(te), item_gini=round(gini(pop), 4),
            density=len(user) / (n_users * n_items),
        )
        self._stats = stats
        self._info = RecData(
            n_users=n_users, n_items=n_items,
            train_user=torch.from_numpy(user[tr]), train_item=torch.from_numpy(item[tr]),
            train_indptr=t_ptr, train_indices=t_idx, valid_indptr=v_ptr, valid_indices=v_idx,
            test_indptr=s_ptr, test_indices=s_idx, item_popularity=torch.from_numpy(pop),
            head_item=torch.from_numpy(head), active_user=torch.from_numpy(active),
        )

    @property
    def info(self) -> RecData:
        """The metadata a method is built from (set up on first use)."""
        if self._info is None:
            self.setup()
        assert self._info is not None
        return self._info

    def stats(self) -> Mapping[str, Any]:
        """Lines read, malformed lines and format of the raw file; users, items and
        interactions after filtering, the split's sizes, item Gini and density."""
        if self._info is None:
            self.setup()
        return dict(self._stats)

    # -- loaders ------------------------------------------------------------------------

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        d = self.info
        ds = _TrainBatches(d.train_user.numpy(), d.train_item.numpy(), d.n_items)
        sampler = _EpochBatchSampler(len(ds), self.batch_size, self.seed, *self._rank_world(),
                                     group=self.group_batches)
        return DataLoader(ds, sampler=sampler, batch_size=None)

    def _users_loader(self, indptr: torch.Tensor) -> DataLoader:
        """Users with something to predict; each rank takes a disjoint strided share."""
        rank, world = self._rank_world()
        users = torch.nonzero(indptr[1:] > indptr[:-1]).flatten()[rank::world]
        return DataLoader(users, batch_size=self.eval_batch_size, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return self._users_loader(self.info.valid_indptr)

    def test_dataloader(self) -> DataLoader:
        return self._users_loader(self.info.test_indptr)
