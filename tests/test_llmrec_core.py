"""LLM-rec shared core: prefix-shared candidate scoring equals full re-encoding, one user
or many per call; metrics; batched evaluation in LoRARec."""

import functools
import math
import random

import pytest
import torch

from harness.methods.llmrec import score_candidates, score_candidates_batch
from harness.metrics.candidates import candidate_metrics, target_rank


def tiny_lm(arch: str = "llama", dtype: torch.dtype = torch.float32, init: float = 0.02):
    """A tiny randomly initialised causal LM built from a config (nothing downloaded). With
    ``init=0.2`` (weights' std) its attention is sharp enough that a candidate's score moves
    by 0.1-2 nats when its positions are off (0.001 at the default 0.02)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    shape = dict(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                 initializer_range=init)
    if arch == "qwen2":  # q/k/v biases, tied embeddings: the paper path's family
        model = Qwen2ForCausalLM(Qwen2Config(**shape, tie_word_embeddings=True))
    else:
        model = LlamaForCausalLM(LlamaConfig(**shape))
    return model.to(dtype).eval()


def ragged_users(seed: int = 0):
    """Users whose prompts (1 to 17 tokens), candidate counts (1 to 6) and candidate lengths
    (1 to 5 tokens) all differ."""
    rng = random.Random(seed)
    prompts = [[rng.randrange(1, 50) for _ in range(n)] for n in (7, 1, 17, 3, 12, 2)]
    cands = [[[rng.randrange(1, 50) for _ in range(rng.randint(1, 5))] for _ in range(c)]
             for c in (4, 2, 6, 1, 3, 5)]
    return prompts, cands


def test_shared_prefix_scores_equal_full_encoding():
    model = tiny_lm()
    prompt = [3, 9, 14, 7, 22, 5, 8]
    cands = [[11, 12], [30], [4, 4, 4, 19], [40, 41, 42]]
    shared = score_candidates(model, prompt, cands, share_prefix=True)
    full = score_candidates(model, prompt, cands, share_prefix=False)
    assert torch.allclose(shared, full, atol=1e-4)
    # and both equal the sum of per-token log-probabilities computed one candidate at a time
    for j, cand in enumerate(cands):
        ids = torch.tensor([prompt + cand])
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        expected = sum(logp[len(prompt) - 1 + t, tok].item() for t, tok in enumerate(cand))
        assert shared[j].item() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("budget", [32768, 60, 1])  # one chunk; several (users split); one pair each
def test_batched_scores_equal_one_by_one_and_full_encoding(arch, budget):
    model = tiny_lm(arch, init=0.2)
    prompts, cands = ragged_users()
    batched = score_candidates_batch(model, prompts, cands, max_batch_tokens=budget)
    batched_full = score_candidates_batch(model, prompts, cands, share_prefix=False,
                                          max_batch_tokens=budget)
    for p, c, b, bf in zip(prompts, cands, batched, batched_full, strict=True):
        one = score_candidates(model, p, c, share_prefix=True)
        full = score_candidates(model, p, c, share_prefix=False)
        assert b.shape == (len(c),) and b.dtype == torch.float32
        torch.testing.assert_close(b, one, atol=1e-5, rtol=0)
        torch.testing.assert_close(b, full, atol=1e-5, rtol=0)
        torch.testing.assert_close(bf, full, atol=1e-5, rtol=0)


def test_batched_scores_fail_with_wrong_positions(monkeypatch):
    """The equality above is not vacuous: the models are position-sensitive, and scoring the
    candidates at positions shifted as padding would shift them gives other scores."""
    import harness.methods.llmrec as llmrec

    model = tiny_lm("qwen2", init=0.2)
    prompts, cands = ragged_users()
    right = score_candidates_batch(model, prompts, cands)
    real_forward = model.forward

    @functools.wraps(real_forward)  # keeps the signature the scorer inspects
    def from_padded_length(*args, **kw):  # candidates placed as if every prompt had 17 tokens
        if kw.get("cache") is not None or kw.get("past_key_values") is not None:
            kw["position_ids"] = kw["position_ids"] - kw["position_ids"][:, :1] + 16
        return real_forward(*args, **kw)

    monkeypatch.setattr(model, "forward", from_padded_length)
    wrong = llmrec.score_candidates_batch(model, prompts, cands)
    # (rotary attention is relative: a one-token prompt has no prefix, so no offset shows)
    shifted = [k for k, p in enumerate(prompts) if len(p) not in (1, 17)]
    assert all((right[k] - wrong[k]).abs().max() > 0.05 for k in shifted)


def test_batched_scores_through_peft_with_gradients():
    """A peft-wrapped model (non-zero LoRA): same scores and same LoRA gradients as one user
    at a time (MoLoRec learns through scores)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    model = get_peft_model(tiny_lm("llama", init=0.2), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.eval()
    prompts, cands = ragged_users(1)
    lora = [p for n, p in model.named_parameters() if "lora_" in n]

    def grads(total):
        model.zero_grad()
        total.backward()
        return [p.grad.clone() for p in lora]

    batched = score_candidates_batch(model, prompts, cands, grad=True, max_batch_tokens=80)
    g_batched = grads(sum(s.logsumexp(0) for s in batched))
    one = [score_candidates(model, p, c, grad=True) for p, c in zip(prompts, cands, strict=True)]
    g_one = grads(sum(s.logsumexp(0) for s in one))
    for b, o in zip(batched, one, strict=True):
        torch.testing.assert_close(b, o, atol=1e-5, rtol=0)
    for a, b in zip(g_batched, g_one, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        assert not score_candidates_batch(model, prompts, cands)[0].requires_grad


def test_batched_scores_in_bfloat16():
    """bf16 weights: finite float32 scores, near the float32 model's and the one-user path's."""
    prompts, cands = ragged_users(2)
    ref = score_candidates_batch(tiny_lm("qwen2", init=0.2), prompts, cands)
    model = tiny_lm("qwen2", torch.bfloat16, init=0.2)
    batched = score_candidates_batch(model, prompts, cands, max_batch_tokens=50)
    tree = score_candidates_batch(model, prompts, cands, max_batch_tokens=50, layout="tree")
    for p, c, b, r, t in zip(prompts, cands, batched, ref, tree, strict=True):
        assert b.dtype == torch.float32 and torch.isfinite(b).all() and torch.isfinite(t).all()
        torch.testing.assert_close(b, score_candidates(model, p, c), atol=0.1, rtol=0.02)
        torch.testing.assert_close(b, r, atol=0.1, rtol=0.02)
        torch.testing.assert_close(t, r, atol=0.1, rtol=0.02)


@pytest.mark.parametrize("layout", ["tree", "cache"])
def test_lora_rec_evaluates_in_batches_with_unchanged_metrics(workdir, layout):
    """Validation through LoRARec's queue (ragged batches of 7 users, small chunks) logs the
    same metrics as scoring and measuring one example at a time, in either layout."""
    from harness.datasets.amazon_seq import AmazonSeqDataModule
    from harness.methods.llmrec import LoRARec

    dm = AmazonSeqDataModule(domains=("Beauty", "Toys"), target="Toys", n_candidates=10,
                             synthetic={"n_users": 60, "n_items": 50}, pretrain={"steps": 20})
    model = LoRARec(dm.info, eval_batch_users=7, eval_batch_tokens=300, eval_layout=layout).eval()
    logged = {}
    model.log_dict = lambda d, **kw: logged.update({k: v.item() for k, v in d.items()})
    examples = list(dm.val_dataloader())
    assert len(examples) % 7  # the epoch's end scores a partial batch
    model.on_validation_epoch_start()
    with torch.no_grad():
        for i, ex in enumerate(examples):
            model.validation_step(ex, i)
        model.on_validation_epoch_end()
        per = [candidate_metrics(score_candidates(model.model, p, c).unsqueeze(0),
                                 torch.zeros(1, dtype=torch.long)) for p, c in examples]
    expected = {f"val/{k}": torch.cat([m[k] for m in per]).mean().item() for k in per[0]}
    assert logged == pytest.approx(expected, abs=1e-7)
    assert not model._queue and not model._vals


def test_candidate_metrics_hand_computed():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [1.0, 1.0, 1.0, 1.0], [0.2, 0.1, 0.0, 0.3]])
    target = torch.tensor([2, 0, 3])
    assert target_rank(scores, target).tolist() == [1, 3, 0]  # ties count against the target
    m = candidate_metrics(scores, target)
    assert m["hr_1"].tolist() == [0.0, 0.0, 1.0]
    assert m["hr_3"].tolist() == [1.0, 0.0, 1.0]
    assert m["ndcg_3"][0].item() == pytest.approx(1 / math.log2(3))
    assert m["ndcg_5"][1].item() == pytest.approx(1 / math.log2(5))
    assert m["mrr"].tolist() == pytest.approx([0.5, 0.25, 1.0])


