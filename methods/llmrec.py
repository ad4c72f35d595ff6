"""Shared core of the LLM recommenders (WeaveRec, MoLoRec, EvoRec): candidate scoring and
the LoRA recommender they all extend (:class:`LoRARec`, row ``target-lora``).

A candidate's score is the log-likelihood of its title tokens given the prompt (the
user's history as titles): sum_t log p(title_t | prompt, title_<t). Scoring always
yields a valid ranking, with no parsing of generated text.

With ``share_prefix`` the prompt is encoded once and its key/value cache is repeated
for the C candidates, which are then run as one padded batch of their own tokens only;
without it every candidate re-encodes the whole prompt. Both give the same scores
(``tests/test_llmrec_core.py``); sharing costs one prompt pass instead of C.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor

from harness.api import Method, StageData
from harness.backbones import load_causal_lm
from harness.errors import UserError


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


# --------------------------------------------------------------------------- LoRA recommender


class LoRARec(Method):
    """A LoRA on the base LM, trained to generate the next item's title after the prompt
    (TALLRec-style; the row ``target-lora`` / ``specific-lora``), scored on candidates.

    ``domains`` names the training domains (default: the target only; ``"all"``: every
    domain of the dataset, the joint baseline). Validation and
    test score every candidate by title log-likelihood (:func:`score_candidates`).
    """

    metrics = {"hr_1": "max", "hr_3": "max", "hr_5": "max", "ndcg_3": "max", "ndcg_5": "max",
               "mrr": "max"}
    search_space = {"lr": ("log", 1e-4, 1e-2), "lora_r": ("cat", [4, 8, 16])}

    def __init__(self, info: Any, lora_r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.05,
                 lr: float = 2e-3, domains: tuple[str, ...] | str | None = None,
                 target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj"),
                 dtype: str | None = None):
        super().__init__()
        from peft import LoraConfig, get_peft_model

        self.save_hyperparameters(ignore=["info"])
        if domains == "all":  # every domain of the dataset (joint training)
            domains = tuple(info.splits)
        unknown = set(domains or ()) - set(info.splits)
        if unknown:
            raise UserError(f"unknown training domains {sorted(unknown)}; the data has "
                            f"{sorted(info.splits)} (or use domains: all)")
        self.domains = list(domains) if domains else [info.target]
        base = load_causal_lm(info.base_dir, dtype)  # LoRA weights stay float32 (peft's default)
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

    def stage_data(self, stage: str) -> StageData:
        """Training examples from ``self.domains``, in that order (a stage may change them)."""
        return StageData(domains=tuple(self.domains))

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
