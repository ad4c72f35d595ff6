"""TSformer / Swin window machinery and the autoregressive U-Net baseline (methods/swin.py)."""

import itertools
import math

import pytest
import torch

from harness.methods import swin
from harness.methods.swin import (
    MASK_VALUE,
    CrossSwinBlock,
    SwinBlock,
    TSformerNet,
    UNet2d,
    WindowAttention,
    relative_position_index,
    rollout,
    shifted_window_mask,
    window_partition,
    window_reverse,
)


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Seeded; one intra-op thread: these small ops slow down many-fold when threads of a loaded
    machine spin against each other."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ window partition


@pytest.mark.parametrize(
    ("grid", "window"),
    [((4, 6, 8), (2, 3, 4)), ((4, 4, 8, 8), (2, 2, 4, 4)), ((3, 3, 6, 7), (2, 2, 4, 4)), ((5, 7), (4, 4))],
)
def test_window_partition_round_trip(grid, window):
    x = torch.randn(2, *grid, 5)
    w = window_partition(x, window)
    n_windows = math.prod(math.ceil(g / s) for g, s in zip(grid, window, strict=True))
    assert w.shape == (2 * n_windows, math.prod(window), 5)
    assert torch.equal(window_reverse(w, window, grid), x)
    # the first window is the grid's leading corner, flattened row-major
    corner = x[(0, *(slice(0, s) for s in window))]
    assert torch.equal(w[0], corner.reshape(-1, 5))


def test_window_partition_pads_at_the_end_with_zeros():
    x = torch.randn(1, 6, 5, 3) + 10.0
    w = window_partition(x, (4, 4))  # padded to 8 x 8: 4 windows
    assert w.shape == (4, 16, 3)
    last = w[3].reshape(4, 4, 3)  # rows 4..7, cols 4..7: only rows 4,5 x col 4 are real
    assert torch.equal(last[:2, :1], x[0, 4:6, 4:5])
    assert (last[2:] == 0).all() and (last[:, 1:] == 0).all()


# ------------------------------------------------------------------ shifted window mask


def test_shifted_window_mask_by_hand_1d():
    # grid 8, window 4, shift 2: rolled positions hold original [2 3 4 5 | 6 7 0 1]
    m = shifted_window_mask((8,), (4,), (2,))
    assert m.shape == (2, 4, 4)
    assert (m[0] == 0).all()
    blocked = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    assert (m[1][blocked] <= -1e4).all() and (m[1][~blocked] == 0).all()
    assert MASK_VALUE <= -1e4
    assert (shifted_window_mask((8,), (4,), (0,)) == 0).all()


def test_padding_is_masked_as_keys_only():
    m = shifted_window_mask((6,), (4,), (0,))  # second window: 2 real + 2 padded tokens
    assert (m[0] == 0).all()
    assert (m[1][:, :2] == 0).all() and (m[1][:, 2:] == MASK_VALUE).all()


def test_shifted_window_mask_allows_exactly_true_neighbours_3d():
    grid, window, shift = (8, 8, 4), (4, 4, 2), (2, 2, 1)
    coords = torch.stack(torch.meshgrid(*(torch.arange(g) for g in grid), indexing="ij"), -1)[None]
    rolled = torch.roll(coords, [-s for s in shift], (1, 2, 3))
    orig = window_partition(rolled, window)  # [nW, N, 3] original coordinates in each window
    near = ((orig[:, :, None] - orig[:, None, :]).abs() < torch.tensor(window)).all(-1)
    m = shifted_window_mask(grid, window, shift)
    assert near.shape == m.shape
    assert torch.equal(m == 0, near)  # no pair from opposite edges, every true neighbour pair kept
    assert not near.all()  # the roll did put far-apart tokens into common windows


# ------------------------------------------------------------------ relative position bias


