"""Evolving Amazon data for EvoRec: a base period, then an update period; writer, split,
DataModule.

Real data: one category in any format the Amazon readers know; interactions before
``update_start`` (a unix time, or the ``base_share`` quantile of all timestamps) form the
base period, the rest one update period. Without a directory, :func:`write_evolving`
writes a 2018-format category with *preference drift*: every user has two favourite
attributes in the base period; active users (``active_share``) get new favourites for
the update period (``drift`` of the two replaced) and interact again, inactive users do
not. Titles are "<attribute> <attribute> <noun>", so preferences are visible in text.

Split (:func:`evolving_split`): an **active** user has at least 3 update-period items;
the last is their test target, the one before it validation, the rest update training
data. An **inactive** user has no update-period items; the last two base items are their
test and validation targets. Users with 1-2 update items are left out (too few to
evaluate). Base training data: every active user's whole base sequence and every
inactive user's base sequence without its last two items. Each example has a fixed,
seeded candidate list (target first in storage).

:class:`AmazonEvoDataModule` builds the base LM (:mod:`harness.backbones`) and serves the
training data a method's stage asks for (base period, update period, or both) as prompts and
answers in token ids, and validation / test candidate lists tagged with the user's group.
The category is read, checked and split in ``prepare_data``, before any run starts: bad
files, and a period without active or without inactive users, are refused there.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from harness.api import DataModule, RealData, StageData
from harness.backbones import language_model, load_backbone_tokenizer
from harness.cache import cached_dir, fingerprint, stable_hash
from harness.datasets import amazon_readers as ar
from harness.datasets.amazon_seq import check_negatives, collate_lm, negatives, read_domain, words
from harness.errors import UserError

UPDATE_START = 1_500_000_000  # the synthetic writer's period boundary (unix seconds)


@dataclass
class EvoConfig:
    """Arguments of :func:`write_evolving`; every default is visible here."""

    n_users: int = 400
    n_items: int = 200
    n_attributes: int = 16
    n_nouns: int = 8
    base_length: float = 10.0  # mean base-period interactions per user
    update_length: float = 6.0  # mean update-period interactions per active user
    active_share: float = 0.5
    drift: int = 1  # favourite attributes an active user replaces (0, 1 or 2)
    stickiness: float = 0.7
    popularity_alpha: float = 1.2
    seed: int = 0


@dataclass
class EvoWorld:
    """The generator's ground truth (tests use it; the files hold only real-format data)."""

    titles: list[str]
    item_attr: np.ndarray  # [n_items, 2]
    base: list[list[int]]
    update: list[list[int]]
    old_taste: list[tuple[int, int]]
    new_taste: list[tuple[int, int]]

    def stale(self, u: int) -> set[int]:
        """Base items of user ``u`` sharing no attribute with their update-period taste."""
        new = set(self.new_taste[u])
        return {i for i in self.base[u] if not new & set(self.item_attr[i].tolist())}


def generate(cfg: EvoConfig) -> EvoWorld:
    rng = np.random.default_rng(cfg.seed)
    attributes = words(rng, cfg.n_attributes, 3)
    nouns = words(rng, cfg.n_nouns, 2)
    item_attr = np.stack([rng.choice(cfg.n_attributes, 2, replace=False) for _ in range(cfg.n_items)])
    item_noun = rng.integers(0, cfg.n_nouns, cfg.n_items)
    titles = [f"{attributes[a]} {attributes[b]} {nouns[n]}" for (a, b), n in zip(item_attr, item_noun,
                                                                               strict=True)]
    pop = rng.pareto(cfg.popularity_alpha, cfg.n_items) + 1.0
    has = np.zeros((cfg.n_items, cfg.n_attributes), bool)
    has[np.arange(cfg.n_items)[:, None], item_attr] = True

    def walk(taste: np.ndarray, n: int, seen: list[int]) -> list[int]:
        base = pop * np.where(has[:, taste].any(1), 1.0, 0.03)
        out: list[int] = []
        prev = None
        for _ in range(n):
            w = base.copy()
            if prev is not None and rng.random() < cfg.stickiness:
                w = w * has[:, item_attr[prev]].any(1)
            w[seen + out] = 0.0
            if w.sum() == 0:
                w = base.copy()
                w[seen + out] = 0.0
            if w.sum() == 0:
                break
            prev = int(rng.choice(cfg.n_items, p=w / w.sum()))
            out.append(prev)
        return out

    world = EvoWorld(titles, item_attr, [], [], [], [])
    for _ in range(cfg.n_users):
        taste = rng.choice(cfg.n_attributes, 2, replace=False)
        base = walk(taste, max(5, int(rng.poisson(cfg.base_length))), [])
        new_taste = taste.copy()
        update: list[int] = []
        if rng.random() < cfg.active_share:
            others = np.setdiff1d(np.arange(cfg.n_attributes), taste)
            new_taste[: cfg.drift] = rng.choice(others, cfg.drift, replace=False)
            update = walk(new_taste, max(3, int(rng.poisson(cfg.update_length))), base)
        world.base.append(base)
        world.update.append(update)
        world.old_taste.append(tuple(int(t) for t in taste))
        world.new_taste.append(tuple(int(t) for t in new_taste))
    return world


