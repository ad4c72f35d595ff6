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