def test_relative_position_index_shares_entries_by_offset():
    window = (2, 3, 4)
    idx = relative_position_index(window)
    size = math.prod(2 * w - 1 for w in window)
    assert idx.shape == (24, 24) and int(idx.max()) + 1 == size and idx.unique().numel() == size
    assert torch.equal(idx + idx.T, torch.full_like(idx, size - 1))  # offset -> -offset
    assert (idx.diagonal() == (size - 1) // 2).all()
    pos = list(itertools.product(*(range(w) for w in window)))
    by_offset: dict[tuple, int] = {}
    for (i, a), (j, b) in itertools.product(enumerate(pos), repeat=2):
        off = tuple(p - q for p, q in zip(a, b, strict=True))
        assert by_offset.setdefault(off, int(idx[i, j])) == int(idx[i, j])  # same offset, same row
    assert len(set(by_offset.values())) == len(by_offset)  # different offsets, different rows
    attn = WindowAttention(8, 2, window)
    assert attn.bias_table.shape == (size, 2)
    bias = attn.position_bias()
    assert torch.equal(bias[:, 5, 17], attn.bias_table[idx[5, 17]])


def test_relative_position_index_clipped_and_cross_windows():
    big, small = relative_position_index((2, 4)), relative_position_index((1, 2), table_window=(2, 4))
    pos_b = list(itertools.product(range(2), range(4)))
    pos_s = list(itertools.product(range(1), range(2)))
    for i, j in itertools.product(range(2), repeat=2):  # same offset in the clipped window, same row
        assert small[i, j] == big[pos_b.index(pos_s[i]), pos_b.index(pos_s[j])]
    cross = relative_position_index((3, 2), (2, 2))  # e.g. 3 leads x 2 input days, 2 lat
    assert cross.shape == (6, 4) and int(cross.max()) + 1 == (3 + 2 - 1) * 3
    assert WindowAttention(8, 2, (3, 2), (2, 2)).bias_table.shape == (12, 2)


def test_fused_and_explicit_attention_agree():
    attn = WindowAttention(16, 4, (2, 4), (3, 4))
    x, kv = torch.randn(6, 8, 16), torch.randn(6, 12, 16)
    mask = torch.zeros(3, 8, 12)
    mask[1, :, 5:] = MASK_VALUE
    outs, grads = [], []
    for fused in (True, False):
        attn.fused = fused
        attn.zero_grad()
        y = attn(x, kv, mask=mask)
        y.square().sum().backward()
        outs.append(y)
        grads.append(attn.bias_table.grad.clone())
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)
    assert grads[0].abs().sum() > 0


# ------------------------------------------------------------------ locality


def _bump(c: int) -> torch.Tensor:
    """A perturbation of one token that pre-norm LayerNorm does not remove (not a constant shift)."""
    return 3.0 * torch.linspace(-1.0, 1.0, c) ** 3


def _changed(block, x, src, dst, *extra) -> bool:
    with torch.no_grad():
        y0 = block(x, *extra)
        x2 = x.clone()
        x2[(0, *src)] += _bump(x.shape[-1])
        y1 = block(x2, *extra)
    return not torch.allclose(y0[(0, *dst)], y1[(0, *dst)], atol=1e-6)


def test_regular_window_block_is_local():
    blk = SwinBlock(8, 2, (4, 4)).eval()
    x = torch.randn(1, 8, 8, 8)
    assert not _changed(blk, x, (7, 7), (0, 0))  # other window
    assert not _changed(blk, x, (0, 4), (0, 3))  # adjacent token, other window
    assert _changed(blk, x, (3, 3), (0, 0))  # same window
    blk4 = SwinBlock(8, 2, (2, 2, 4, 4)).eval()  # 4-D grid with padding on every axis
    x4 = torch.randn(1, 3, 3, 6, 7, 8)
    assert not _changed(blk4, x4, (2, 2, 5, 6), (0, 0, 0, 0))
    assert _changed(blk4, x4, (1, 1, 3, 3), (0, 0, 0, 0))


