"""Backbones built from a config or loaded from a local directory; nothing downloaded.

Two kinds of causal language model serve as the base of a method (the LLM recommenders):

* a **small LM built here**: a word-level tokenizer (:func:`train_tokenizer`) and a
  Llama-shaped model (:class:`SmallLMConfig`) pretrained on a dataset's catalogue text
  (:func:`pretrain_small_lm`), cached under ``<cache_dir>/lm/<hash>/``; its prompts are
  encoded by :class:`WordCodec`;
* a **user's model directory** (a Hugging Face causal LM saved with ``save_pretrained``):
  its tokenizer (:func:`load_backbone_tokenizer`) and weights (:func:`load_causal_lm`); its
  prompts are instruction text encoded by :class:`TextCodec`.

:func:`language_model` picks one for a dataset. Datasets build the backbone (its directory
is part of their ``info``); methods load it. ``transformers`` and ``tokenizers`` are imported
inside the functions that need them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from harness.cache import cached_dir, is_complete, stable_hash
from harness.errors import UserError

SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]", "[SEP]")


# --------------------------------------------------------------------------- small backbone


def train_tokenizer(texts: list[str]) -> Any:
    """A lower-cased word-level tokenizer over the given texts (``tokenizers``), ids 0-4 special."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=list(SPECIALS)))
    return tok


@dataclass
class SmallLMConfig:
    """A Llama-shaped causal LM small enough for CPU, and its language-model pretraining."""

    hidden: int = 128
    layers: int = 2
    heads: int = 4
    intermediate: int = 256
    block: int = 64  # tokens per packed pretraining sequence
    steps: int = 100  # optimiser steps over random batches of blocks
    lr: float = 2e-3
    batch: int = 32
    seed: int = 0


def pretrain_small_lm(corpus: list[str], cfg: SmallLMConfig | None = None,
                      cache_dir: str | Path = ".cache/harness") -> tuple[Any, Any, Path]:
    """Train a tokenizer and pretrain a small LM on ``corpus`` (plain text, no prompts).

    Plays the part a real LLM's pretraining plays for LoRA. Cached under
    ``<cache_dir>/lm/<hash of corpus and cfg>/`` (``save_pretrained`` + ``tokenizer.json``),
    so every run and method with the same arguments adapts the same base model. Returns
    (model, tokenizer, directory).
    """
    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM

    cfg = cfg or SmallLMConfig()
    out = Path(cache_dir) / "lm" / stable_hash([sorted(corpus), asdict(cfg)], 16)
    if is_complete(out):
        return (LlamaForCausalLM.from_pretrained(out).eval(),
                Tokenizer.from_file(str(out / "tokenizer.json")), out)
    # pretraining draws from its own seed and leaves the caller's random stream as it was, so
    # a run's result does not depend on whether the model was already cached
    with torch.random.fork_rng(devices=[]):
        model, tok = _pretrain(corpus, cfg)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tok.save(str(tmp / "tokenizer.json"))

    cached_dir(out, write)
    return model, tok, out


def _pretrain(corpus: list[str], cfg: SmallLMConfig) -> tuple[Any, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    tok = train_tokenizer(corpus)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
        max_position_embeddings=1024, pad_token_id=0, bos_token_id=2, eos_token_id=3))
    stream: list[int] = []
    for text in corpus:  # [BOS] text [EOS], packed into fixed blocks
        stream += [2, *tok.encode(text).ids, 3]
    n = len(stream) // cfg.block
    blocks = torch.tensor(stream[: n * cfg.block]).view(n, cfg.block)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for _ in range(cfg.steps):
        idx = torch.randint(n, (min(cfg.batch, n),), generator=g)
        loss = model(input_ids=blocks[idx], labels=blocks[idx]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval(), tok


# --------------------------------------------------------------------------- prompts as token ids


class WordCodec:
    """Prompts for the small word-level backbone: ``[BOS] t_1 [SEP] ... t_n [SEP]``; an
    answer is ``title [EOS]``."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def prompt(self, titles: list[str]) -> list[int]:
        ids = [2]
        for t in titles:
            ids += self.tokenizer.encode(t).ids + [4]
        return ids

    def answer(self, title: str) -> list[int]:
        return self.tokenizer.encode(title).ids + [3]


class TextCodec:
    """Prompts for a real LLM (a Hugging Face tokenizer): the history as quoted titles in an
    instruction, the answer the quoted next title and the end-of-sequence token."""

    INSTRUCTION = ("Given the items a user bought, in order, recommend the next item.\n"
                   "History:\n{history}\nNext item:")

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        eos = tokenizer.eos_token_id
        self.eos = [eos] if eos is not None else []

    def prompt(self, titles: list[str]) -> list[int]:
        text = self.INSTRUCTION.format(history="\n".join(f'"{t}"' for t in titles))
        return self.tokenizer(text, add_special_tokens=True)["input_ids"]

    def answer(self, title: str) -> list[int]:
        return self.tokenizer(f' "{title}"', add_special_tokens=False)["input_ids"] + self.eos


# --------------------------------------------------------------------------- a user's model directory


def load_backbone_tokenizer(path: str | Path) -> Any:
    """The tokenizer of a local Hugging Face causal-LM directory, with clear errors."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise UserError(f"backbone directory {path} does not exist; give a local Hugging Face "
                        "causal-LM directory, e.g. BACKBONE=/models/Qwen2-7B-Instruct (make) or "
                        "--backbone (harness). Nothing is downloaded at run time.")
    if not (path / "config.json").is_file():
        raise UserError(f"backbone directory {path} has no config.json: it is not a Hugging Face "
                        "model directory (save one with save_pretrained or huggingface-cli download)")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # missing tokenizer files, unknown tokenizer class
        raise UserError(f"cannot load a tokenizer from {path} ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200]})") from exc


def language_model(tokenizer: Any, backbone: str | None, corpus: list[str],
                   pretrain: dict[str, Any], cache_dir: str | Path) -> tuple[Any, str, Any]:
    """(tokenizer, model directory, codec): the user's LLM when ``backbone`` is given (its
    tokenizer already loaded, text prompts), else the small LM pretrained on ``corpus``."""
    if backbone:
        return tokenizer, str(Path(backbone).expanduser()), TextCodec(tokenizer)
    _, tok, path = pretrain_small_lm(corpus, SmallLMConfig(**pretrain), cache_dir)
    return tok, str(path), WordCodec(tok)


def load_causal_lm(path: str | Path, dtype: str | None = None) -> torch.nn.Module:
    """``AutoModelForCausalLM`` from a local directory, in ``dtype`` (e.g. ``bfloat16``) if given."""
    import transformers
    from transformers import AutoModelForCausalLM

    if dtype is None:
        return AutoModelForCausalLM.from_pretrained(path)
    kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    return AutoModelForCausalLM.from_pretrained(path, **{kw: getattr(torch, dtype)})
