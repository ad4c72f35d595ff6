"""Shared core of the LLM recommenders (WeaveRec, MoLoRec, EvoRec): candidate scoring and
the LoRA recommender they all extend (:class:`LoRARec`, row ``target-lora``).

A candidate's score is the log-likelihood of its title tokens given the prompt (the
user's history as titles): sum_t log p(title_t | prompt, title_<t). Scoring always
yields a valid ranking, with no parsing of generated text.

With ``share_prefix`` the prompt is encoded once and its key/value cache is repeated
for the C candidates, which are then run as one padded batch of their own tokens only;
without it every candidate re-encodes the whole prompt. Both give the same scores
(``tests/test_llmrec_core.py``); sharing costs one prompt pass instead of C.

:func:`score_candidates_batch` scores many users per model call (evaluation uses it:
``LoRARec`` queues ``eval_batch_users`` examples and scores them together).
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
    """Right-padded ids and their 0/1 mask ([len(seqs), longest]), built on the CPU and moved
    once (one copy to a GPU, not one per row)."""
    n = max(len(s) for s in seqs)
    ids = torch.tensor([s + [pad] * (n - len(s)) for s in seqs], dtype=torch.long)
    mask = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in seqs], dtype=torch.long)
    return ids.to(device), mask.to(device)


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


def _logits_kwarg(model: torch.nn.Module) -> dict[str, int]:
    """``logits_to_keep=1`` (``num_logits_to_keep`` in transformers 4.45-4.49) where the model
    takes it: the prompt pass needs no logits, so the LM head runs on one position only."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return {name: 1}
    return {}


def _chunks(prompts: list[list[int]], candidates: list[list[list[int]]], share_prefix: bool,
            max_batch_tokens: int) -> list[list[tuple[int, int]]]:
    """(user, candidate) pairs cut into chunks whose padded size stays within the budget.

    Users go longest prompt first (similar lengths share a chunk: less padding); each
    user's candidates stay in order and contiguous, so a user may span two chunks (its
    prompt is then encoded in both). A chunk's size is rows x padded row length: with
    ``share_prefix`` one row per candidate of (longest prefix + longest candidate + 1)
    positions, the prefix being the cache each row attends to; without, (longest prompt +
    candidate). A single pair over the budget still gets a chunk of its own.
    """
    order = sorted(range(len(prompts)), key=lambda u: -len(prompts[u]))
    out: list[list[tuple[int, int]]] = []
    cur: list[tuple[int, int]] = []
    a = b = 0  # the current chunk's longest prefix and longest row part after it
    for u in order:
        for j, cand in enumerate(candidates[u]):
            x, y = ((len(prompts[u]) - 1, len(cand) + 1) if share_prefix
                    else (len(prompts[u]) + len(cand), 0))
            if cur and (len(cur) + 1) * (max(a, x) + max(b, y)) > max_batch_tokens:
                out.append(cur)
                cur, a, b = [], 0, 0
            cur.append((u, j))
            a, b = max(a, x), max(b, y)
    if cur:
        out.append(cur)
    return out