def test_shifted_block_does_not_wrap_around(monkeypatch):
    blk = SwinBlock(8, 2, (4, 4), shift=True).eval()
    x = torch.randn(1, 8, 8, 8)
    assert not _changed(blk, x, (0, 7), (0, 0))  # east edge -> west edge
    assert not _changed(blk, x, (7, 3), (0, 3))  # south edge -> north edge
    assert _changed(blk, x, (0, 1), (0, 0))  # same shifted window, same region
    assert _changed(blk, x, (2, 2), (3, 3))  # shifted window straddling the regular windows
    monkeypatch.setattr(blk._masks, "get", lambda *a, **k: None)  # without the region mask it would wrap
    assert _changed(blk, x, (0, 7), (0, 0))


def test_shifted_block_no_wrap_on_time_axis():
    blk = SwinBlock(8, 2, (2, 4), shift=True).eval()  # (time, lon), time shift 1
    x = torch.randn(1, 4, 8, 8)
    assert not _changed(blk, x, (3, 0), (0, 0))  # last day -> first day
    assert _changed(blk, x, (2, 0), (1, 0))


def test_cross_block_sees_all_input_days_in_its_window_only():
    blk = CrossSwinBlock(8, 2, (3, 4, 4), (2, 4, 4)).eval()  # 3 leads, 2 input days
    q, kv = torch.randn(1, 3, 8, 8, 8), torch.randn(1, 2, 8, 8, 8)

    def changed(src, dst):
        with torch.no_grad():
            y0 = blk(q, kv)
            kv2 = kv.clone()
            kv2[(0, *src)] += _bump(kv.shape[-1])
            return not torch.allclose(y0[(0, *dst)], blk(q, kv2)[(0, *dst)], atol=1e-6)

    assert changed((0, 1, 1), (2, 0, 0)) and changed((1, 3, 3), (0, 0, 0))
    assert not changed((1, 7, 7), (0, 0, 0)) and not changed((0, 0, 4), (2, 0, 3))


# ------------------------------------------------------------------ TSformer


def _fields(b, t, c3, c2, d, h, w):
    return torch.randn(b, t, c3, d, h, w), torch.randn(b, t, c2, h, w)


def test_tsformer_shapes_and_all_leads_in_one_call():
    net = TSformerNet(3, 1, 2, t_in=5, t_out=10, grid=(32, 32), dim=16, heads=2)
    x3, x2 = _fields(2, 5, 3, 1, 2, 32, 32)
    y3, y2 = net(x3, x2)
    assert y3.shape == (2, 10, 3, 2, 32, 32) and y2.shape == (2, 10, 1, 32, 32)
    assert torch.isfinite(y3).all() and torch.isfinite(y2).all()


def test_tsformer_non_square_non_divisible_grid_and_masks():
    net = TSformerNet(2, 2, 3, t_in=3, t_out=4, grid=(20, 27), dim=16, heads=2, window=(2, 2, 4, 4))
    x3, x2 = _fields(1, 3, 2, 2, 3, 20, 27)
    mask3 = torch.rand(3, 20, 27) > 0.3
    mask2 = mask3[0]
    y3, y2 = net(x3, x2, mask3, mask2)
    assert y3.shape == (1, 4, 2, 3, 20, 27) and y2.shape == (1, 4, 2, 20, 27)
    assert (y3[..., ~mask3] == 0).all() and (y2[..., ~mask2] == 0).all()
    assert (y3[..., mask3] != 0).all()


def test_tsformer_gradients_reach_every_parameter():
    net = TSformerNet(2, 1, 2, t_in=3, t_out=4, grid=(16, 12), dim=16, heads=2)
    x3, x2 = _fields(2, 3, 2, 1, 2, 16, 12)
    y3, y2 = net(x3, x2)
    (y3.square().mean() + y2.square().mean()).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


