"""Candidates scored per second: one user per call (shared prefix or full re-encoding)
against many users per call (:func:`score_candidates_batch`).

    .venv/bin/python scripts/time_scoring.py [--device cuda] [--hidden 256 --layers 4]
    .venv/bin/python scripts/time_scoring.py --arch benchmark-default   # the default model
    python3 scripts/time_scoring.py --device cuda --arch qwen2-0.5b --train   # paper-path shape
    python3 scripts/time_scoring.py --device cuda --arch qwen2-0.5b --users 1024 \
        --one-users 20 --max-batch-tokens 65536,262144 --modes one-shared,batch-shared,batch-full

A Llama-shaped causal LM built from a config (random weights: speed does not depend on
them), a prompt of ``--prompt`` tokens (a user's history as titles) and ``--candidates``
candidate titles of ``--title`` tokens each, as in the LLM-rec protocol (20 candidates by
default, 30 in the paper profile); ``--jitter`` varies prompt and title lengths per user
(real prompts differ in length, so batches carry padding). ``--arch benchmark-default``
instead times the benchmarks' own default backbone (the small LM pretrained on the
default synthetic catalogue, cached under ``.cache/harness``) on real validation prompts
and candidates of the ``weaverec`` benchmark's two-source dataset.

Modes (``--modes``): ``one-shared`` / ``one-full`` score one user per call with / without
the shared prefix (on the first ``--one-users`` users); ``batch-shared`` / ``batch-full``
score ``--batch-users`` users per call, once per ``--max-batch-tokens`` value;
``batch-tree`` is ``batch-shared`` with ``layout="tree"`` (a user's prompt and candidates in
one row under a 4-D mask, no cache copies). The modes
run in turn, ``--rounds`` times, the order reversed every other round (the machine's load
drifts); each line is one mode's median over rounds, its range, and the median over
rounds of its rate over the first mode's in the same round. float32 on CPU
(``--threads``, 2 by default), bfloat16 on CUDA.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from harness.methods.llmrec import score_candidates, score_candidates_batch

MODES = ("one-shared", "one-full", "batch-shared", "batch-full", "batch-tree")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--prompt", type=int, default=200)
    p.add_argument("--title", type=int, default=12)
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--arch", default="llama-small",
                   choices=["llama-small", "qwen2-0.5b", "benchmark-default"])
    p.add_argument("--jitter", type=float, default=0.0,
                   help="random prompt / title lengths, uniform in (1 +- jitter) x the mean")
    p.add_argument("--modes", default="one-shared,one-full,batch-shared",
                   help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--batch-users", type=int, default=0,
                   help="users per batched call (0: all of them in one call)")
    p.add_argument("--max-batch-tokens", default="32768",
                   help="chunk budget(s) of the batched modes, comma-separated")
    p.add_argument("--one-users", type=int, default=0,
                   help="users timed in the one-user modes (0: all)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    p.add_argument("--profile", action="store_true",
                   help="also profile one call of the last mode (torch.profiler: top operators "
                        "by device time, and the call's wall time against its kernels' sum)")
    p.add_argument("--train", action="store_true",
                   help="also time LoRA training (r 16, lr 2e-4, bf16 on GPU) in tokens/s")
    args = p.parse_args()
    modes = args.modes.split(",")
    if set(modes) - set(MODES):
        p.error(f"unknown modes {sorted(set(modes) - set(MODES))}; choose from {MODES}")
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    users = None
    if args.arch == "benchmark-default":
        from transformers import AutoModelForCausalLM

        from harness import spec

        ds = spec.load("weaverec").config["datasets"]["two-source"]["params"]
        from harness.datasets.amazon_seq import AmazonSeqDataModule

        dm = AmazonSeqDataModule(**ds)
        model = AutoModelForCausalLM.from_pretrained(dm.info.base_dir).to(args.device, dtype).eval()
        cfg = model.config
        users = dm._eval_rows(dm.info.splits[dm.target].valid)[: args.users]
        args.candidates = len(users[0][1])
        args.prompt = round(sum(len(p) for p, _ in users) / len(users))
        args.title = round(sum(len(t) for _, c in users for t in c) / (len(users) * args.candidates))
        args.vocab = cfg.vocab_size
    elif args.arch == "qwen2-0.5b":  # Qwen2-0.5B's published shape, random weights
        args.vocab = 151936
        cfg = Qwen2Config(vocab_size=args.vocab, hidden_size=896, intermediate_size=4864,
                          num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                          max_position_embeddings=4096, tie_word_embeddings=True)
        model = Qwen2ForCausalLM(cfg).to(args.device, dtype).eval()
    else:
        cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden,
                          intermediate_size=4 * args.hidden, num_hidden_layers=args.layers,
                          num_attention_heads=max(1, args.hidden // 64),
                          num_key_value_heads=max(1, args.hidden // 64),
                          max_position_embeddings=1024)
        model = LlamaForCausalLM(cfg).to(args.device, dtype).eval()
    g = torch.Generator().manual_seed(1)

    def rand(n: int) -> list[int]:
        return torch.randint(1, args.vocab, (n,), generator=g).tolist()

    def length(mean: int) -> int:
        if not args.jitter:
            return mean
        lo, hi = max(1, round(mean * (1 - args.jitter))), round(mean * (1 + args.jitter))
        return int(torch.randint(lo, hi + 1, (1,), generator=g))

    if users is None:
        users = [(rand(length(args.prompt)),
                  [rand(length(args.title)) for _ in range(args.candidates)])
                 for _ in range(args.users)]
    n_cands = sum(len(c) for _, c in users)
    print(f"model: {args.arch}, hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; {len(users)} "
          f"users, prompt {args.prompt} tokens (mean), {args.candidates} candidates of "
          f"{args.title} tokens (mean); {args.device}, {dtype}"
          + (f", {torch.get_num_threads()} threads" if args.device == "cpu" else ""))
    one = users[: args.one_users or len(users)]
    step = args.batch_users or len(users)
    runs: dict[str, Any] = {}  # label -> (callable, candidates it scores)
    for m in modes:
        if m.startswith("one-"):
            share = m == "one-shared"
            runs[m] = (lambda share=share: [score_candidates(model, pr, cs, share_prefix=share)
                                            for pr, cs in one],
                       sum(len(c) for _, c in one))
        else:
            for budget in map(int, args.max_batch_tokens.split(",")):
                share = m != "batch-full"
                layout = "tree" if m == "batch-tree" else "cache"

                def call(share: bool = share, budget: int = budget, layout: str = layout) -> None:
                    for k in range(0, len(users), step):
                        part = users[k : k + step]
                        score_candidates_batch(model, [pr for pr, _ in part],
                                               [cs for _, cs in part], share_prefix=share,
                                               max_batch_tokens=budget, layout=layout)

                runs[f"{m} (users/call {step}, tokens {budget})"] = (call, n_cands)
    rates: dict[str, list[float]] = {k: [] for k in runs}
    with torch.no_grad():
        for fn, _ in runs.values():  # warm-up (kernels, allocator, caches)
            fn()
        for r in range(args.rounds):
            for label in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                fn, n = runs[label]
                sync(args.device)
                t = time.perf_counter()
                fn()
                sync(args.device)
                rates[label].append(n / (time.perf_counter() - t))
    first = rates[next(iter(rates))]
    for label, v in rates.items():
        ratio = statistics.median(a / b for a, b in zip(v, first, strict=True))
        print(f"{label}: {statistics.median(v):,.0f} candidates/s (rounds {min(v):,.0f}-"
              f"{max(v):,.0f}); x{ratio:.2f} the first mode (median of per-round ratios)")
    if args.profile:
        profile_call(*runs[list(runs)[-1]], label=list(runs)[-1], device=args.device)
    if args.train:
        time_lora_training(model, args)


def profile_call(fn: Any, n: int, label: str, device: str) -> None:
    """One call of ``fn`` under torch.profiler: the 20 costliest operators by device time
    (CPU time on the CPU), and the call's wall time beside the sum of its kernels."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with torch.no_grad(), profile(activities=acts) as prof:
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        wall = time.perf_counter() - t
    key = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    events = prof.key_averages()
    kernels = sum(getattr(e, "self_device_time_total", 0) for e in events) / 1e6
    print(f"profile of {label}: {n} candidates, wall {wall:.3f} s (under the profiler), "
          f"kernels {kernels:.3f} s")
    print(events.table(sort_by=key, row_limit=20, max_name_column_width=60))


def sync(device: str) -> None:
    """Wait for queued GPU work (a no-op on the CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_lora_training(model: torch.nn.Module, args: argparse.Namespace, batch: int = 8,
                       seq: int = 512, steps: int = 10) -> None:
    """LoRA r 16 / alpha 32 on the attention projections, AdamW lr 2e-4: tokens per second."""
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                            target_modules=["q_proj", "k_proj", "v_proj",
                                                            "o_proj"]))
    lora.train()
    opt = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=2e-4)
    ids = torch.randint(1, args.vocab, (batch, seq), device=args.device)
    for n in range(steps + 2):
        if n == 2:  # two warm-up steps
            sync(args.device)
            t = time.perf_counter()
        loss = lora(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync(args.device)
    rate = steps * batch * seq / (time.perf_counter() - t)
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    print(f"LoRA training: {rate:.0f} tokens/s (batch {batch} x {seq} tokens, "
          f"{trainable / 1e6:.2f}M trainable parameters)")


if __name__ == "__main__":
    main()