def _token_logp(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """sum_t mask * log softmax(logits)[t, targets[t]] per row, in float32 ([rows])."""
    logp = torch.log_softmax(logits, -1, dtype=torch.float32)  # one pass, no float32 copy first
    return (logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask).sum(1)


def _score_chunk_shared(model: torch.nn.Module, prompts: list[list[int]],
                        candidates: list[list[list[int]]], pairs: list[tuple[int, int]],
                        pad_id: int, device: torch.device) -> Tensor:
    users = list(dict.fromkeys(u for u, _ in pairs))  # in order of first appearance
    slot = {u: k for k, u in enumerate(users)}
    index = torch.tensor([slot[u] for u, _ in pairs], dtype=torch.long)
    # the prefix is the prompt without its last token, which leads each candidate row instead:
    # the row's first logits then predict the candidate's first token, and the prompt pass
    # needs no logits at all
    prefixes = [prompts[u][:-1] for u in users]
    plen = torch.tensor([len(prompts[u]) for u, _ in pairs], dtype=torch.long)
    rows = [prompts[u][-1:] + candidates[u][j] for u, j in pairs]
    ids, cmask = _pad(rows, pad_id, device)
    kw = _cache_kwarg(model)
    extra: dict[str, Any] = {}
    if max(len(p) for p in prefixes) > 0:
        pids, pmask = _pad(prefixes, pad_id, device)
        enc_mask = pmask.clone()
        enc_mask[:, 0] = 1  # an empty prefix (a one-token prompt) must not be a fully masked row
        pos = torch.arange(pids.shape[1], device=device).expand(len(users), -1)
        out = model(input_ids=pids, attention_mask=enc_mask, position_ids=pos, use_cache=True,
                    **_logits_kwarg(model))
        cache = out[kw] if kw in out else out["past_key_values"]
        if isinstance(cache, tuple):  # legacy tuples from transformers < 4.47
            from transformers import DynamicCache

            cache = DynamicCache.from_legacy_cache(cache)
        cache.reorder_cache(index.to(device))  # each candidate row reads its own user's prefix
        extra[kw] = cache
        prefix_mask = pmask[index.to(device)]  # the user's real prefix tokens only
    else:
        prefix_mask = torch.zeros((len(pairs), 0), dtype=torch.long, device=device)
    attn = torch.cat([prefix_mask, cmask], 1)
    pos = (plen - 1).to(device).unsqueeze(1) + torch.arange(ids.shape[1], device=device)
    logits = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False,
                   **extra).logits
    return _token_logp(logits[:, :-1], ids[:, 1:], cmask[:, 1:])


def _score_chunk_full(model: torch.nn.Module, prompts: list[list[int]],
                      candidates: list[list[list[int]]], pairs: list[tuple[int, int]],
                      pad_id: int, device: torch.device) -> Tensor:
    ids, mask = _pad([prompts[u] + candidates[u][j] for u, j in pairs], pad_id, device)
    cands, cmask = _pad([candidates[u][j] for u, j in pairs], pad_id, device)
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    # row r's logits at p_r - 1 + t predict its candidate's token t (clamped where padded)
    start = torch.tensor([len(prompts[u]) - 1 for u, _ in pairs], dtype=torch.long)
    at = (start.unsqueeze(1) + torch.arange(cands.shape[1])).clamp(max=ids.shape[1] - 1)
    rows = torch.arange(len(pairs)).unsqueeze(1)
    return _token_logp(logits[rows.to(device), at.to(device)], cands, cmask)


def _chunks_tree(prompts: list[list[int]], candidates: list[list[list[int]]],
                 max_batch_tokens: int) -> list[list[tuple[int, int]]]:
    """Whole users cut into chunks whose padded size (rows x longest row, a row being the
    prompt followed by all the user's candidates) stays within the budget; users longest
    row first. A user over the budget gets a chunk of its own."""
    size = [len(prompts[u]) + sum(len(c) for c in candidates[u]) for u in range(len(prompts))]
    out: list[list[tuple[int, int]]] = []
    cur: list[tuple[int, int]] = []
    rows = longest = 0
    for u in sorted(range(len(prompts)), key=lambda u: -size[u]):
        if cur and (rows + 1) * max(longest, size[u]) > max_batch_tokens:
            out.append(cur)
            cur, rows, longest = [], 0, 0
        cur += [(u, j) for j in range(len(candidates[u]))]
        rows, longest = rows + 1, max(longest, size[u])
    if cur:
        out.append(cur)
    return out