def test_pretraining_teaches_the_catalogue_language_and_is_cached(tmp_path):
    from harness.backbones import SmallLMConfig, pretrain_small_lm
    from harness.datasets import amazon_readers as ar
    from harness.datasets.amazon_seq import MultiDomainConfig, write_multidomain

    cfg = MultiDomainConfig(domains=("Beauty", "Toys"), n_users=60, n_items=400, seed=1)
    write_multidomain(tmp_path / "data", cfg)
    corpus = []
    for d in cfg.domains:
        fmt, _, meta = ar.find_files(tmp_path / "data", d)
        corpus += sorted(ar.read_titles(meta, fmt).values())
    held_out, train = corpus[::10], [t for k, t in enumerate(corpus) if k % 10]
    lm_cfg = SmallLMConfig(hidden=64, intermediate=128, steps=60, lr=2e-3)
    model, tok, _ = pretrain_small_lm(train, lm_cfg, tmp_path / "cache")

    def nll(m):
        total = 0.0
        for text in held_out:
            ids = torch.tensor([[2, *tok.encode(text).ids, 3]])
            total += m(input_ids=ids, labels=ids).loss.item()
        return total / len(held_out)

    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    untrained = LlamaForCausalLM(model.config).eval()
    with torch.no_grad():
        print(f"held-out NLL: pretrained {nll(model):.3f}, untrained {nll(untrained):.3f}")
        assert nll(model) < nll(untrained) - 1.0  # it learned which words go together
    again, _, _ = pretrain_small_lm(train, lm_cfg, tmp_path / "cache")  # loaded, not retrained
    for a, b in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


