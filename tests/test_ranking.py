"""Ranking metrics against values computed by hand."""

import math

import torch

from harness.methods.cf import csr_rows_dense
from harness.metrics import ranking as rk


def test_topk_excludes_masked_items():
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.5]])
    exclude = torch.tensor([[True, False, False, False]])
    assert rk.topk_items(scores, 2, exclude).tolist() == [[1, 3]]


def test_recall_ndcg_hand_computed():
    # user 0: ranked [a, b, c], relevant {b, d}: hit at rank 2 only
    top = torch.tensor([[0, 1, 2], [2, 0, 1]])
    truth = torch.tensor([[False, True, False, True], [False, False, False, False]])
    hit = rk.hits(top, truth)
    n = truth.sum(1)
    recall = rk.recall_at_k(hit, n)
    ndcg = rk.ndcg_at_k(hit, n)
    assert math.isclose(recall[0].item(), 0.5)
    # DCG = 1/log2(3); IDCG = 1/log2(2) + 1/log2(3)
    expected = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert math.isclose(ndcg[0].item(), expected, rel_tol=1e-6)
    assert math.isnan(recall[1].item()) and math.isnan(ndcg[1].item())


def test_ndcg_ideal_is_capped_at_k():
    top = torch.tensor([[0, 1]])
    truth = torch.tensor([[True, True, True, True]])
    hit = rk.hits(top, truth)
    assert math.isclose(rk.ndcg_at_k(hit, truth.sum(1)).item(), 1.0, rel_tol=1e-6)
    assert math.isclose(rk.recall_at_k(hit, truth.sum(1)).item(), 0.5)


def test_hit_rate_and_popularity():
    top = torch.tensor([[0, 1], [2, 3]])
    truth = torch.tensor([[False, True, False, False], [True, False, False, False]])
    hr = rk.hit_rate_at_k(rk.hits(top, truth), truth.sum(1))
    assert hr.tolist() == [1.0, 0.0]
    pop = torch.tensor([10, 20, 30, 40])
    assert rk.mean_popularity(top, pop).tolist() == [15.0, 35.0]


def test_accumulator_skips_nan_and_counts_coverage():
    acc = rk.RankingAccumulator(["recall"], n_items=4)
    acc.add("recall", torch.tensor([1.0, float("nan"), 0.0]))
    acc.add("recall", torch.tensor([0.5]))
    acc.cover(torch.tensor([[0, 1], [1, 2]]))
    out = acc.compute()
    assert math.isclose(out["recall"], 0.5)
    assert math.isclose(out["coverage"], 0.75)
    # state is additive: summing two states equals accumulating both
    two = acc.compute(acc.state() + acc.state())
    assert math.isclose(two["recall"], 0.5) and math.isclose(two["coverage"], 0.75)


def test_csr_rows_dense():
    indptr = torch.tensor([0, 2, 2, 5])
    indices = torch.tensor([1, 3, 0, 2, 4])
    dense = csr_rows_dense(indptr, indices, torch.tensor([2, 0, 1]), 5)
    assert dense.tolist() == [
        [True, False, True, False, True],
        [False, True, False, True, False],
        [False, False, False, False, False],
    ]
