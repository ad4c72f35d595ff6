"""LLM-rec shared core: prefix-shared candidate scoring equals full re-encoding; metrics."""

import math

import pytest
import torch

from harness.methods.llmrec import score_candidates
from harness.metrics.candidates import candidate_metrics, target_rank


def tiny_lm():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


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
