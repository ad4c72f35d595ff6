"""Multi-domain Amazon data for LLM sequential recommendation: writer, split, DataModule.

Real data: one directory with several categories in any format the Amazon readers know.
Without one, :func:`write_multidomain` writes several 2018-format categories whose
users and items are disjoint across domains but whose titles share a vocabulary of
attribute words beside domain-specific nouns, so knowledge can only transfer through
text. :func:`sequential_split` turns one domain into leave-one-out examples (history ->
next item) with a fixed, seeded candidate list per example, and marks cold examples
(target item never seen in training). :class:`AmazonSeqDataModule` builds the base LM
(:mod:`harness.backbones`) and serves prompts as token ids: training examples of the domains
a method's stage asks for, and candidate lists of the target domain for evaluation. Files
are read, checked (:func:`read_domain`: a DataFormatError naming the file) and split in
``prepare_data``, before any run starts; a split without examples is a UserError there too.

Generator: every item has two shared attributes and one domain noun; every user has
two favourite attributes. A sequence starts at an item drawn by popularity x taste;
each next item shares an attribute with the previous one with probability
``stickiness`` (else it is drawn by taste alone), so "the next title repeats words of the
recent titles" holds in every domain, learnable in one and usable in another.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from harness.api import DataModule, RealData, StageData, choice
from harness.backbones import language_model, load_backbone_tokenizer
from harness.cache import cached_dir, fingerprint, stable_hash
from harness.datasets import amazon_readers as ar
from harness.errors import DataFormatError, UserError

_SYLL = ["ba", "co", "di", "fu", "ga", "he", "ji", "ko", "lu", "me", "no", "pi", "ra", "su", "te",
         "vi", "wo", "xa", "yo", "zu"]


@dataclass
class MultiDomainConfig:
    """Arguments of :func:`write_multidomain`; every default is visible here."""

    domains: tuple[str, ...] = ("Beauty", "Sports", "Toys")
    n_users: int = 500  # per domain
    n_items: int = 250  # per domain
    n_attributes: int = 24  # shared across domains
    nouns_per_domain: int = 10
    mean_length: float = 12.0
    stickiness: float = 0.75
    popularity_alpha: float = 1.2
    seed: int = 0


def words(rng: np.random.Generator, n: int, syllables: int) -> list[str]:
    """``n`` distinct made-up words of ``syllables`` syllables, sorted."""
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice(_SYLL, size=syllables)))
    return sorted(out)


def write_multidomain(out_dir: str | Path, cfg: MultiDomainConfig | None = None) -> Path:
    """Write ``<Domain>_5.json.gz`` and ``meta_<Domain>.json.gz`` (2018 format) per domain."""
    cfg = cfg or MultiDomainConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    attributes = words(rng, cfg.n_attributes, 3)
    for d, domain in enumerate(cfg.domains):
        nouns = words(rng, cfg.nouns_per_domain, 2)
        item_attr = np.stack([rng.choice(cfg.n_attributes, 2, replace=False)
                              for _ in range(cfg.n_items)])
        item_noun = rng.integers(0, cfg.nouns_per_domain, cfg.n_items)
        pop = rng.pareto(cfg.popularity_alpha, cfg.n_items) + 1.0
        has = np.zeros((cfg.n_items, cfg.n_attributes), bool)
        has[np.arange(cfg.n_items)[:, None], item_attr] = True
        asins = [f"B{d}{i:08d}" for i in range(cfg.n_items)]
        with open(out / f"{domain}_5.json.gz", "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", mtime=0, fileobj=raw) as f:
            for u in range(cfg.n_users):
                taste = rng.choice(cfg.n_attributes, 2, replace=False)
                likes = has[:, taste].any(1)
                base = pop * np.where(likes, 1.0, 0.05)
                n = max(5, int(rng.poisson(cfg.mean_length)))
                seen: list[int] = []
                cur = int(rng.choice(cfg.n_items, p=base / base.sum()))
                for _ in range(n):
                    seen.append(cur)
                    w = base.copy()
                    if rng.random() < cfg.stickiness:
                        w = w * has[:, item_attr[cur]].any(1)
                    w[seen] = 0.0
                    if w.sum() == 0:
                        w = base.copy()
                        w[seen] = 0.0
                    if w.sum() == 0:
                        break
                    cur = int(rng.choice(cfg.n_items, p=w / w.sum()))
                t0 = 1_400_000_000 + int(rng.integers(0, 10**8))
                for k, i in enumerate(seen):
                    rec = {"overall": 5.0, "verified": True, "reviewerID": f"A{d}U{u:07d}",
                           "asin": asins[i], "unixReviewTime": t0 + 86400 * k,
                           "summary": "ok", "reviewText": ""}
                    f.write((json.dumps(rec) + "\n").encode())
        with open(out / f"meta_{domain}.json.gz", "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", mtime=0, fileobj=raw) as f:
            for i in range(cfg.n_items):
                a, b = (attributes[k] for k in item_attr[i])
                title = f"{a} {b} {nouns[item_noun[i]]}"
                f.write((json.dumps({"asin": asins[i], "title": title, "main_cat": domain})
                         + "\n").encode())
    return out


@dataclass
class SeqSplit:
    """Leave-one-out examples of one domain, item ids local to the domain.

    ``train`` holds each user's training sequence (all but the last two items, cold
    items removed). ``valid`` / ``test`` rows are (user, history, target, candidates,
    cold): the target is always ``candidates[0]`` in storage; shuffle at scoring time
    if order matters to a model.
    """

    domain: str
    titles: list[str]
    train: list[list[int]]
    valid: list[tuple[int, list[int], int, list[int], bool]] = field(default_factory=list)
    test: list[tuple[int, list[int], int, list[int], bool]] = field(default_factory=list)
    cold_items: set[int] = field(default_factory=set)


def read_domain(data_dir: str | Path, domain: str, k_core: int, n_candidates: int,
                dataset: str) -> tuple[Path, ar.Interactions, list[str]]:
    """One category's reviews (deduplicated, k-cored) and its items' titles, checked: a
    DataFormatError (UserError for ``n_candidates``) naming the file and what to do when the
    files are missing, malformed, too small, or hold no title. Returns (reviews, interactions,
    titles in item-code order; an item without a title gets its id)."""
    fmt, reviews, meta = ar.find_files(data_dir, domain)
    inter, _ = ar.read_interactions(reviews, fmt)
    n_read = len(inter)
    inter = ar.k_core(ar.dedupe_keep_earliest(inter), k_core)
    if len(inter) == 0:
        raise DataFormatError(
            f"dataset {dataset}: no interactions left in {reviews} after {k_core}-core filtering "
            f"(of {n_read} read): every user and item needs {k_core}; use a larger category or "
            "its complete reviews file")
    if meta is None:
        names = " or ".join(ar.meta_names(domain, fmt))
        raise DataFormatError(
            f"dataset {dataset}: LLM recommendation needs item titles, but {Path(data_dir)} has no "
            f"meta file for {domain!r} ({names}); download it beside {reviews.name} (public copy: "
            f"{ar.PUBLIC_COPIES[fmt]})")
    if n_candidates > inter.n_items:
        raise UserError(f"dataset {dataset}: {n_candidates} candidates (n_candidates) but only "
                        f"{inter.n_items} items in {reviews} after {k_core}-core filtering; use "
                        "fewer candidates or a larger category")
    titles_by_id = ar.read_titles(meta, fmt, keep=set(inter.item_ids.tolist()))
    if not titles_by_id:
        raise DataFormatError(
            f"dataset {dataset}: {meta} holds no title for any of the {inter.n_items} items of "
            f"{reviews.name}; prompts are built from titles: "
            f"download the category's complete meta file (public copy: {ar.PUBLIC_COPIES[fmt]})")
    titles = [titles_by_id.get(str(a), str(a)) for a in inter.item_ids]
    return reviews, inter, titles


def check_negatives(n_items: int, seq: list[int], n_candidates: int, user: str, where: Path,
                     dataset: str) -> None:
    if n_items - len(set(seq)) < n_candidates - 1:
        raise UserError(f"dataset {dataset}: user {user} of {where} has interacted with "
                        f"{len(set(seq))} of the {n_items} items, too many to draw "
                        f"{n_candidates - 1} negatives; use fewer candidates (n_candidates)")


def sequential_split(data_dir: str | Path, domain: str, n_candidates: int = 20,
                     cold_share: float = 0.0, k_core: int = 5, seed: int = 0) -> SeqSplit:
    """Read one domain, k-core it, and build leave-one-out examples with seeded candidates.

    ``cold_share`` of the items (seeded) are held out of training entirely: examples whose
    target is one of them are cold-start examples (``cold=True``). Cold users (a whole
    domain unseen in training) are the cross-domain setting itself: train on other domains
    and evaluate this one. Bad files are a DataFormatError (:func:`read_domain`).
    """
    reviews, inter, titles = read_domain(data_dir, domain, k_core, n_candidates, "amazon-seq")
    rng = np.random.default_rng([seed, 7])
    n_cold = int(round(cold_share * inter.n_items))
    cold = set(rng.choice(inter.n_items, n_cold, replace=False).tolist()) if n_cold else set()
    order = np.lexsort((inter.timestamp, inter.user))
    users, items = inter.user[order], inter.item[order]
    starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1, len(users)]
    split = SeqSplit(domain=domain, titles=titles, train=[], cold_items=cold)
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        u, seq = int(users[a]), items[a:b].tolist()
        check_negatives(inter.n_items, seq, n_candidates, str(inter.user_ids[u]), reviews,
                         "amazon-seq")
        split.train.append([i for i in seq[:-2] if i not in cold])
        for part, cut in ((split.valid, len(seq) - 2), (split.test, len(seq) - 1)):
            target = seq[cut]
            history = [i for i in seq[:cut] if i not in cold][-50:]
            negs = negatives(rng, inter.n_items, set(seq), n_candidates - 1)
            part.append((u, history, target, [target, *negs], target in cold))
    return split


def negatives(rng: np.random.Generator, n_items: int, banned: set[int], k: int) -> list[int]:
    """``k`` distinct items outside ``banned``, by rejection (cheap for large catalogues)."""
    if n_items - len(banned) < k:
        raise UserError(f"a user has interacted with too many items to draw {k} negatives")
    out: list[int] = []
    chosen: set[int] = set()
    while len(out) < k:
        for i in rng.integers(0, n_items, 2 * k).tolist():
            if i not in banned and i not in chosen:
                chosen.add(i)
                out.append(i)
                if len(out) == k:
                    break
    return out


# --------------------------------------------------------------------------- DataModule


@dataclass
class SeqData:
    """What an LLM recommender is built from: per-domain splits, the tokenizer, the base LM."""

    target: str
    splits: dict[str, SeqSplit]
    tokenizer: Any
    base_dir: str  # a Hugging Face causal-LM directory (pretrained here, or the user's)
    setting: str  # warm | cold
    codec: Any = None  # titles -> prompt / answer token ids (WordCodec or TextCodec)


class AmazonSeqDataModule(DataModule):
    """Multi-domain sequential data; prompts are users' histories as titles.

    Training data is what the method's stage asks for (:meth:`use_stage_data`): the
    examples of the named domains, in that order (the target alone by default), or the
    target's validation prompts and candidates without their labels (part
    ``unlabelled``). Validation and test use the target domain's examples: all of them in
    the ``warm`` setting, the cold-item ones in the ``cold`` setting (``cold_share`` > 0
    needed). ``BACKBONE=`` sets ``backbone``, a local Hugging Face model directory.
    """

    real_data = RealData()  # DATA= holds every domain; DATASET= picks a benchmark dataset label
    backbone_param = "backbone"
    shards_itself = False

    def __init__(self, data_dir: str | None = None, domains: tuple[str, ...] = ("Beauty", "Sports", "Toys"),
                 target: str = "Toys", setting: str = "warm", n_candidates: int = 20,
                 cold_share: float = 0.0, max_history: int = 10, examples_per_user: int = 3,
                 batch_size: int = 16, synthetic: dict[str, Any] | None = None,
                 pretrain: dict[str, Any] | None = None, cache_dir: str = ".cache/harness",
                 backbone: str | None = None, seed: int = 0):
        super().__init__()
        choice("setting", setting, ("warm", "cold"))
        if target not in domains:
            raise UserError(f"target domain {target!r} is not among domains {list(domains)}")
        self.data_dir, self.domains, self.target, self.setting = data_dir, tuple(domains), target, setting
        self.n_candidates, self.cold_share = n_candidates, cold_share
        self.max_history, self.examples_per_user = max_history, examples_per_user
        self.batch_size, self.cache_dir, self.seed = batch_size, Path(cache_dir), seed
        self.synthetic = MultiDomainConfig(**{"domains": tuple(domains), **(synthetic or {})})
        self.pretrain = pretrain or {}
        self.backbone = backbone
        self._info: SeqData | None = None
        self._splits: dict[str, SeqSplit] | None = None
        self._request = StageData()

    def raw_dir(self) -> Path:
        if self.data_dir is not None:
            return Path(self.data_dir).expanduser()
        key = stable_hash(asdict(self.synthetic), 12)
        return cached_dir(self.cache_dir / "synthetic" / f"amazon-multi-{key}",
                          lambda tmp: write_multidomain(tmp, self.synthetic))

    def fingerprint(self) -> str:
        files = []
        for d in self.domains:
            _, reviews, meta = ar.find_files(self.raw_dir(), d)
            files += [p for p in (reviews, meta) if p is not None]
        return fingerprint(files)

    def prepare_data(self) -> None:
        """Read and split every domain (kept for :meth:`setup`) and check that each split has
        examples: bad files and empty splits are raised here, before any run starts."""
        if self._splits is not None:
            return
        splits = {d: sequential_split(self.raw_dir(), d, self.n_candidates,
                                      self.cold_share if d == self.target else 0.0, seed=self.seed)
                  for d in self.domains}
        where = f"dataset amazon-seq ({self.raw_dir()})"
        for d, split in splits.items():
            if not any(len(seq) > 1 for seq in split.train):
                raise UserError(f"{where}: the train split of {d} has no example (no user keeps "
                                "two items for training); use more data for that domain")
        target = splits[self.target]
        for part, rows in (("valid", target.valid), ("test", target.test)):
            if self.setting == "cold" and not any(r[4] for r in rows):
                raise UserError(f"{where}: the {part} split of {self.target} has no cold example "
                                f"(setting cold, cold_share {self.cold_share}); raise cold_share "
                                "(e.g. 0.3) or use setting warm")
        self._splits = splits

    def setup(self, stage: str | None = None) -> None:
        if self._info is not None:
            return
        tok = load_backbone_tokenizer(self.backbone) if self.backbone else None  # fail early
        self.prepare_data()
        splits = self._splits
        assert splits is not None
        corpus = sorted({t for s in splits.values() for t in s.titles})  # catalogue text only
        tok, base_dir, codec = language_model(tok, self.backbone, corpus, self.pretrain,
                                              self.cache_dir)
        self._info = SeqData(self.target, splits, tok, base_dir, self.setting, codec)

    @property
    def info(self) -> SeqData:
        if self._info is None:
            self.setup()
        assert self._info is not None
        return self._info

    # -- examples -> token ids ------------------------------------------------------------

    def encode_prompt(self, split: SeqSplit, history: list[int]) -> list[int]:
        return self.info.codec.prompt([split.titles[i] for i in history[-self.max_history:]])

    def encode_title(self, split: SeqSplit, item: int) -> list[int]:
        return self.info.codec.answer(split.titles[item])

    def _train_examples(self, domains: list[str]) -> list[tuple[list[int], list[int]]]:
        rng = np.random.default_rng(self.seed)
        out = []
        for d in domains:
            split = self.info.splits[d]
            for seq in split.train:
                ks = list(range(1, len(seq)))[-self.examples_per_user:]
                out += [(self.encode_prompt(split, seq[:k]), self.encode_title(split, seq[k]))
                        for k in ks]
        rng.shuffle(out)
        return out

    def use_stage_data(self, request: StageData) -> None:
        """Part ``train``: the examples of ``domains`` (in that order; ``None``: the target
        alone). Part ``unlabelled``: the target's validation prompts and candidates of the
        evaluated setting, without labels (e.g. MoLoRec's mixture stage)."""
        if request.options:
            raise UserError(f"dataset amazon-seq takes no stage options, got {sorted(request.options)}")
        if request.part == "train":
            unknown = [d for d in request.domains or () if d not in self.domains]
            if unknown:
                raise UserError(f"the method asks for training domains {unknown} that the dataset "
                                f"does not have; its domains are {list(self.domains)}")
        elif request.part == "unlabelled":
            if request.domains not in (None, (self.target,)):
                raise UserError(f"unlabelled prompts come from the target domain {self.target!r} "
                                f"alone, not {list(request.domains)}")
        else:
            raise UserError(f"dataset amazon-seq serves the parts 'train' and 'unlabelled', "
                            f"not {request.part!r}")
        self._request = request

    def train_dataloader(self) -> DataLoader:
        """The data of the last :meth:`use_stage_data` request (default: the target's examples)."""
        request = self._request
        if request.part == "unlabelled":
            rows = self._eval_rows(self.info.splits[self.target].valid)  # the evaluated setting's
            return DataLoader(rows, batch_size=8, shuffle=True, collate_fn=list)
        domains = list(request.domains) if request.domains is not None else [self.target]
        return DataLoader(self._train_examples(domains), batch_size=self.batch_size,
                          shuffle=True, collate_fn=collate_lm)

    def _eval_rows(self, rows: list) -> list[tuple[list[int], list[list[int]]]]:
        """(prompt, candidate titles) of the setting's examples; the target is candidate 0."""
        split = self.info.splits[self.target]
        if self.setting == "cold":
            rows = [r for r in rows if r[4]]
        if not rows:
            raise UserError(f"no {self.setting} examples in the {self.target} split"
                            + (" (the cold setting needs cold_share > 0)" if self.setting == "cold" else ""))
        return [(self.encode_prompt(split, h), [self.encode_title(split, c) for c in cands])
                for _, h, _, cands, _ in rows]

    def _eval(self, rows: list) -> DataLoader:
        return DataLoader(self._eval_rows(rows), batch_size=1, collate_fn=lambda b: b[0])

    def val_dataloader(self) -> DataLoader:
        return self._eval(self.info.splits[self.target].valid)

    def test_dataloader(self) -> DataLoader:
        return self._eval(self.info.splits[self.target].test)


def collate_lm(batch: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    """Right-padded prompt + answer rows, and where the answers are.

    ``answer_rows`` / ``answer_cols`` are the (row, position) pairs whose next token is an
    answer token and ``targets`` those tokens: the loss
    (:func:`harness.methods.llmrec.lm_loss`) sees only the answers, and the LM head runs on
    those positions only.
    """
    n = max(len(p) + len(a) for p, a in batch)
    ids = torch.zeros(len(batch), n, dtype=torch.long)
    mask = torch.zeros(len(batch), n, dtype=torch.long)
    rows: list[int] = []
    cols: list[int] = []
    targets: list[int] = []
    for j, (p, a) in enumerate(batch):
        if not p or not a:
            raise ValueError("every training example needs a prompt and an answer")
        ids[j, : len(p) + len(a)] = torch.tensor(p + a)
        mask[j, : len(p) + len(a)] = 1
        rows += [j] * len(a)
        cols += range(len(p) - 1, len(p) + len(a) - 1)
        targets += a
    return {"input_ids": ids, "attention_mask": mask, "answer_rows": torch.tensor(rows),
            "answer_cols": torch.tensor(cols), "targets": torch.tensor(targets),
            "n_examples": torch.tensor(len(batch))}
