"""Candidates scored per second, with and without the shared prompt prefix.

    .venv/bin/python scripts/time_scoring.py [--device cuda] [--hidden 256 --layers 4]
    .venv/bin/python scripts/time_scoring.py --arch benchmark-default   # the default model
    python3 scripts/time_scoring.py --device cuda --arch qwen2-0.5b --train   # paper-path shape

A Llama-shaped causal LM built from a config (random weights: speed does not depend on
them), a prompt of ``--prompt`` tokens (a user's history as titles) and ``--candidates``
candidate titles of ``--title`` tokens each, as in the LLM-rec protocol (20 candidates by
default, 30 in the paper profile). ``--arch benchmark-default`` instead times the
benchmarks' own default backbone (the small LM pretrained on the default synthetic
catalogue, cached under ``.cache/harness``) on real validation prompts and candidates of
the ``weaverec`` benchmark's two-source dataset.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

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
    p.add_argument("--arch", default="llama-small",
                   choices=["llama-small", "qwen2-0.5b", "benchmark-default"])
    p.add_argument("--train", action="store_true",
                   help="also time LoRA training (r 16, lr 2e-4, bf16 on GPU) in tokens/s")
    args = p.parse_args()
    torch.manual_seed(0)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
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

    if users is None:
        users = [(rand(args.prompt), [rand(args.title) for _ in range(args.candidates)])
                 for _ in range(args.users)]
    print(f"model: {args.arch}, hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; prompt "
          f"{args.prompt} tokens (mean), {args.candidates} candidates of {args.title} tokens; "
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
    if args.train:
        time_lora_training(model, args)


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
            if args.device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
        loss = lora(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if args.device == "cuda":
        torch.cuda.synchronize()
    rate = steps * batch * seq / (time.perf_counter() - t)
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    print(f"LoRA training: {rate:.0f} tokens/s (batch {batch} x {seq} tokens, "
          f"{trainable / 1e6:.2f}M trainable parameters)")


if __name__ == "__main__":
    main()
