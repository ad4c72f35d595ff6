"""LoRA training throughput of the LLM recommenders' step: tokens per second and the model
FLOPs utilisation (MFU), one line per variant and examples per step.

    python3 scripts/time_lora.py --device cuda --arch qwen2-0.5b           # the H200 figures
    .venv/bin/python scripts/time_lora.py --arch llama-small --steps 3     # CPU, small shape

The model is LoRA r 16 / alpha 32 on q/k/v/o (peft), base weights frozen (bfloat16 on CUDA,
float32 on CPU), adapters float32; random weights (speed does not depend on them). The
examples are LLM-rec shaped: a prompt of ``--prompt`` tokens (uniform in +-``--jitter``)
and an answer (the next item's title) of ``--answer`` tokens; the loss is the answers'.

Variants (``--variants``):

- ``reference``: the earlier measurement, batch 8 x 512 random tokens with the LM loss on
  every token (``model(input_ids, labels=input_ids)``), AdamW (foreach);
- ``padded``: the harness's step before packing: ``--examples`` examples right-padded,
  attention mask, labels -100 on prompt and padding, HF's loss (logits at every position),
  AdamW (foreach);
- ``answers``: today's step: :func:`collate_lm`'s right-padded rows, :func:`lm_loss` with
  the LM head at the answers' positions only, fused AdamW;
- ``packed``: the examples packed into one row (no padding; restarting position ids keep
  them apart, and transformers builds a dense block-causal T x T mask from them), logits at
  the answers' positions only (``logits_to_keep`` as indices), fused AdamW;
- ``packed-flex``: the same with transformers' ``flex_attention`` (a block-sparse document
  mask) instead of SDPA with a dense mask (CUDA only: no flex backward on the CPU);
- ``answers-compile``: ``answers`` with the decoder under ``torch.compile`` (dynamic shapes;
  compiled in place, since :func:`lm_loss` calls the decoder, not the wrapper's forward).

Tokens are the real (non-padding) tokens of the step. Model FLOPs per step, counted from
the shapes (N_body: the decoder layers' linear weights, frozen; N_lora: the adapters; L
layers; d_attn = heads x head dim; s_i: the example's length; V: the vocabulary; d: the
hidden size; K: the positions whose logits are computed):

    FLOPs = 4 N_body T + 6 N_lora T + 6 L d_attn sum_i s_i^2 / 2 x 2 + 4 d V K

(forward 2 N per token plus the input gradient 2 N, no weight gradient for frozen weights;
causal attention QK^T and PV at 2 d_attn s^2 / 2 FLOPs each forward, backward twice the
forward; the tied, frozen LM head 2 d V forward plus 2 d V backward per computed
position.) MFU = FLOPs / step seconds / peak, with peak the H200's dense bf16 datasheet
figure (989 TFLOP/s) and, beside it, an 8192^3 bf16 matmul measured in the same process.
``6N`` is the usual 6 x parameters x tokens convention, printed for comparison.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

import torch

from harness.datasets.amazon_seq import collate_lm
from harness.methods.llmrec import lm_loss

DATASHEET_BF16 = 989e12


def build(arch: str, device: str, dtype: torch.dtype, attn: str = "sdpa") -> torch.nn.Module:
    """The base LM with LoRA r 16 on q/k/v/o (adapters float32)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs (seconds on the CPU for 0.5B)
        base = _base(arch, attn)
    base = base.to(dtype)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                            target_modules=["q_proj", "k_proj", "v_proj",
                                                            "o_proj"]))
    model.train()
    return model


def _base(arch: str, attn: str) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if arch == "qwen2-0.5b":  # Qwen2-0.5B's published shape
        cfg = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                          num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                          max_position_embeddings=4096, tie_word_embeddings=True,
                          attn_implementation=attn)
        return Qwen2ForCausalLM(cfg)
    else:
        cfg = LlamaConfig(vocab_size=8000, hidden_size=256, intermediate_size=1024,
                          num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                          max_position_embeddings=1024, attn_implementation=attn)
        return LlamaForCausalLM(cfg)


