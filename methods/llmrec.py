"""Shared core of the LLM recommenders (WeaveRec, MoLoRec, EvoRec): candidate scoring.

A candidate's score is the log-likelihood of its title tokens given the prompt (the
user's history as titles): sum_t log p(title_t | prompt, title_<t). Scoring always
yields a valid ranking, with no parsing of generated text.

With ``share_prefix`` the prompt is encoded once and its key/value cache is repeated
for the C candidates, which are then run as one padded batch of their own tokens only;
without it every candidate re-encodes the whole prompt. Both give the same scores
(``tests/test_llmrec_core.py``); sharing costs one prompt pass instead of C.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from torch import Tensor


def _cache_kwarg(model: torch.nn.Module) -> str:
    """``cache`` in transformers >= 5.2x, ``past_key_values`` before (a peft wrapper's
    ``forward`` takes ``**kwargs``: look at the model underneath)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _pad(seqs: list[list[int]], pad: int, device: torch.device) -> tuple[Tensor, Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad, dtype=torch.long, device=device)
    mask = torch.zeros((len(seqs), n), dtype=torch.long, device=device)
    for j, s in enumerate(seqs):
        ids[j, : len(s)] = torch.tensor(s, dtype=torch.long, device=device)
        mask[j, : len(s)] = 1
    return ids, mask


def score_candidates(model: torch.nn.Module, prompt: list[int], candidates: list[list[int]],
                     share_prefix: bool = True, pad_id: int = 0, grad: bool = False) -> Tensor:
    """Log-likelihood of each candidate token sequence after ``prompt`` ([C] float32).

    ``grad=True`` keeps the graph (MoLoRec learns its mixture through these scores).
    """
    with torch.set_grad_enabled(grad):
        return _score(model, prompt, candidates, share_prefix, pad_id)


def _score(model: torch.nn.Module, prompt: list[int], candidates: list[list[int]],
           share_prefix: bool, pad_id: int) -> Tensor:
    """``model`` is a Hugging Face causal LM (anything returning ``.logits`` and taking a
    key/value cache). Candidates must be non-empty."""
    device = next(model.parameters()).device
    c = len(candidates)
    cand, cmask = _pad(candidates, pad_id, device)
    p = len(prompt)
    if share_prefix:
        prompt_ids = torch.tensor([prompt], dtype=torch.long, device=device)
        kw = _cache_kwarg(model)
        out = model(input_ids=prompt_ids, use_cache=True)
        cache = out[kw] if kw in out else out["past_key_values"]
        cache.batch_repeat_interleave(c)
        first = torch.log_softmax(out.logits[:, -1].float(), -1).expand(c, -1)  # predicts token 0
        attn = torch.cat([torch.ones(c, p, dtype=torch.long, device=device), cmask], 1)
        pos = torch.arange(p, p + cand.shape[1], device=device).expand(c, -1)
        logits = model(input_ids=cand, attention_mask=attn, position_ids=pos,
                       use_cache=False, **{kw: cache}).logits.float()
        step = torch.log_softmax(logits[:, :-1], -1)  # position t predicts token t + 1
        logp = torch.cat([first.unsqueeze(1), step], 1)
    else:
        full = [prompt + s for s in candidates]
        ids, mask = _pad(full, pad_id, device)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
        logp = torch.log_softmax(logits[:, p - 1 : p - 1 + cand.shape[1]], -1)
    tok = logp.gather(2, cand.unsqueeze(-1)).squeeze(-1)
    return (tok * cmask).sum(1)


# --------------------------------------------------------------------------- small backbone

SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]", "[SEP]")


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
    key = hashlib.sha256(json.dumps([sorted(corpus), asdict(cfg)]).encode()).hexdigest()[:16]
    out = Path(cache_dir) / "lm" / key
    if (out / "COMPLETE").exists():
        return (LlamaForCausalLM.from_pretrained(out).eval(),
                Tokenizer.from_file(str(out / "tokenizer.json")), out)
    # pretraining draws from its own seed and leaves the caller's random stream as it was, so
    # a run's result does not depend on whether the model was already cached
    with torch.random.fork_rng(devices=[]):
        return _pretrain(corpus, cfg, out, key)