def _padded_loss(model, batch):
    """The old right-padded batch with HF's own label loss (the reference for packing)."""
    n = max(len(p) + len(a) for p, a in batch)
    ids = torch.zeros(len(batch), n, dtype=torch.long)
    mask = torch.zeros(len(batch), n, dtype=torch.long)
    labels = torch.full((len(batch), n), -100, dtype=torch.long)
    for j, (p, a) in enumerate(batch):
        ids[j, : len(p) + len(a)] = torch.tensor(p + a)
        mask[j, : len(p) + len(a)] = 1
        labels[j, len(p) : len(p) + len(a)] = torch.tensor(a)
    return model(input_ids=ids, attention_mask=mask, labels=labels).loss


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_answer_only_lm_loss_equals_hf_label_loss(arch):
    """lm_loss (the LM head at the answers' positions only, through a peft model's decoder)
    gives HF's label loss on the padded batch and the same LoRA gradients; answers read one
    position late (the targets' own positions) give a different loss."""
    from peft import LoraConfig, get_peft_model

    from harness.datasets.amazon_seq import collate_lm
    from harness.methods.llmrec import lm_loss

    torch.manual_seed(1)
    model = get_peft_model(tiny_lm(arch, init=0.2), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    prompts, cands = ragged_users(2)
    batch = [(p, c[0]) for p, c in zip(prompts, cands, strict=True)]
    lora = [p for n, p in model.named_parameters() if "lora_" in n]

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in lora]

    b = collate_lm(batch)
    assert int(b["n_examples"]) == len(batch) and len(b["targets"]) == sum(len(a) for _, a in batch)
    loss = lm_loss(model, b)
    g = grads(loss)
    ref = _padded_loss(model, batch)
    g_ref = grads(ref)
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=0)
    for x, y in zip(g, g_ref, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)
    late = dict(b, answer_cols=b["answer_cols"] + 1)
    with torch.no_grad():
        assert abs(lm_loss(model, late) - ref) > 1e-3
    model.disable_adapter_layers()  # the adapters matter: without them the loss moves
    with torch.no_grad():
        assert abs(lm_loss(model, b) - ref) > 1e-4