def write_evolving(out_dir: str | Path, domain: str, cfg: EvoConfig | None = None) -> Path:
    """Write ``<domain>_5.json.gz`` and ``meta_<domain>.json.gz`` (2018 format): base-period
    reviews before :data:`UPDATE_START`, update-period reviews after it."""
    cfg = cfg or EvoConfig()
    world = generate(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([cfg.seed, 1])
    asins = [f"E{i:09d}" for i in range(len(world.titles))]
    with open(out / f"{domain}_5.json.gz", "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", mtime=0, fileobj=raw) as f:
        for u, (base, update) in enumerate(zip(world.base, world.update, strict=True)):
            t_base = UPDATE_START - 86400 * (len(base) + int(rng.integers(1, 300)))
            t_new = UPDATE_START + 86400 * int(rng.integers(1, 60))
            times = [t_base + 86400 * k for k in range(len(base))]
            times += [t_new + 86400 * k for k in range(len(update))]
            for i, t in zip(base + update, times, strict=True):
                rec = {"overall": 5.0, "verified": True, "reviewerID": f"EU{u:07d}", "asin": asins[i],
                       "unixReviewTime": t, "summary": "ok", "reviewText": ""}
                f.write((json.dumps(rec) + "\n").encode())
    with open(out / f"meta_{domain}.json.gz", "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", mtime=0, fileobj=raw) as f:
        for i, title in enumerate(world.titles):
            f.write((json.dumps({"asin": asins[i], "title": title, "main_cat": domain}) + "\n").encode())
    return out


Example = tuple[int, list[int], int, list[int], str]  # user, history, target, candidates, group


@dataclass
class EvoSplit:
    """Item ids local to the category. ``base`` / ``update`` map a user to their training
    sequence of that period (update: active users only, without their val/test items)."""

    titles: list[str]
    base: dict[int, list[int]]
    update: dict[int, list[int]]
    valid: list[Example] = field(default_factory=list)
    test: list[Example] = field(default_factory=list)
    user_ids: list[str] = field(default_factory=list)

    @property
    def active(self) -> list[int]:
        return sorted(self.update)


def evolving_split(data_dir: str | Path, domain: str, n_candidates: int = 20,
                   update_start: int | None = None, base_share: float = 0.8, k_core: int = 5,
                   seed: int = 0) -> EvoSplit:
    """Read one category and split it into a base and an update period (module docstring).
    Bad files are a DataFormatError (:func:`amazon_seq.read_domain`); a period without active
    or without inactive users (nothing to update on, or one group's metrics left empty) a
    UserError naming ``update_start`` / ``base_share``."""
    reviews, inter, titles = read_domain(data_dir, domain, k_core, n_candidates, "amazon-evo")
    if update_start is None and not 0.0 < base_share < 1.0:
        raise UserError(f"base_share must be a fraction in (0, 1), got {base_share!r}")
    cut = update_start if update_start is not None else int(np.quantile(inter.timestamp, base_share))
    rng = np.random.default_rng([seed, 11])
    order = np.lexsort((inter.timestamp, inter.user))
    users, items, times = inter.user[order], inter.item[order], inter.timestamp[order]
    starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1, len(users)]
    split = EvoSplit(titles=titles, base={}, update={}, user_ids=[str(x) for x in inter.user_ids])
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        u, seq, ts = int(users[a]), items[a:b].tolist(), times[a:b]
        n_base = int((ts < cut).sum())
        base, new = seq[:n_base], seq[n_base:]
        if len(new) >= 3:
            split.base[u], split.update[u] = base, new[:-2]
            rows = ((split.valid, base + new[:-2], new[-2]), (split.test, base + new[:-1], new[-1]))
            group = "active"
        elif not new and len(base) >= 3:
            split.base[u] = base[:-2]
            rows = ((split.valid, base[:-2], base[-2]), (split.test, base[:-1], base[-1]))
            group = "inactive"
        else:
            continue
        check_negatives(inter.n_items, seq, n_candidates, str(inter.user_ids[u]), reviews,
                        "amazon-evo")
        for part, history, target in rows:
            negs = negatives(rng, inter.n_items, set(seq), n_candidates - 1)
            part.append((u, history[-50:], target, [target, *negs], group))
    inactive = len(split.base) - len(split.update)
    for group, n, what in (("active", len(split.update), "3+ interactions from"),
                           ("inactive", inactive, "none from, and 3+ before,")):
        if n == 0:
            raise UserError(
                f"dataset amazon-evo ({reviews}): no {group} user ({what} the update start {cut}, "
                f"{_date(cut)}), so the valid and test splits have no {group} example; set "
                "update_start (unix seconds) or base_share to split the period elsewhere")
    return split