def _logits_at(model: torch.nn.Module, rows: Tensor, cols: Tensor, **inputs: Tensor) -> Tensor:
    """Logits at positions (rows, cols) only: the decoder on the whole input, the LM head on
    those hidden states. Models whose logits are more than the head of the last hidden state
    (soft-capped or scaled) take the plain path (all logits, then the positions)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if any(getattr(base.config, k, None) for k in ("final_logit_softcapping", "logits_scaling",
                                                   "logit_scale")):
        return model(**inputs, use_cache=False).logits[rows, cols]
    # the LoRA layers live inside the decoder: calling it directly keeps them
    hidden = base.get_decoder()(**inputs, use_cache=False).last_hidden_state
    return base.get_output_embeddings()(hidden[rows, cols])


def _score_chunk_tree(model: torch.nn.Module, prompts: list[list[int]],
                      candidates: list[list[list[int]]], pairs: list[tuple[int, int]],
                      pad_id: int, device: torch.device) -> Tensor:
    """One row per user: the prompt, then each candidate (positions restarting after the
    prompt for each), under a 4-D mask where a candidate token sees the prompt and the
    earlier tokens of its own candidate only: one model call, the prompt encoded once, no
    per-candidate copy of its key/value cache. The head runs at the positions that predict
    a candidate token only. ``pairs`` holds each user's pairs contiguously (as
    :func:`_chunks_tree` cuts them), so the rows' order is the pairs' order."""
    mine: dict[int, list[int]] = {}
    for u, j in pairs:
        mine.setdefault(u, []).append(j)
    ids_rows, pos_rows, own_rows = [], [], []
    where_row: list[int] = []
    where_col: list[int] = []
    targets: list[int] = []
    for r, (u, js) in enumerate(mine.items()):
        p = prompts[u]
        ids, pos, own = list(p), list(range(len(p))), [-1] * len(p)
        for k, j in enumerate(js):
            c = candidates[u][j]
            start = len(ids)
            ids += c
            pos += range(len(p), len(p) + len(c))
            own += [k] * len(c)
            where_row += [r] * len(c)
            where_col += [len(p) - 1, *range(start, start + len(c) - 1)]
            targets += c
        ids_rows.append(ids)
        pos_rows.append(pos)
        own_rows.append(own)
    n = max(len(x) for x in ids_rows)
    ids_t = torch.tensor([x + [pad_id] * (n - len(x)) for x in ids_rows], device=device)
    pos_t = torch.tensor([x + [0] * (n - len(x)) for x in pos_rows], device=device)
    own_t = torch.tensor([x + [-2] * (n - len(x)) for x in own_rows], device=device)
    q = torch.arange(n, device=device)
    causal = q.unsqueeze(0) <= q.unsqueeze(1)  # [query, key]: the key at or before the query
    ok = causal & ((own_t.unsqueeze(1) == -1) | (own_t.unsqueeze(1) == own_t.unsqueeze(2)))
    # (a padding query sees the padding up to itself: no fully masked row)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    dtype = base.get_input_embeddings().weight.dtype
    if torch.is_autocast_enabled(device.type):  # the queries' dtype under autocast (bf16-mixed)
        dtype = torch.get_autocast_dtype(device.type)
    mask = torch.zeros(ok.shape, dtype=dtype, device=device).masked_fill(
        ~ok, torch.finfo(dtype).min).unsqueeze(1)
    rows = torch.tensor(where_row, device=device)
    cols = torch.tensor(where_col, device=device)
    logits = _logits_at(model, rows, cols, input_ids=ids_t, attention_mask=mask,
                        position_ids=pos_t)
    logp = torch.log_softmax(logits, -1, dtype=torch.float32)
    tok = logp.gather(-1, torch.tensor(targets, device=device).unsqueeze(-1)).squeeze(-1)
    lengths = torch.tensor([len(candidates[u][j]) for u, j in pairs], device=device)
    which = torch.repeat_interleave(torch.arange(len(pairs), device=device), lengths)
    return torch.zeros(len(pairs), dtype=torch.float32, device=device).index_add(0, which, tok)


def score_candidates_batch(model: torch.nn.Module, prompts: list[list[int]],
                           candidates: list[list[list[int]]], share_prefix: bool = True,
                           pad_id: int = 0, grad: bool = False,
                           max_batch_tokens: int = 32768, layout: str = "cache") -> list[Tensor]:
    """:func:`score_candidates` for many users at once: one [C_u] float32 tensor per user.

    Users may differ in prompt length, candidate count and candidate lengths. The
    (user, candidate) pairs are cut into chunks of at most ``max_batch_tokens`` padded
    positions (see :func:`_chunks`), each scored with two model calls (``share_prefix``):

    1. the chunk's prompts, all but their last token, right-padded, in one pass with
       explicit ``position_ids`` 0..p-1 and the padding masked; its key/value cache is then
       gathered along the batch (``Cache.reorder_cache``) so that each candidate row holds
       its own user's prefix;
    2. every candidate as one row [last prompt token, candidate tokens], right-padded, with
       ``position_ids`` from p_u - 1 and an attention mask covering the user's real prefix
       positions and the row's own tokens (padding never shifts a rotary position, and a
       padded key is never attended to).

    Right padding, not left: a left-padded prompt row begins with fully masked queries,
    whose softmax is NaN in some attention kernels, and NaN keys poison a later masked sum.
    Not packing into one sequence with a block-diagonal mask either: that needs a 4-D mask
    of (all tokens)^2 and attention over it, quadratic in the chunk, where the padded batch
    costs candidates x (prefix + candidate). Without ``share_prefix`` every pair is one
    right-padded row prompt + candidate (batched full re-encoding).

    ``layout="tree"`` (with ``share_prefix``) instead puts each user in one row, the prompt
    followed by all its candidates, under a 4-D mask where each candidate sees the prompt and
    itself (:func:`_score_chunk_tree`): one model call per chunk of whole users, no copies
    of the prompt's cache, no padding of candidates to the longest, at the price of
    attention over the row (prompt + all candidates)^2 per user.

    ``grad=True`` keeps the graph. Prompts and candidates must be non-empty.
    """
    if len(prompts) != len(candidates):
        raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists")
    if any(not p for p in prompts) or any(not c for cs in candidates for c in cs):
        raise ValueError("prompts and candidates must be non-empty token lists")
    if layout not in ("cache", "tree"):
        raise ValueError(f"layout must be 'cache' or 'tree', not {layout!r}")
    tree = share_prefix and layout == "tree"
    device = next(model.parameters()).device
    pieces: list[list[Tensor]] = [[] for _ in prompts]
    score = _score_chunk_tree if tree else _score_chunk_shared if share_prefix else _score_chunk_full
    chunks = (_chunks_tree(prompts, candidates, max_batch_tokens) if tree
              else _chunks(prompts, candidates, share_prefix, max_batch_tokens))
    with torch.set_grad_enabled(grad):
        for pairs in chunks:
            s = score(model, prompts, candidates, pairs, pad_id, device)
            bounds = [0]  # runs of one user's pairs (contiguous within a chunk)
            for k in range(1, len(pairs)):
                if pairs[k][0] != pairs[k - 1][0]:
                    bounds.append(k)
            bounds.append(len(pairs))
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
                pieces[pairs[lo][0]].append(s[lo:hi])
    return [torch.cat(p) if len(p) > 1 else p[0] if p
            else torch.zeros(0, device=device) for p in pieces]


# --------------------------------------------------------------------------- LoRA recommender


def lm_loss(model: torch.nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Mean cross-entropy of the answer tokens of a batch from
    :func:`harness.datasets.amazon_seq.collate_lm`: -mean_t log p(answer_t | prompt,
    answer_<t), the TALLRec objective.

    The decoder runs on the padded rows; the LM head and the float32 log-softmax over the
    vocabulary run only at the positions that predict an answer token (a few per example
    instead of every position: on the Qwen2-0.5B shape the head is a quarter of the
    model's FLOPs, and its float32 logits most of a step's memory). Models whose logits are
    more than the head of the last hidden state (soft-capped or scaled) take the plain path.
    """
    logits = _logits_at(model, batch["answer_rows"], batch["answer_cols"],
                        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return torch.nn.functional.cross_entropy(logits.float(), batch["targets"])


class LoRARec(Method):
    """A LoRA on the base LM, trained to generate the next item's title after the prompt
    (TALLRec-style; the row ``target-lora`` / ``specific-lora``), scored on candidates.

    ``domains`` names the training domains (default: the target only; ``"all"``: every
    domain of the dataset, the joint baseline). Validation and test score every candidate
    by title log-likelihood: examples arrive one per step and are queued, then scored
    ``eval_batch_users`` at a time (the rest at the epoch's end) by
    :func:`score_candidates_batch` in chunks of at most ``eval_batch_tokens`` padded
    positions, each user's prompt and candidates in one row (``eval_layout="tree"``; or
    ``"cache"``: the prompt's cache copied to one row per candidate). These set only speed
    and memory: the metrics equal one-user-at-a-time scoring up to float round-off.
    """

    metrics = {"hr_1": "max", "hr_3": "max", "hr_5": "max", "ndcg_3": "max", "ndcg_5": "max",
               "mrr": "max"}
    search_space = {"lr": ("log", 1e-4, 1e-2), "lora_r": ("cat", [4, 8, 16])}

    def __init__(self, info: Any, lora_r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.05,
                 lr: float = 2e-3, domains: tuple[str, ...] | str | None = None,
                 target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj"),
                 dtype: str | None = None, eval_batch_users: int = 32,
                 eval_batch_tokens: int = 32768, eval_layout: str = "tree"):
        super().__init__()
        from peft import LoraConfig, get_peft_model

        self.save_hyperparameters(ignore=["info"])
        if domains == "all":  # every domain of the dataset (joint training)
            domains = tuple(info.splits)
        unknown = set(domains or ()) - set(info.splits)
        if unknown:
            raise UserError(f"unknown training domains {sorted(unknown)}; the data has "
                            f"{sorted(info.splits)} (or use domains: all)")
        if eval_batch_users < 1 or eval_batch_tokens < 1:
            raise UserError("eval_batch_users and eval_batch_tokens must be >= 1")
        if eval_layout not in ("cache", "tree"):
            raise UserError(f"eval_layout must be 'tree' or 'cache', not {eval_layout!r}")
        self.domains = list(domains) if domains else [info.target]
        base = load_causal_lm(info.base_dir, dtype)  # LoRA weights stay float32 (peft's default)
        self.model = get_peft_model(base, LoraConfig(
            r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
            target_modules=list(target_modules)))
        self._vals: list[dict[str, Any]] = []
        self._queue: list[Any] = []  # evaluation examples not scored yet
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
        loss = lm_loss(self.model, batch)  # answer tokens only
        self.log("train/loss", loss, prog_bar=True, batch_size=int(batch["n_examples"]))
        return loss

    def _enqueue(self, example: Any) -> None:
        """Queue one evaluation example (prompt, candidates, ...; the target is candidate 0);
        score the queue once it holds ``eval_batch_users``."""
        self._queue.append(example)
        if len(self._queue) >= self.hparams.eval_batch_users:
            self._flush()

    def _flush(self) -> None:
        """Score the queued examples in one :func:`score_candidates_batch` call."""
        if not self._queue:
            return
        examples, self._queue = self._queue, []
        scores = score_candidates_batch(self.model, [e[0] for e in examples],
                                        [e[1] for e in examples],
                                        max_batch_tokens=self.hparams.eval_batch_tokens,
                                        layout=self.hparams.eval_layout)
        self._record(examples, scores)

    def _record(self, examples: list[Any], scores: list[Tensor]) -> None:
        """Per-example candidate metrics of scored examples, in their order, into ``_vals``."""
        from harness.metrics.candidates import candidate_metrics

        if len({len(s) for s in scores}) == 1:  # the usual case: one candidate count
            groups = [torch.stack(scores)]
        else:
            groups = [s.unsqueeze(0) for s in scores]
        for g in groups:
            self._vals.append(candidate_metrics(g, torch.zeros(len(g), dtype=torch.long,
                                                               device=g.device)))

    def _log_eval(self, stage: str) -> None:
        keys = self._vals[0].keys() if self._vals else []
        self.log_dict({f"{stage}/{k}": torch.cat([v[k] for v in self._vals]).mean() for k in keys})
        self._vals = []

    def on_validation_epoch_start(self) -> None:
        self._queue, self._vals = [], []

    def validation_step(self, example: Any, batch_idx: int) -> None:
        self._enqueue(example)

    def on_validation_epoch_end(self) -> None:
        self._flush()
        self._log_eval("val")

    def on_test_epoch_start(self) -> None:
        self._queue, self._vals = [], []

    def test_step(self, example: Any, batch_idx: int) -> None:
        self._enqueue(example)

    def on_test_epoch_end(self) -> None:
        self._flush()
        self._log_eval("test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW on the adapters, one fused kernel for all of them (CPU and CUDA)."""
        return torch.optim.AdamW([p for p in self.parameters() if p.requires_grad],
                                 lr=self.hparams.lr, fused=True)