def _pretrain(corpus: list[str], cfg: SmallLMConfig, out: Path, key: str) -> tuple[Any, Any, Path]:
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
    model.eval()
    tmp = out.with_name(f".{key}.{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save(str(tmp / "tokenizer.json"))
    (tmp / "COMPLETE").touch()
    from harness.datasets.amazon import _publish

    _publish(tmp, out)
    return model, tok, out


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


def load_backbone_tokenizer(path: str | Path) -> Any:
    """The tokenizer of a local Hugging Face causal-LM directory, with clear errors."""
    from harness.errors import UserError

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


# --------------------------------------------------------------------------- LoRA recommender


class LoRARec(L.LightningModule):
    """A LoRA on the base LM, trained to generate the next item's title after the prompt
    (TALLRec-style; the row ``target-lora`` / ``specific-lora``), scored on candidates.

    ``domains`` names the training domains (default: the target only; ``"all"``: every
    domain of the dataset, the joint baseline). Validation and
    test score every candidate by title log-likelihood (:func:`score_candidates`).
    """

    metrics = {"hr_1": "max", "hr_3": "max", "hr_5": "max", "ndcg_3": "max", "ndcg_5": "max",
               "mrr": "max"}
    search_space = {"lr": ("log", 1e-4, 1e-2), "lora_r": ("cat", [4, 8, 16])}

    def __init__(self, data: Any, lora_r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.05,
                 lr: float = 2e-3, domains: tuple[str, ...] | str | None = None,
                 target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj"),
                 dtype: str | None = None):
        super().__init__()
        from peft import LoraConfig, get_peft_model

        self.save_hyperparameters(ignore=["data"])
        if domains == "all":  # every domain of the dataset (joint training)
            domains = tuple(data.splits)
        unknown = set(domains or ()) - set(data.splits)
        if unknown:
            raise ValueError(f"unknown training domains {sorted(unknown)}; the data has "
                             f"{sorted(data.splits)} (or use domains: all)")
        self.domains = list(domains) if domains else [data.target]
        base = load_causal_lm(data.base_dir, dtype)  # LoRA weights stay float32 (peft's default)
        self.model = get_peft_model(base, LoraConfig(
            r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
            target_modules=list(target_modules)))
        self._vals: list[dict[str, Tensor]] = []
        self.strict_loading = False  # checkpoints hold the adapters only (on_save_checkpoint)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the adapters (and the method's own parameters), not the frozen base LM: it
        is the backbone directory already, and 15 GB per checkpoint for a 7B model."""
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if "lora_" in k or not k.startswith("model.")}

    def train_domains(self) -> list[str]:
        return self.domains

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.model(**batch).loss  # answer tokens only (prompt labelled -100)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss

    def _score(self, example: tuple[list[int], list[list[int]]]) -> None:
        from harness.metrics.candidates import candidate_metrics

        prompt, cands = example
        scores = score_candidates(self.model, prompt, cands).unsqueeze(0)
        self._vals.append(candidate_metrics(scores, torch.zeros(1, dtype=torch.long,
                                                                device=scores.device)))

    def _log_eval(self, stage: str) -> None:
        keys = self._vals[0].keys() if self._vals else []
        self.log_dict({f"{stage}/{k}": torch.cat([v[k] for v in self._vals]).mean() for k in keys})
        self._vals = []

    def validation_step(self, example: Any, batch_idx: int) -> None:
        self._score(example)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def test_step(self, example: Any, batch_idx: int) -> None:
        self._score(example)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW([p for p in self.parameters() if p.requires_grad],
                                 lr=self.hparams.lr)
