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

import inspect

import torch
from torch import Tensor


def _cache_kwarg(model: torch.nn.Module) -> str:
    """``cache`` in transformers >= 5.2x, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _pad(seqs: list[list[int]], pad: int, device: torch.device) -> tuple[Tensor, Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad, dtype=torch.long, device=device)
    mask = torch.zeros((len(seqs), n), dtype=torch.long, device=device)
    for j, s in enumerate(seqs):
        ids[j, : len(s)] = torch.tensor(s, dtype=torch.long, device=device)
        mask[j, : len(s)] = 1
    return ids, mask


@torch.no_grad()
def score_candidates(model: torch.nn.Module, prompt: list[int], candidates: list[list[int]],
                     share_prefix: bool = True, pad_id: int = 0) -> Tensor:
    """Log-likelihood of each candidate token sequence after ``prompt`` ([C] float32).

    ``model`` is a Hugging Face causal LM (anything returning ``.logits`` and taking a
    key/value cache). Candidates must be non-empty.
    """
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