def test_tsformer_first_lead_depends_on_every_input_day():
    net = TSformerNet(2, 1, 2, t_in=3, t_out=4, grid=(16, 16), dim=16, heads=2).eval()
    x3, x2 = _fields(1, 3, 2, 1, 2, 16, 16)
    with torch.no_grad():
        y3, y2 = net(x3, x2)
        for day in range(3):  # not only the last day (persistence): encoder + cross-attention
            p3, p2 = x3.clone(), x2.clone()
            p3[:, day, :, :, 4:8, 4:8] += 1.0
            p2[:, day, :, 4:8, 4:8] += 1.0
            z3, z2 = net(p3, p2)
            assert not torch.allclose(z3[:, 0], y3[:, 0]) and not torch.allclose(z2[:, 0], y2[:, 0])
    # persistence + delta: the untrained net stays close to the last input day
    assert (y3 - x3[:, -1:]).abs().mean() < 0.5 * (x3[:, -1:] - x3[:, :1]).abs().mean()


def test_tsformer_overfits_a_tiny_batch():
    net = TSformerNet(2, 1, 2, t_in=2, t_out=3, grid=(8, 8), dim=16, heads=2, blocks=(1, 1), mlp_ratio=2.0)
    x3, x2 = _fields(2, 2, 2, 1, 2, 8, 8)
    t3, t2 = _fields(2, 3, 2, 1, 2, 8, 8)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        y3, y2 = net(x3, x2)
        loss = torch.cat([(y3 - t3).flatten(), (y2 - t2).flatten()]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10


# ------------------------------------------------------------------ U-Net baseline


def test_unet_step_shapes_and_residual():
    for mode in ("zeros", "reflect"):
        net = UNet2d(3, 2, 2, t_in=4, base=8, padding_mode=mode)
        x3, x2 = _fields(2, 6, 3, 2, 2, 20, 27)  # longer history: the last t_in days are used
        y3, y2 = net(x3, x2)
        assert y3.shape == (2, 1, 3, 2, 20, 27) and y2.shape == (2, 1, 2, 20, 27)
    with pytest.raises(ValueError):
        UNet2d(3, 2, 2, t_in=4, padding_mode="circular")


def test_rollout_feeds_predictions_back():
    net = UNet2d(3, 1, 2, t_in=3, base=8).eval()
    calls = []

    class Recorder(torch.nn.Module):
        t_in = 3

        def forward(self, x3, x2, mask3=None, mask2=None):
            out = net(x3, x2, mask3, mask2)
            calls.append(((x3.clone(), x2.clone()), out))
            return out

    x3, x2 = _fields(2, 5, 3, 1, 2, 16, 16)
    mask3 = torch.ones(2, 16, 16)
    mask3[:, :3] = 0
    with torch.no_grad():
        y3, y2 = rollout(Recorder(), x3, x2, steps=4, mask3=mask3)
    assert y3.shape == (2, 4, 3, 2, 16, 16) and y2.shape == (2, 4, 1, 16, 16)
    assert len(calls) == 4
    assert torch.equal(calls[0][0][0], x3[:, -3:]) and torch.equal(calls[0][0][1], x2[:, -3:])
    for k in range(1, 4):
        (in3, in2), _ = calls[k]
        prev3, prev2 = calls[k - 1][1]
        assert torch.equal(in3[:, -1:], prev3) and torch.equal(in2[:, -1:], prev2)  # step k reads step k-1
        assert torch.equal(in3[:, :-1], calls[k - 1][0][0][:, 1:])  # the window slides by one day
        assert torch.equal(y3[:, k : k + 1], calls[k][1][0])
    assert (y3[..., :3, :] == 0).all()


def test_module_has_no_circular_padding():
    net = UNet2d(1, 1, 1, t_in=2, base=8, padding_mode="reflect")
    assert all(m.padding_mode != "circular" for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert swin.effective_window((3, 8), (4, 4), (2, 2)) == ((3, 4), (0, 2))
