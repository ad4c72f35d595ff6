"""Mechanisms of the CF methods: each test fails when its mechanism is broken."""

import math

import numpy as np
import pytest
import torch

from harness.datasets.amazon import RecData, _csr
from harness.methods.aurl import AURL, gaussian_uniformity, mmd2
from harness.methods.cf import BPR, IPS, LightGCN
from harness.methods.directau import DirectAU, alignment, uniformity


def tiny_data(n_users: int = 6, n_items: int = 5) -> RecData:
    rng = np.random.default_rng(0)
    pairs = {(u, i) for u in range(n_users) for i in range(n_items) if rng.random() < 0.5}
    pairs |= {(u, u % n_items) for u in range(n_users)} | {(0, i) for i in range(n_items)}
    user = np.array(sorted(p[0] for p in pairs))
    item = np.array([p[1] for p in sorted(pairs)])
    ptr, idx = _csr(user, item, n_users)
    pop = np.bincount(item, minlength=n_items)
    head = np.zeros(n_items, bool)
    head[np.argmax(pop)] = True
    active = np.zeros(n_users, bool)
    active[0] = True
    empty = torch.zeros(n_users + 1, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return RecData(n_users, n_items, torch.from_numpy(user), torch.from_numpy(item), ptr, idx,
                   *empty, *empty, torch.from_numpy(pop), torch.from_numpy(head),
                   torch.from_numpy(active))


def test_lightgcn_propagation_matches_dense_formula():
    d = tiny_data()
    enc = LightGCN(d.n_users, d.n_items, dim=4, n_layers=2, train_user=d.train_user,
                   train_item=d.train_item)
    n = d.n_users + d.n_items
    a = torch.zeros(n, n)
    a[d.train_user, d.train_item + d.n_users] = 1
    a[d.train_item + d.n_users, d.train_user] = 1
    deg = a.sum(1).clamp(min=1)
    a_hat = a / deg.sqrt()[:, None] / deg.sqrt()[None, :]
    e0 = torch.cat([enc.user.weight, enc.item.weight]).detach()
    expected = (e0 + a_hat @ e0 + a_hat @ a_hat @ e0) / 3
    users, items = enc()
    assert torch.allclose(torch.cat([users, items]).detach(), expected, atol=1e-5)


def test_lightgcn_gradients_flow_through_the_graph():
    d = tiny_data()
    enc = LightGCN(d.n_users, d.n_items, 4, 2, d.train_user, d.train_item)
    users, _ = enc()
    users[0].sum().backward()
    # user 0 interacted with every item, so every item's ego embedding receives gradient
    assert (enc.item.weight.grad.abs().sum(1) > 0).all()


def test_lightgcn_gradients_equal_the_dense_formula():
    """The symmetric-product backward (no transpose of the sparse matrix) gives the gradient
    of the dense propagation (the sparse matrix's values were computed in float32: 1e-6)."""
    torch.manual_seed(0)
    d = tiny_data()
    enc = LightGCN(d.n_users, d.n_items, 4, 3, d.train_user, d.train_item).double()
    enc._adj = {torch.device("cpu"): enc.adjacency(torch.device("cpu")).to(torch.float64)}
    n = d.n_users + d.n_items
    a = torch.zeros(n, n, dtype=torch.float64)
    a[d.train_user, d.train_item + d.n_users] = 1
    a[d.train_item + d.n_users, d.train_user] = 1
    deg = a.sum(1).clamp(min=1)
    a_hat = a / deg.sqrt()[:, None] / deg.sqrt()[None, :]
    w = torch.randn(n, 4, dtype=torch.float64)  # an arbitrary loss: sum(w * E)
    users, items = enc()
    (torch.cat([users, items]) * w).sum().backward()
    e0 = torch.cat([enc.user.weight, enc.item.weight]).detach().requires_grad_()
    layers = [e0]
    for _ in range(3):
        layers.append(a_hat @ layers[-1])
    (torch.stack(layers).mean(0) * w).sum().backward()
    got = torch.cat([enc.user.weight.grad, enc.item.weight.grad])
    assert torch.allclose(got, e0.grad, atol=1e-6)


def test_mf_starts_xavier_normal():
    """RecBole's BPR initialisation (std sqrt(2 / (rows + dim))), not LightGCN's N(0, 0.1)."""
    d = tiny_data(n_users=2000, n_items=1000)
    enc = BPR(d, backbone="mf", dim=64).encoder
    assert enc.user.weight.std().item() == pytest.approx(math.sqrt(2 / 2064), rel=0.03)
    assert enc.item.weight.std().item() == pytest.approx(math.sqrt(2 / 1064), rel=0.03)


def test_l2_reuses_the_batch_embeddings_on_mf_only():
    d = tiny_data()
    u, i, j = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), torch.tensor([3, 4, 0])
    for backbone in ("mf", "lightgcn"):
        model = BPR(d, backbone=backbone)
        _, emb = model.bpr_loss(u, i, j)
        assert torch.allclose(model.l2(u, i, j, emb), model.l2(u, i, j))