def _date(t: int) -> str:
    return str(np.datetime64(int(t), "s"))[:10]


@dataclass
class EvoData:
    """What an evolving LLM recommender is built from."""

    split: EvoSplit
    tokenizer: Any
    base_dir: str
    codec: Any
    target: str
    splits: dict[str, Any] = field(default_factory=dict)  # LoRARec's domain check: one domain
    max_history: int = 10

    def prompt(self, history: list[int]) -> list[int]:
        """Token ids of the prompt for a history (the last ``max_history`` titles)."""
        return self.codec.prompt([self.split.titles[i] for i in history[-self.max_history:]])


class AmazonEvoDataModule(DataModule):
    """Base-period and update-period training data, active/inactive evaluation.

    A method's stage asks for its training data (:meth:`use_stage_data`) by part:
    ``base`` (every user's base sequence; also the default, ``train``), ``update`` (active
    users' new items, each predicted from the user's history so far; the option ``keep``
    maps a user to the past items their histories keep, e.g. EvoRec's Forget), or ``all``
    (both: re-training). Validation and test rows carry their group. ``DATASET=`` names the
    category read from ``DATA=``; ``BACKBONE=`` sets ``backbone``.
    """

    real_data = RealData(category_param="category")
    backbone_param = "backbone"
    shards_itself = False
    PARTS = ("train", "base", "update", "all")

    def __init__(self, data_dir: str | None = None, category: str = "Toys", n_candidates: int = 20,
                 update_start: int | None = None, base_share: float = 0.8, max_history: int = 10,
                 examples_per_user: int = 3, batch_size: int = 16,
                 synthetic: dict[str, Any] | None = None, pretrain: dict[str, Any] | None = None,
                 cache_dir: str = ".cache/harness", backbone: str | None = None, seed: int = 0):
        super().__init__()
        self.data_dir, self.category, self.n_candidates = data_dir, category, n_candidates
        self.update_start = update_start if (update_start is not None or data_dir) else UPDATE_START
        self.base_share, self.max_history = base_share, max_history
        self.examples_per_user, self.batch_size = examples_per_user, batch_size
        self.synthetic = EvoConfig(**(synthetic or {}))
        self.pretrain, self.cache_dir = pretrain or {}, Path(cache_dir)
        self.backbone, self.seed = backbone, seed
        self._info: EvoData | None = None
        self._split: EvoSplit | None = None
        self._request = StageData()

    def raw_dir(self) -> Path:
        if self.data_dir is not None:
            return Path(self.data_dir).expanduser()
        key = stable_hash([self.category, asdict(self.synthetic)], 12)
        return cached_dir(self.cache_dir / "synthetic" / f"amazon-evo-{key}",
                          lambda tmp: write_evolving(tmp, self.category, self.synthetic))

    def fingerprint(self) -> str:
        _, reviews, meta = ar.find_files(self.raw_dir(), self.category)
        return fingerprint([p for p in (reviews, meta) if p is not None])

    def prepare_data(self) -> None:
        """Read and split the category (kept for :meth:`setup`): bad files and empty splits
        are raised here, before any run starts."""
        if self._split is None:
            self._split = evolving_split(self.raw_dir(), self.category, self.n_candidates,
                                         self.update_start, self.base_share, seed=self.seed)
            if not any(len(seq) > 1 for seq in self._split.base.values()):
                raise UserError(f"dataset amazon-evo ({self.raw_dir()}): the base period of "
                                f"{self.category} has no training example; set update_start or "
                                "base_share later")

    def setup(self, stage: str | None = None) -> None:
        if self._info is not None:
            return
        tok = load_backbone_tokenizer(self.backbone) if self.backbone else None  # fail early
        self.prepare_data()
        split = self._split
        assert split is not None
        tok, base_dir, codec = language_model(tok, self.backbone, sorted(set(split.titles)),
                                              self.pretrain, self.cache_dir)
        self._info = EvoData(split, tok, base_dir, codec, self.category, {self.category: split},
                            self.max_history)

    @property
    def info(self) -> EvoData:
        if self._info is None:
            self.setup()
        assert self._info is not None
        return self._info

    def stats(self) -> Mapping[str, int]:
        """Active users, inactive users and items."""
        s = self.info.split
        return {"users_active": len(s.update), "users_inactive": len(s.base) - len(s.update),
                "items": len(s.titles)}

    # -- examples -----------------------------------------------------------------------

    def encode_prompt(self, history: list[int]) -> list[int]:
        return self.info.prompt(history)

    def encode_title(self, item: int) -> list[int]:
        return self.info.codec.answer(self.info.split.titles[item])

    def base_examples(self) -> list[tuple[list[int], int]]:
        """(history, target) for the last ``examples_per_user`` positions of each base sequence."""
        out = []
        for seq in self.info.split.base.values():
            out += [(seq[:k], seq[k]) for k in range(1, len(seq))][-self.examples_per_user:]
        return out

    def update_examples(self, keep: dict[int, list[int]] | None = None) -> list[tuple[list[int], int]]:
        """(history, target) for every update-period training item of every active user.
        ``keep`` maps a user to the base items their histories keep (Forget); default all."""
        s = self.info.split
        out = []
        for u, new in s.update.items():
            past = keep[u] if keep is not None and u in keep else s.base[u]
            out += [(past + new[:k], new[k]) for k in range(len(new))]
        return out

    def use_stage_data(self, request: StageData) -> None:
        """Serve part ``base`` / ``train``, ``update`` (option ``keep``) or ``all`` (class
        docstring) until the next request."""
        if request.part not in self.PARTS:
            raise UserError(f"dataset amazon-evo serves the parts {', '.join(self.PARTS)}, "
                            f"not {request.part!r}")
        if request.domains not in (None, (self.category,)):
            raise UserError(f"dataset amazon-evo has one domain, {self.category!r}; the method asks "
                            f"for {list(request.domains)}")
        extra = set(request.options) - ({"keep"} if request.part == "update" else set())
        if extra:
            raise UserError(f"part {request.part!r} of amazon-evo takes no options {sorted(extra)} "
                            "(only part 'update' takes 'keep')")
        self._request = request

    def stage_examples(self) -> list[tuple[list[int], int]]:
        """(history, target) pairs of the last request (default: the base period)."""
        part = self._request.part
        if part == "update":
            return self.update_examples(self._request.options.get("keep"))
        if part == "all":
            return self.base_examples() + self.update_examples()
        return self.base_examples()

    def train_dataloader(self) -> DataLoader:
        pairs = self.stage_examples()
        rows = [(self.encode_prompt(h), self.encode_title(t)) for h, t in pairs]
        rng = np.random.default_rng(self.seed)
        rng.shuffle(rows)
        return DataLoader(rows, batch_size=self.batch_size, shuffle=True, collate_fn=collate_lm)

    def _eval(self, rows: list[Example]) -> DataLoader:
        items = [(self.encode_prompt(h), [self.encode_title(c) for c in cands], group)
                 for _, h, _, cands, group in rows]
        return DataLoader(items, batch_size=1, collate_fn=lambda b: b[0])

    def val_dataloader(self) -> DataLoader:
        return self._eval(self.info.split.valid)

    def test_dataloader(self) -> DataLoader:
        return self._eval(self.info.split.test)