def test_lm_loss_takes_the_plain_path_for_scaled_logits():
    """A model whose logits are scaled after the head (Granite's logits_scaling): lm_loss
    still equals HF's label loss (the head-only shortcut would not)."""
    from transformers import GraniteConfig, GraniteForCausalLM

    from harness.datasets.amazon_seq import collate_lm
    from harness.methods.llmrec import lm_loss

    torch.manual_seed(0)
    model = GraniteForCausalLM(GraniteConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, logits_scaling=4.0,
        initializer_range=0.2)).eval()
    prompts, cands = ragged_users(3)
    batch = [(p, c[0]) for p, c in zip(prompts, cands, strict=True)]
    with torch.no_grad():
        ref = _padded_loss(model, batch)
        torch.testing.assert_close(lm_loss(model, collate_lm(batch)), ref, atol=1e-5, rtol=0)
        b = collate_lm(batch)  # what the shortcut would compute: the head without the scaling
        hidden = model.get_decoder()(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                     use_cache=False).last_hidden_state
        unscaled = torch.nn.functional.cross_entropy(
            model.get_output_embeddings()(hidden[b["answer_rows"], b["answer_cols"]]), b["targets"])
        assert abs(unscaled - ref) > 1e-3


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("budget", [32768, 60, 1])  # one chunk; several; one user each
def test_tree_layout_scores_equal_one_by_one(arch, budget):
    """layout="tree" (a user's prompt and all its candidates in one row, each candidate
    masked to the prompt and itself) gives the one-user scores, whatever the chunking (the
    broken-mask case is the next test)."""
    model = tiny_lm(arch, init=0.2)
    prompts, cands = ragged_users()
    tree = score_candidates_batch(model, prompts, cands, max_batch_tokens=budget, layout="tree")
    for p, c, t in zip(prompts, cands, tree, strict=True):
        assert t.shape == (len(c),) and t.dtype == torch.float32
        torch.testing.assert_close(t, score_candidates(model, p, c), atol=1e-5, rtol=0)


def test_tree_layout_fails_when_candidates_see_each_other(monkeypatch):
    import harness.methods.llmrec as llmrec

    model = tiny_lm("llama", init=0.2)
    prompts, cands = ragged_users()
    real_eq = torch.Tensor.__eq__
    calls = []

    def leaky_eq(a, b):  # the "same candidate" test of the mask always true
        out = real_eq(a, b)
        if isinstance(b, torch.Tensor) and a.dim() == 3 and b.dim() == 3:
            calls.append(1)
            return torch.ones_like(out)
        return out

    monkeypatch.setattr(torch.Tensor, "__eq__", leaky_eq)
    leaky = llmrec.score_candidates_batch(model, prompts, cands, layout="tree")
    monkeypatch.undo()
    assert calls
    diffs = [(t - score_candidates(model, p, c)).abs().max()
             for p, c, t in zip(prompts, cands, leaky, strict=True) if len(c) > 1]
    assert max(diffs) > 1e-2
    with pytest.raises(ValueError, match="layout"):
        score_candidates_batch(model, prompts, cands, layout="packed")
