"""Generative metrics (InvDiff's bias score, Fréchet distance, improved precision/recall, group
agreement) against values computed by hand."""

import math

import numpy as np
import pytest
import torch

from harness.errors import UserError
from harness.metrics import generative as gm


def _labels(counts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(pred_attr, cls) with counts[c][i] images of class c labelled with attribute i."""
    attr, cls = [], []
    for c, row in enumerate(counts):
        for i, n in enumerate(row):
            attr += [i] * n
            cls += [c] * n
    perm = torch.randperm(len(attr), generator=torch.Generator().manual_seed(0))
    return torch.tensor(attr)[perm], torch.tensor(cls)[perm]


# ---------------------------------------------------------------- bias score


def test_bias_score_balanced_is_zero():
    attr, cls = _labels([[2, 2], [5, 5]])
    assert gm.bias_score(attr, cls, 2, 2) == 0.0


def test_bias_score_one_attribute_per_class_is_one():
    attr, cls = _labels([[4, 0], [0, 3]])
    assert math.isclose(gm.bias_score(attr, cls, 2, 2), 1.0)


def test_bias_score_three_one_split():
    # class 0: |3 - 1| / (4 * 1) = 0.5; class 1 balanced: 0; mean 0.25
    attr, cls = _labels([[3, 1], [2, 2]])
    assert math.isclose(gm.bias_score(attr, cls, 2, 2), 0.25)
    # the argument order matters: read as 2 classes of the attribute, the counts differ
    assert not math.isclose(gm.bias_score(cls, attr, 2, 2), 0.25)


def test_bias_score_three_attributes():
    # class 0 (4, 1, 1): (3 + 3 + 0) / (6 * 3) = 1/3; class 1 (3, 0, 0): (3 + 3 + 0) / (3 * 3) = 2/3
    attr, cls = _labels([[4, 1, 1], [3, 0, 0]])
    assert math.isclose(gm.bias_score(attr, cls, 3, 2), 0.5)


def test_bias_score_skips_empty_class_and_rejects_bad_labels():
    attr, cls = _labels([[3, 1], [0, 0], [4, 0]])
    assert math.isclose(gm.bias_score(attr, cls, 2, 3), (0.5 + 1.0) / 2)
    with pytest.raises(UserError, match="pred_attr"):
        gm.bias_score(torch.tensor([0, 2]), torch.tensor([0, 0]), 2, 1)
    with pytest.raises(UserError, match="one entry per image"):
        gm.bias_score(torch.tensor([0, 1]), torch.tensor([0]), 2, 1)


def test_attribute_shares():
    attr, cls = _labels([[3, 1], [0, 0], [1, 4]])
    shares = gm.attribute_shares(attr, cls, 2, 3)
    assert shares.shape == (3, 2)
    assert torch.allclose(shares[0], torch.tensor([0.75, 0.25], dtype=torch.float64))
    assert torch.allclose(shares[2], torch.tensor([0.2, 0.8], dtype=torch.float64))
    assert shares[1].isnan().all()


# ---------------------------------------------------------------- Fréchet distance


def _exact_gaussian_sample(mu: np.ndarray, var: np.ndarray, n: int, seed: int) -> torch.Tensor:
    """n rows whose sample mean is exactly ``mu`` and unbiased sample covariance exactly diag(var)."""
    z = np.random.default_rng(seed).normal(size=(n, mu.size))
    q, _ = np.linalg.qr(z - z.mean(0))  # orthonormal columns, each orthogonal to the ones vector
    return torch.from_numpy(q * math.sqrt(n - 1) * np.sqrt(var) + mu)


def test_frechet_distance_diagonal_gaussians_closed_form():
    mu_a, var_a = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 4.0, 0.25, 2.0])
    mu_b, var_b = np.array([1.0, 1.0, 0.0, 0.0]), np.array([9.0, 1.0, 0.25, 0.5])
    a = _exact_gaussian_sample(mu_a, var_a, 200, 0)
    b = _exact_gaussian_sample(mu_b, var_b, 300, 1)
    # the construction holds: the sample's own moments are the chosen ones
    assert np.allclose(a.numpy().mean(0), mu_a)
    assert np.allclose(np.cov(a.numpy(), rowvar=False), np.diag(var_a))
    expected = ((mu_a - mu_b) ** 2).sum() + (var_a + var_b - 2 * np.sqrt(var_a * var_b)).sum()
    # by hand: means 1 + 0 + 4 + 0.25; variances (1 + 9 - 6) + (4 + 1 - 4) + 0 + (2 + 0.5 - 2)
    assert math.isclose(expected, 5.25 + 5.5)
    assert math.isclose(gm.frechet_distance(a, b), expected, rel_tol=1e-9)
    assert math.isclose(gm.frechet_distance(b, a), expected, rel_tol=1e-9)
    # a common rotation leaves the distance unchanged (the covariances are no longer diagonal)
    rot, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(4, 4)))
    rot = torch.from_numpy(rot)
    assert math.isclose(gm.frechet_distance(a @ rot, b @ rot), expected, rel_tol=1e-7)


def test_frechet_distance_identical_sets_and_singular_covariance():
    x = torch.randn(500, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert abs(gm.frechet_distance(x, x)) < 1e-8
    few = x[:5]  # 5 samples in 16 dims: rank-4 covariance
    d = gm.frechet_distance(few, few)
    assert math.isfinite(d) and abs(d) < 1e-3
    assert math.isfinite(gm.frechet_distance(few, x[5:10] + 1.0))


def test_frechet_distance_retries_with_eps_when_sqrt_not_finite(monkeypatch):
    import scipy.linalg

    real_sqrtm, calls = scipy.linalg.sqrtm, []

    def first_nan(m):
        calls.append(m)
        return np.full_like(m, np.nan) if len(calls) == 1 else real_sqrtm(m)

    x = torch.randn(300, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    y = x * 1.3 + 0.2
    clean = gm.frechet_distance(x, y)
    monkeypatch.setattr(scipy.linalg, "sqrtm", first_nan)
    assert math.isclose(gm.frechet_distance(x, y, eps=1e-6), clean, rel_tol=1e-4)
    assert len(calls) == 2 and 1e-7 < np.abs(calls[1] - calls[0]).max() < 1e-4  # the retry adds eps I
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda m: np.full_like(m, np.nan))
    with pytest.raises(UserError, match="degenerate"):
        gm.frechet_distance(x, y)


def test_frechet_distance_rejects_too_few_samples():
    with pytest.raises(UserError, match="at least 2 samples"):
        gm.frechet_distance(torch.zeros(1, 3), torch.zeros(5, 3))
    with pytest.raises(UserError, match="same dimension"):
        gm.frechet_distance(torch.zeros(4, 3), torch.zeros(5, 2))


# ---------------------------------------------------------------- precision / recall


def _reference_pr(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def radii(x):
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        return np.sort(d, axis=1)[:, k]

    d = np.linalg.norm(fake[:, None] - real[None], axis=-1)  # (fake, real)
    return float((d <= radii(real)[None]).any(1).mean()), float((d <= radii(fake)[:, None]).any(0).mean())


def test_precision_recall_identical_and_far():
    x = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    assert gm.precision_recall(x, x.clone()) == (1.0, 1.0)
    assert gm.precision_recall(x, x + 100.0) == (0.0, 0.0)


def test_precision_recall_half_mode():
    # real: 0..19 on a line; fake: 0.1..9.1 covers the lower half.
    # k = 3: every fake lies 0.1 from a real point -> precision 1. Fake radii are 2, except 3 at
    # both ends (0.1 and 9.1); 9.1's ball reaches 12.1, 8.1's reaches 10.1 -> reals 0..12 covered.
    real = torch.arange(20.0)[:, None]
    fake = torch.arange(10.0)[:, None] + 0.1
    p, r = gm.precision_recall(real, fake, k=3)
    assert p == 1.0 and math.isclose(r, 13 / 20)


def test_precision_recall_ball_includes_its_boundary():
    # k = 1, real radii (1, 1, 2); the fake at 5 lies exactly on 3's ball (paper: <=)
    real = torch.tensor([[0.0], [1.0], [3.0]])
    fake = torch.tensor([[5.0], [7.0]])  # fake radii 2, 2: 5's ball reaches 3 -> recall 1/3
    p, r = gm.precision_recall(real, fake, k=1)
    assert p == 0.5 and math.isclose(r, 1 / 3)


def test_precision_recall_batched_matches_reference():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(90, 5, generator=g)
    fake = torch.randn(70, 5, generator=g) * 0.6 + 0.8
    ref = _reference_pr(real.double().numpy(), fake.double().numpy(), 3)
    assert 0.0 < ref[0] < 1.0 and 0.0 < ref[1] < 1.0
    assert gm.precision_recall(real, fake, 3, batch=7) == pytest.approx(ref)
    assert gm.precision_recall(real, fake, 3, batch=4096) == pytest.approx(ref)
    with pytest.raises(UserError, match="at least 4 samples"):
        gm.precision_recall(real[:3], fake, 3)


# ---------------------------------------------------------------- group agreement


def test_group_agreement_relabelled_partition_is_one():
    truth = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])
    assign = torch.tensor([7, 7, 3, 3, 3, 9, 9, 0])
    out = gm.group_agreement(assign, truth)
    assert math.isclose(out["ari"], 1.0) and math.isclose(out["nmi"], 1.0)


def test_group_agreement_independent_is_near_zero():
    g = torch.Generator().manual_seed(0)
    assign = torch.randint(0, 3, (3000,), generator=g)
    truth = torch.randint(0, 4, (3000,), generator=g)
    out = gm.group_agreement(assign, truth)
    assert abs(out["ari"]) < 0.01 and 0.0 <= out["nmi"] < 0.01


def test_group_agreement_hand_computed():
    # table [[2, 1, 0], [0, 1, 2]]: index 2, rows 3 + 3 = 6, cols 1 + 1 + 1 = 3, E = 6 * 3 / 15 = 1.2
    # ARI = (2 - 1.2) / (4.5 - 1.2) = 8 / 33. MI = (2/3) log 2, H = log 2, log 3 -> NMI = (4/3) log 2 / log 6
    out = gm.group_agreement(torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert math.isclose(out["ari"], 8 / 33)
    assert math.isclose(out["nmi"], 4 / 3 * math.log(2) / math.log(6))


def test_group_agreement_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(3)
    truth = torch.randint(0, 4, (400,), generator=g)
    assign = torch.where(torch.rand(400, generator=g) < 0.6, truth, torch.randint(0, 5, (400,), generator=g))
    out = gm.group_agreement(assign, truth)
    assert math.isclose(out["ari"], metrics.adjusted_rand_score(truth.numpy(), assign.numpy()), rel_tol=1e-9)
    assert math.isclose(out["nmi"], metrics.normalized_mutual_info_score(truth.numpy(), assign.numpy()),
                        rel_tol=1e-9)
    for trivial in (torch.zeros(5, dtype=torch.long), torch.arange(5)):
        assert gm.group_agreement(trivial, trivial) == {"ari": 1.0, "nmi": 1.0}
