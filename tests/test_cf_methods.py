"""Mechanisms of the CF methods: each test fails when its mechanism is broken."""

import math

import numpy as np
import pytest
import torch

from harness.datasets.amazon import AmazonDataModule, RecData, _csr
from harness.methods.aurl import AURL, gaussian_uniformity, mmd2
from harness.methods.cf import BPR, IPS, LightGCN, gather_rows, split_group
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
def test_objective_decreases_its_loss(cls, backbone):
    torch.manual_seed(0)
    d = tiny_data()
    m = cls(d, backbone=backbone, dim=8, lr=0.05)
    batch = (d.train_user, d.train_item, torch.remainder(d.train_item + 1, d.n_items))
    opt = m.configure_optimizers()
    first = None
    for _ in range(30):
        torch.manual_seed(1)  # same group draws each step for AURL
        loss, _ = m.objective(batch)
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
        torch.manual_seed(1)
        losses.append(m.objective(batch)[0].item())
    assert losses[1] > losses[0]  # MMD^2 >= 0 is added
    assert losses[2] < losses[0]  # log-mean-exp uniformity is negative


def test_gather_rows_gradient_equals_indexing_with_repeats():
    torch.manual_seed(0)
    w = torch.randn(7, 3, requires_grad=True)
    idx = torch.tensor([0, 3, 3, 6, 0, 0])
    g = torch.randn(6, 3)
    (gather_rows(w, idx) * g).sum().backward()
    mine, w.grad = w.grad.clone(), None
    (w[idx] * g).sum().backward()
    assert torch.equal(gather_rows(w, idx), w[idx])
    assert torch.allclose(mine, w.grad, atol=1e-6)


@pytest.mark.parametrize("backbone", ["mf", "lightgcn"])
@pytest.mark.parametrize("weighted", [False, True])
def test_fused_bpr_matches_the_formula_and_its_gradient(backbone, weighted):
    """The fused BPR (closed-form backward, rows reused by L2) against autograd on the plain
    formula: -mean w * log sigmoid(e_u.(e_i - e_j)) + reg * L2 of the ego rows."""
    torch.manual_seed(0)
    d = tiny_data()
    m = BPR(d, backbone=backbone, dim=8, reg=0.3)
    u, i, j = torch.tensor([0, 1, 1, 5, 0]), torch.tensor([0, 2, 2, 4, 1]), torch.tensor([3, 4, 0, 0, 3])
    w = torch.rand(5) + 0.5 if weighted else None

    def plain() -> torch.Tensor:
        users, items = m.embeddings()
        eu, ei, ej = users[u], items[i], items[j]
        per = -torch.nn.functional.logsigmoid((eu * (ei - ej)).sum(-1))
        bpr = (per * w).mean() if w is not None else per.mean()
        wu, wi = m.encoder.user.weight, m.encoder.item.weight
        l2 = (wu[u].pow(2).sum() + wi[i].pow(2).sum() + wi[j].pow(2).sum()) / (2 * len(u))
        return bpr + 0.3 * l2

    ref = plain()
    ref.backward()
    expected = [p.grad.clone() for p in m.encoder.parameters()]
    bpr, emb = m.bpr_loss(u, i, j, weight=w)  # L2 from the returned rows (AURL's path)
    for loss in (bpr + 0.3 * m.l2(u, i, j, emb), m.bpr_loss(u, i, j, weight=w, reg=0.3)[0]):
        m.zero_grad()
        loss.backward()
        assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
        for mine, theirs in zip([p.grad for p in m.encoder.parameters()], expected, strict=True):
            assert torch.allclose(mine, theirs, atol=1e-6), (mine - theirs).abs().max()


def test_pair_set_bitmap_and_sorted_agree():
    from harness.datasets.amazon import _PairSet

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 5000, 800)
    q = rng.integers(0, 5000, 3000)
    truth = np.isin(q, codes)
    small = _PairSet(codes, 5000)
    assert small.bits is not None and np.array_equal(small.contains(q), truth)
    big = _PairSet(codes, _PairSet.BITMAP_LIMIT + 1)
    assert big.bits is None and np.array_equal(big.contains(q), truth)


def _grouped_datamodule(group: int, world: int = 1, rank: int = 0) -> AmazonDataModule:
    dm = AmazonDataModule(batch_size=256, group_batches=group, seed=3,
                          synthetic={"n_users": 300, "n_items": 200, "n_topics": 5})
    dm._rank_world = lambda: (rank, world)  # type: ignore[method-assign]
    return dm


def test_grouped_loader_covers_the_epoch_once_with_valid_negatives(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dm = _grouped_datamodule(group=3)
    info = dm.info
    loader = dm.train_dataloader()
    groups = [split_group(g) for g in loader]
    sizes = [len(g) for g in groups]
    n_batches = -(-len(info.train_user) // 256)
    assert sum(sizes) == n_batches and max(sizes) == 3 and len(groups) == len(loader)
    u = torch.cat([b[0] for g in groups for b in g])
    i = torch.cat([b[1] for g in groups for b in g])
    neg = torch.cat([b[2] for g in groups for b in g])
    pairs = sorted(zip(u.tolist(), i.tolist(), strict=True))
    assert pairs == sorted(zip(info.train_user.tolist(), info.train_item.tolist(), strict=True))
    known = set(pairs)
    assert not any((a, b) in known for a, b in zip(u.tolist(), neg.tolist(), strict=True))
    # two ranks' shares of every global batch are exactly the single-process batch
    shares = [[split_group(g) for g in _grouped_datamodule(3, 2, r).train_dataloader()]
              for r in (0, 1)]
    for g, g0, g1 in zip(groups, *shares, strict=True):
        for b, b0, b1 in zip(g, g0, g1, strict=True):
            for t, t0, t1 in zip(b, b0, b1, strict=True):
                assert torch.equal(t[0::2], t0) and torch.equal(t[1::2], t1)


def test_a_lightning_step_takes_one_adam_step_per_batch_of_its_group(tmp_path, monkeypatch):
    """Manual optimisation over a group equals the plain loop: zero_grad, backward, Adam step
    per batch, in order (parameters after one epoch agree; the step count is the batches')."""
    import lightning.pytorch as L

    monkeypatch.chdir(tmp_path)
    dm = _grouped_datamodule(group=4)
    batches = [b for g in dm.train_dataloader() for b in split_group(g)]
    torch.manual_seed(0)
    model = BPR(dm.info, backbone="mf", dim=8, lr=0.01, reg=0.01)
    torch.manual_seed(0)
    replay = BPR(dm.info, backbone="mf", dim=8, lr=0.01, reg=0.01)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0,
                        use_distributed_sampler=False)
    trainer.fit(model, train_dataloaders=dm.train_dataloader())
    assert trainer.global_step == len(batches)
    opt = torch.optim.Adam(replay.parameters(), lr=0.01)
    for b in batches:
        opt.zero_grad()
        replay.objective(b)[0].backward()
        opt.step()
    for a, b in zip(model.parameters(), replay.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