def counts(model: torch.nn.Module) -> dict[str, Any]:
    """N_body (frozen linear weights of the decoder layers), N_lora, N_all and the shape."""
    cfg = model.get_base_model().config
    body = lora = 0
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and "lm_head" not in name:
            if "lora_" in name:
                lora += mod.weight.numel()
            else:
                body += mod.weight.numel()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return {"body": body, "lora": lora, "all": sum(p.numel() for p in model.parameters()),
            "layers": cfg.num_hidden_layers, "d_attn": cfg.num_attention_heads * head_dim,
            "d": cfg.hidden_size, "vocab": cfg.vocab_size}


def flops(c: dict[str, Any], lengths: list[int], logit_positions: int) -> float:
    """Model FLOPs of one training step (the module docstring's formula)."""
    t = sum(lengths)
    attn = 6 * c["layers"] * c["d_attn"] * sum(s * s for s in lengths)  # 3 x 2 d s^2 (causal)
    return 4 * c["body"] * t + 6 * c["lora"] * t + attn + 4 * c["d"] * c["vocab"] * logit_positions


def examples(n: int, args: argparse.Namespace, rng: random.Random) -> list[tuple[list[int], list[int]]]:
    lo = max(1, round(args.prompt * (1 - args.jitter)))
    hi = round(args.prompt * (1 + args.jitter))
    return [([rng.randrange(1, args.vocab) for _ in range(rng.randint(lo, hi))],
             [rng.randrange(1, args.vocab) for _ in range(args.answer)]) for _ in range(n)]


def padded(batch: list[tuple[list[int], list[int]]], device: str) -> dict[str, torch.Tensor]:
    """The right-padded batch the harness used before packing."""
    n = max(len(p) + len(a) for p, a in batch)
    ids = torch.zeros(len(batch), n, dtype=torch.long)
    mask = torch.zeros(len(batch), n, dtype=torch.long)
    labels = torch.full((len(batch), n), -100, dtype=torch.long)
    for j, (p, a) in enumerate(batch):
        ids[j, : len(p) + len(a)] = torch.tensor(p + a)
        mask[j, : len(p) + len(a)] = 1
        labels[j, len(p) : len(p) + len(a)] = torch.tensor(a)
    return {k: v.to(device) for k, v in
            {"input_ids": ids, "attention_mask": mask, "labels": labels}.items()}


