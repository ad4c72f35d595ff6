"""Candidates scored per second, with and without the shared prompt prefix.

    .venv/bin/python scripts/time_scoring.py [--device cuda] [--hidden 256 --layers 4]

A Llama-shaped causal LM built from a config (random weights: speed does not depend on
them), a prompt of ``--prompt`` tokens (a user's history as titles) and ``--candidates``
candidate titles of ``--title`` tokens each, as in the LLM-rec protocol (20 candidates by
default, 30 in the paper profile).
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from harness.methods.llmrec import score_candidates


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
    args = p.parse_args()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden,
                      intermediate_size=4 * args.hidden, num_hidden_layers=args.layers,
                      num_attention_heads=max(1, args.hidden // 64),
                      num_key_value_heads=max(1, args.hidden // 64),
                      max_position_embeddings=1024)
    model = LlamaForCausalLM(cfg).to(args.device).eval()
    g = torch.Generator().manual_seed(1)

    def rand(n: int) -> list[int]:
        return torch.randint(1, args.vocab, (n,), generator=g).tolist()

    users = [(rand(args.prompt), [rand(args.title) for _ in range(args.candidates)])
             for _ in range(args.users)]
    print(f"model: hidden {args.hidden}, {args.layers} layers, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; prompt "
          f"{args.prompt} tokens, {args.candidates} candidates of {args.title} tokens; "
          f"{args.device}")
    for share in (True, False):
        score_candidates(model, *users[0], share_prefix=share)  # warm-up
        if args.device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for prompt, cands in users:
            score_candidates(model, prompt, cands, share_prefix=share)
        if args.device == "cuda":
            torch.cuda.synchronize()
        rate = args.users * args.candidates / (time.perf_counter() - t)
        print(f"share_prefix={share}: {rate:.0f} candidates/s")


if __name__ == "__main__":
    main()