def test_mmd_zero_for_same_sample_positive_for_shifted():
    torch.manual_seed(0)
    x = torch.randn(200, 8)
    assert mmd2(x, x).abs().item() < 1e-6
    same_dist = mmd2(x[:100], x[100:]).item()
    shifted = mmd2(x[:100], x[100:] + 1.5).item()
    scaled = mmd2(x[:100], 3 * x[100:]).item()
    assert shifted > 10 * abs(same_dist) and scaled > 10 * abs(same_dist)


def test_mmd_gradient_pulls_tail_toward_head():
    torch.manual_seed(0)
    head = torch.randn(64, 4) + 2.0
    tail = torch.randn(64, 4).requires_grad_()
    before = mmd2(head, tail)
    before.backward()
    with torch.no_grad():
        moved = tail - 0.5 * tail.grad / tail.grad.norm()
    assert mmd2(head, moved).item() < before.item()


def test_uniformity_lower_for_spread_than_collapsed_points():
    torch.manual_seed(0)
    spread = torch.nn.functional.normalize(torch.randn(100, 8), dim=-1)
    collapsed = torch.nn.functional.normalize(torch.ones(100, 8) + 0.01 * torch.randn(100, 8), dim=-1)
    assert gaussian_uniformity(spread).item() < gaussian_uniformity(collapsed).item() - 1.0
    assert math.isclose(uniformity(spread).item(), gaussian_uniformity(spread).item(), rel_tol=1e-5)


def test_directau_alignment_ignores_norm():
    x = torch.randn(10, 4)
    assert alignment(x, 5 * x).item() < 1e-10
    assert alignment(x, -x).item() == pytest.approx(4.0, rel=1e-5)


def test_ips_weights_follow_inverse_power_of_popularity():
    d = tiny_data()
    m = IPS(d, eta=0.5, max_weight=100.0)
    pop = d.item_popularity.float()
    w = m.ips_weight
    # w_i proportional to pop_i^-0.5, normalised to mean 1 over training interactions
    ratio = w * pop.sqrt()
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-5)
    assert w[d.train_item].mean().item() == pytest.approx(1.0, rel=1e-5)
    capped = IPS(d, eta=5.0, max_weight=2.0).ips_weight
    assert capped.max() / capped.min() <= 2.0 + 1e-5


def test_aurl_group_draws_stay_in_their_groups():
    d = tiny_data()
    m = AURL(d, group_sample=50)
    heads = m._draw(m.head_ids)
    tails = m._draw(m.tail_ids)
    assert d.head_item[heads].all() and (~d.head_item[tails]).all()
    assert d.active_user[m._draw(m.active_ids)].all()
    assert (~d.active_user[m._draw(m.inactive_ids)]).all()


@pytest.mark.parametrize("cls", [BPR, IPS, DirectAU, AURL])
@pytest.mark.parametrize("backbone", ["mf", "lightgcn"])
def test_training_step_decreases_its_loss(cls, backbone):
    torch.manual_seed(0)
    d = tiny_data()
    m = cls(d, backbone=backbone, dim=8, lr=0.05)
    m.log = m.log_dict = lambda *a, **k: None  # outside a Trainer
    batch = (d.train_user, d.train_item, torch.remainder(d.train_item + 1, d.n_items))
    opt = m.configure_optimizers()
    first = None
    for _ in range(30):
        torch.manual_seed(1)  # same group draws each step for AURL
        loss = m.training_step(batch, 0)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_aurl_regularisers_change_the_objective():
    torch.manual_seed(0)
    d = tiny_data()
    batch = (d.train_user, d.train_item, torch.remainder(d.train_item + 1, d.n_items))
    losses = []
    for ga, gu in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0)):
        torch.manual_seed(0)
        m = AURL(d, lambda_ga=ga, lambda_gu=gu, dim=8)
        m.log_dict = lambda *a, **k: None
        torch.manual_seed(1)
        losses.append(m.training_step(batch, 0).item())
    assert losses[1] > losses[0]  # MMD^2 >= 0 is added
    assert losses[2] < losses[0]  # log-mean-exp uniformity is negative