def packed(batch: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    """The batch as one row; position ids restart at each example."""
    ids: list[int] = []
    pos: list[int] = []
    where: list[int] = []
    targets: list[int] = []
    for p, a in batch:
        start = len(ids)
        ids += p + a
        pos += range(len(p) + len(a))
        where += range(start + len(p) - 1, start + len(p) + len(a) - 1)
        targets += a
    return {"input_ids": torch.tensor([ids]), "position_ids": torch.tensor([pos]),
            "where": torch.tensor(where), "targets": torch.tensor(targets)}


def packed_loss(model: torch.nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False,
                logits_to_keep=b["where"])
    return torch.nn.functional.cross_entropy(out.logits[0].float(), b["targets"])


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_variant(name: str, args: argparse.Namespace, n_ex: int, dtype: torch.dtype,
                peak: float) -> None:
    rng = random.Random(n_ex)
    attn = "flex_attention" if name == "packed-flex" else "sdpa"
    model = build(args.arch, args.device, dtype, attn)
    c = counts(model)
    params = [p for p in model.parameters() if p.requires_grad]
    steps = args.steps + args.warmup
    fused = name != "reference" and name != "padded"
    opt = torch.optim.AdamW(params, lr=2e-4, fused=fused)
    fwd: Callable[[Any], torch.Tensor]
    if name == "reference":
        batches = [torch.randint(1, args.vocab, (8, 512), device=args.device) for _ in range(steps)]
        lengths = [[512] * 8 for _ in batches]
        positions = [8 * 512 for _ in batches]
        fwd = lambda b: model(input_ids=b, labels=b).loss  # noqa: E731
    else:
        raw = [examples(n_ex, args, rng) for _ in range(steps)]
        lengths = [[len(p) + len(a) for p, a in b] for b in raw]
        if name == "padded":
            batches = [padded(b, args.device) for b in raw]
            positions = [sum(lengths_b) for lengths_b in lengths]  # HF's loss: every real token
            fwd = lambda b: model(**b).loss  # noqa: E731
        elif name.startswith("packed"):
            batches = [{k: v.to(args.device) for k, v in packed(b).items()} for b in raw]
            positions = [len(b) * args.answer for b in raw]
            fwd = lambda b: packed_loss(model, b)  # noqa: E731
        else:
            batches = [{k: v.to(args.device) for k, v in collate_lm(b).items()} for b in raw]
            positions = [len(b) * args.answer for b in raw]
            if name == "answers-compile":  # the decoder lm_loss calls, compiled in place
                dec = model.get_base_model().get_decoder()
                dec.forward = torch.compile(dec.forward, dynamic=True)
            fwd = lambda b: lm_loss(model, b)  # noqa: E731
    t0 = time.perf_counter()
    for k in range(steps):
        if k == args.warmup:
            sync(args.device)
            warm = time.perf_counter() - t0
            t = time.perf_counter()
        loss = fwd(batches[k])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync(args.device)
    secs = (time.perf_counter() - t) / args.steps
    timed = range(args.warmup, steps)
    tokens = sum(sum(lengths[k]) for k in timed) / args.steps
    fl = sum(flops(c, lengths[k], positions[k]) for k in timed) / args.steps
    six_n = 6 * c["all"] * tokens
    mem = (f", peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
           if args.device.startswith("cuda") else "")
    print(f"{name:15s} {n_ex:4d} ex/step {tokens:8,.0f} tok/step {secs * 1e3:8.1f} ms/step "
          f"{tokens / secs:10,.0f} tokens/s {fl / secs / 1e12:7.1f} TFLOP/s "
          f"MFU {fl / secs / DATASHEET_BF16:6.1%} (of measured matmul {fl / secs / peak:6.1%}) "
          f"6N {six_n / secs / DATASHEET_BF16:6.1%}; warm-up {warm:.1f} s, loss "
          f"{loss.item():.2f}{mem}", flush=True)
    if args.device.startswith("cuda"):
        del model, opt, batches
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def matmul_peak(device: str, dtype: torch.dtype) -> float:
    """FLOP/s of an 8192^3 matmul (CUDA, bf16; a smaller one on the CPU)."""
    n = 8192 if device.startswith("cuda") else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(device)
    return 10 * 2 * n**3 / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--arch", default="llama-small", choices=["llama-small", "qwen2-0.5b"])
    ap.add_argument("--variants", default="reference,padded,answers,packed,packed-flex,answers-compile")
    ap.add_argument("--examples", default="8,64", help="examples per step, comma-separated")
    ap.add_argument("--prompt", type=int, default=300, help="mean prompt tokens")
    ap.add_argument("--jitter", type=float, default=0.5)
    ap.add_argument("--answer", type=int, default=12)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    args.vocab = 151936 if args.arch == "qwen2-0.5b" else 8000
    peak = matmul_peak(args.device, dtype)
    print(f"{args.arch} on {args.device} ({dtype}); measured matmul {peak / 1e12:.0f} TFLOP/s; "
          f"prompts {args.prompt} +-{args.jitter:.0%} tokens, answers {args.answer}; "
          f"{args.steps} timed steps after {args.warmup}", flush=True)
    for name in args.variants.split(","):
        for n_ex in map(int, args.examples.split(",")):
            if name == "reference" and n_ex != int(args.examples.split(",")[0]):
                continue  # one shape: 8 x 512
            try:
                run_variant(name, args, n_ex, dtype, peak)
            except Exception as e:  # one variant failing must not lose the others' lines
                print(f"{name:15s} {n_ex:4d} ex/step FAILED: {type(e).__name__}: "
                      f"{str(e).splitlines()[0][:300] if str(e) else ''}", flush=True)
                if args.device.startswith("cuda"):
                    torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
