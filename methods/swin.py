"""Swin-Transformer network modules for ocean forecasting: TSformer and a U-Net baseline.

* Generic N-D (shifted-)window machinery: Swin Transformer (Liu et al., ICCV 2021, Sec. 3.2,
  Eq. 4 for the relative position bias), extended to 3-D/4-D token grids as in Video Swin /
  Pangu-Weather (Bi et al., Nature 2023) / Aurora. Shifted windows do NOT wrap around: the
  domain is regional, so after the cyclic roll tokens that came from opposite edges are
  masked from each other (the standard Swin region mask, on every shifted axis).
* ``TSformerNet``: a non-autoregressive 3-D Swin U-Net. Pangu-style patch embedding of the
  3-D fields over (depth, lat, lon) plus the surface fields as one more "depth" level gives a
  (time, level, lat, lon) token grid; a two-stage encoder; a decoder whose lead-time query
  tokens cross-attend (window attention, all input days on the key side) to the encoder and
  emit every lead day in one pass, as a residual on top of the last input day.
* ``UNet2d`` + ``rollout``: the autoregressive convolutional U-Net baseline (Ronneberger et
  al., 2015) stepping one day at a time.

Tensors on token grids are channels-last: ``[B, *grid, C]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Additive attention-mask value: large negative but finite, so a fully masked row (a padding
# query in a window of foreign keys) gives a harmless uniform softmax instead of NaN, and it
# stays representable in float16/bfloat16.
MASK_VALUE = -1.0e4

Ints = tuple[int, ...]


# ----------------------------------------------------------------------------- windows


def effective_window(grid: Sequence[int], window: Sequence[int], shift: Sequence[int]) -> tuple[Ints, Ints]:
    """Window and shift actually used on ``grid``: an axis whose window is >= its size is one
    window spanning the whole axis and is never shifted."""
    if not len(grid) == len(window) == len(shift):
        raise ValueError(f"grid {tuple(grid)}, window {tuple(window)}, shift {tuple(shift)}: ranks differ")
    win = tuple(min(int(w), int(g)) for g, w in zip(grid, window, strict=True))
    sh = tuple(0 if w >= g else int(s) % w for g, w, s in zip(grid, window, shift, strict=True))
    return win, sh


def padded_grid(grid: Sequence[int], window: Sequence[int]) -> Ints:
    """Grid rounded up to a multiple of the window on every axis."""
    return tuple(math.ceil(g / w) * w for g, w in zip(grid, window, strict=True))


def pad_to_window(x: Tensor, window: Sequence[int]) -> Tensor:
    """Zero-pad ``x [B, *grid, C]`` at the end of every grid axis to a multiple of ``window``."""
    grid = x.shape[1:-1]
    extra = [p - g for g, p in zip(grid, padded_grid(grid, window), strict=True)]
    if not any(extra):
        return x
    pad: list[int] = [0, 0]  # channels (last axis) first, as F.pad counts from the end
    for e in reversed(extra):
        pad += [0, e]
    return F.pad(x, pad)


def window_partition(x: Tensor, window: Sequence[int]) -> Tensor:
    """``x [B, *grid, C]`` -> windows ``[B * nW, prod(window), C]`` (grid zero-padded at the end
    when not divisible); windows are ordered row-major over the window counts per axis."""
    x = pad_to_window(x, window)
    b, grid, c = x.shape[0], x.shape[1:-1], x.shape[-1]
    n = len(window)
    split: list[int] = []
    for g, w in zip(grid, window, strict=True):
        split += [g // w, w]
    x = x.reshape(b, *split, c)
    perm = [0, *range(1, 2 * n, 2), *range(2, 2 * n + 1, 2), 2 * n + 1]
    return x.permute(perm).reshape(-1, math.prod(window), c)


def window_reverse(windows: Tensor, window: Sequence[int], grid: Sequence[int]) -> Tensor:
    """Inverse of :func:`window_partition`: ``[B * nW, prod(window), C]`` -> ``[B, *grid, C]``,
    cropping the padding (``grid`` is the unpadded grid)."""
    n = len(window)
    pgrid = padded_grid(grid, window)
    counts = [p // w for p, w in zip(pgrid, window, strict=True)]
    c = windows.shape[-1]
    x = windows.reshape(-1, *counts, *window, c)
    perm = [0]
    for i in range(n):
        perm += [1 + i, 1 + n + i]
    x = x.permute(*perm, 2 * n + 1).reshape(-1, *pgrid, c)
    if tuple(pgrid) != tuple(grid):
        x = x[(slice(None), *(slice(0, g) for g in grid))]
    return x


def _region_labels(grid: Ints, window: Ints, shift: Ints) -> tuple[Tensor, Tensor]:
    """Per window token of the padded, rolled grid: a region label (which axes the token wrapped
    around on in the cyclic roll by ``-shift``) and whether it is padding. ``[nW, N]`` each."""
    pgrid = padded_grid(grid, window)
    label = torch.zeros(pgrid, dtype=torch.long)
    pad = torch.zeros(pgrid, dtype=torch.bool)
    for axis, (g, p, s) in enumerate(zip(grid, pgrid, shift, strict=True)):
        orig = (torch.arange(p) + s) % p  # original index held at each rolled position
        shape = [1] * len(pgrid)
        shape[axis] = p
        label = label * 2 + (orig < s).long().view(shape)  # came from the start, now at the end
        pad = pad | (orig >= g).view(shape)
    lab = window_partition(label[None, ..., None], window)[..., 0]
    return lab, window_partition(pad[None, ..., None], window)[..., 0]


@lru_cache(maxsize=256)
def _mask_cpu(grid: Ints, window: Ints, shift: Ints, kv_grid: Ints | None, kv_window: Ints | None) -> Tensor:
    lab_q, _ = _region_labels(grid, window, shift)
    if kv_grid is None:
        lab_k, pad_k = _region_labels(grid, window, shift)
    else:
        lab_k, pad_k = _region_labels(kv_grid, kv_window or window, shift)
    if lab_q.shape[0] != lab_k.shape[0]:
        raise ValueError(f"query grid {grid} and key grid {kv_grid} give different window counts")
    blocked = (lab_q[:, :, None] != lab_k[:, None, :]) | pad_k[:, None, :]
    return torch.zeros(blocked.shape).masked_fill(blocked, MASK_VALUE)


def shifted_window_mask(
    grid: Sequence[int],
    window: Sequence[int],
    shift: Sequence[int],
    kv_grid: Sequence[int] | None = None,
    kv_window: Sequence[int] | None = None,
) -> Tensor:
    """Additive attention mask ``[nW, N_q, N_k]`` (0 or ``MASK_VALUE``) for the windows of the
    grid zero-padded to a multiple of ``window`` and rolled by ``-shift`` (Swin Sec. 3.2).

    Blocked: keys that are padding, and (shift > 0) query/key pairs that came from opposite
    edges of the domain and only share a window because of the roll -- no wrap-around. For
    cross-attention give the key grid/window (same shift; window counts must match). ``window``
    and ``shift`` are used as given (see :func:`effective_window`)."""
    kg = None if kv_grid is None else tuple(int(g) for g in kv_grid)
    kw = None if kv_window is None else tuple(int(w) for w in kv_window)
    return _mask_cpu(tuple(int(g) for g in grid), tuple(int(w) for w in window),
                     tuple(int(s) for s in shift), kg, kw).clone()


def relative_position_index(
    window: Sequence[int],
    kv_window: Sequence[int] | None = None,
    table_window: Sequence[int] | None = None,
    table_kv_window: Sequence[int] | None = None,
) -> Tensor:
    """Index ``[N_q, N_k]`` into a relative-position-bias table (Swin Eq. 4, N-D).

    Entry = mixed-radix code of the per-axis offset ``q_i - k_i`` shifted to ``[0, wq_i + wk_i - 2]``,
    so the table has ``prod(wq + wk - 1)`` rows (``prod(2w - 1)`` for self-attention) and equal
    offsets share one row. ``table_*`` are the (larger) windows the table was sized for, so that
    windows clipped to a small grid reuse the same table."""
    kv_window = tuple(window) if kv_window is None else tuple(kv_window)
    tq = tuple(window) if table_window is None else tuple(table_window)
    tk = (kv_window if table_window is None else tq) if table_kv_window is None else tuple(table_kv_window)

    def coords(win: Sequence[int]) -> Tensor:
        mesh = torch.meshgrid(*(torch.arange(w) for w in win), indexing="ij")
        return torch.stack([m.flatten() for m in mesh])  # [n_axes, N]

    rel = coords(window)[:, :, None] - coords(kv_window)[:, None, :]
    rel = rel + torch.tensor([k - 1 for k in tk])[:, None, None]
    radix = [q + k - 1 for q, k in zip(tq, tk, strict=True)]
    strides = [math.prod(radix[i + 1:]) for i in range(len(radix))]
    return (rel * torch.tensor(strides)[:, None, None]).sum(0)


# --------------------------------------------------------------------------- attention


class WindowAttention(nn.Module):
    """Multi-head attention inside windows with a learned N-D relative position bias (Swin Eq. 4).

    Self-attention when ``kv`` is not given; cross-attention otherwise, queries from one grid's
    windows and keys/values from another grid partitioned into the same (spatial) windows.
    ``window``/``kv_window`` are the largest windows, which size the bias table. ``fused``: use
    ``F.scaled_dot_product_attention`` (None: on every device but the CPU, where the explicit
    softmax is faster); both compute the same function."""

    def __init__(self, dim: int, heads: int, window: Sequence[int], kv_window: Sequence[int] | None = None,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 fused: bool | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.dim, self.heads = dim, heads
        self.window = tuple(window)
        self.kv_window = self.window if kv_window is None else tuple(kv_window)
        self.cross = kv_window is not None
        self.scale = (dim // heads) ** -0.5
        size = math.prod(q + k - 1 for q, k in zip(self.window, self.kv_window, strict=True))
        self.bias_table = nn.Parameter(torch.zeros(size, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.fused: bool | None = fused
        self._index: dict[tuple, Tensor] = {}

    def position_bias(self, window: Sequence[int] | None = None,
                      kv_window: Sequence[int] | None = None) -> Tensor:
        """Bias ``[heads, N_q, N_k]`` for the actual (possibly clipped) windows."""
        window = self.window if window is None else tuple(window)
        kv_window = (self.kv_window if self.cross else window) if kv_window is None else tuple(kv_window)
        key = (window, kv_window, self.bias_table.device)
        if key not in self._index:
            idx = relative_position_index(window, kv_window, self.window, self.kv_window)
            self._index[key] = idx.to(self.bias_table.device)
        return self.bias_table[self._index[key]].permute(2, 0, 1)

    def forward(self, x: Tensor, kv: Tensor | None = None, mask: Tensor | None = None,
                window: Sequence[int] | None = None, kv_window: Sequence[int] | None = None) -> Tensor:
        """``x [B*nW, N_q, C]``, ``kv [B*nW, N_k, C]`` (None: self-attention), ``mask [nW, N_q, N_k]``
        additive; returns ``[B*nW, N_q, C]``."""
        bw, nq, c = x.shape
        src = x if kv is None else kv
        nk = src.shape[1]
        h, d = self.heads, c // self.heads
        q = self.q(x).reshape(bw, nq, h, d).transpose(1, 2)
        k, v = self.kv(src).reshape(bw, nk, 2, h, d).permute(2, 0, 3, 1, 4)
        bias = self.position_bias(window, kv_window).to(q.dtype)  # [h, Nq, Nk]
        drop = self.attn_drop if self.training else 0.0
        nw = 1 if mask is None else mask.shape[0]
        attn_mask = bias if mask is None else bias[None] + mask.to(q.dtype)[:, None]  # [(nW,) h, Nq, Nk]
        q, k, v = (t.reshape(bw // nw, nw, h, t.shape[-2], d) for t in (q, k, v))
        fused = x.device.type != "cpu" if self.fused is None else self.fused
        if fused:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop)
        else:  # explicit softmax(q k^T / sqrt(d) + B + M) v: faster than SDPA's math path on the CPU
            attn = torch.matmul(q * self.scale, k.transpose(-2, -1)) + attn_mask
            out = torch.matmul(F.dropout(attn.softmax(-1), drop), v)
        out = out.reshape(bw, h, nq, d).transpose(1, 2).reshape(bw, nq, c)
        return self.proj_drop(self.proj(out))


class DropPath(nn.Module):
    """Stochastic depth (Huang et al., 2016): drop the residual branch per sample."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


class Mlp(nn.Sequential):
    def __init__(self, dim: int, ratio: float = 4.0, drop: float = 0.0):
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(drop), nn.Linear(hidden, dim),
                         nn.Dropout(drop))


class _MaskCache:
    """Masks per (grid, window, shift, device, ...), made once on the CPU and moved once."""

    def __init__(self) -> None:
        self._store: dict[tuple, Tensor | None] = {}

    def get(self, device: torch.device, grid: Ints, window: Ints, shift: Ints,
            kv_grid: Ints | None = None, kv_window: Ints | None = None) -> Tensor | None:
        key = (device, grid, window, shift, kv_grid, kv_window)
        if key not in self._store:
            m = _mask_cpu(grid, window, shift, kv_grid, kv_window)
            self._store[key] = m.to(device) if bool((m != 0).any()) else None
        return self._store[key]


class SwinBlock(nn.Module):
    """Pre-norm Swin block on ``[B, *grid, C]``: (shifted-)window attention + MLP, both residual
    (Swin Eq. 3). ``shift=True`` shifts every axis by half its window (no wrap-around)."""

    def __init__(self, dim: int, heads: int, window: Sequence[int], shift: bool = False,
                 mlp_ratio: float = 4.0, drop_path: float = 0.0, drop: float = 0.0):
        super().__init__()
        self.window = tuple(window)
        self.shift = tuple(w // 2 for w in self.window) if shift else (0,) * len(self.window)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, self.window, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio, drop)
        self.drop_path = DropPath(drop_path)
        self._masks = _MaskCache()

    def forward(self, x: Tensor) -> Tensor:
        grid = tuple(x.shape[1:-1])
        win, sh = effective_window(grid, self.window, self.shift)
        axes = tuple(range(1, len(grid) + 1))
        y = pad_to_window(self.norm1(x), win)
        if any(sh):
            y = torch.roll(y, [-s for s in sh], axes)
        pgrid = tuple(y.shape[1:-1])
        mask = self._masks.get(x.device, grid, win, sh)
        y = self.attn(window_partition(y, win), mask=mask, window=win)
        y = window_reverse(y, win, pgrid)
        if any(sh):
            y = torch.roll(y, list(sh), axes)
        if pgrid != grid:
            y = y[(slice(None), *(slice(0, g) for g in grid))]
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CrossSwinBlock(nn.Module):
    """Pre-norm window cross-attention block: tokens ``x [B, *grid_q, C]`` attend to
    ``kv [B, *grid_k, C]`` within the window at the same place. Grids may differ on axes whose
    window covers the whole axis (e.g. lead time vs. input time: ``window[0] >= T_out``,
    ``kv_window[0] >= T_in``); then + MLP, both residual."""

    def __init__(self, dim: int, heads: int, window: Sequence[int], kv_window: Sequence[int],
                 shift: bool = False, mlp_ratio: float = 4.0, drop_path: float = 0.0, drop: float = 0.0):
        super().__init__()
        self.window, self.kv_window = tuple(window), tuple(kv_window)
        self.shift = tuple(w // 2 for w in self.window) if shift else (0,) * len(self.window)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, self.window, self.kv_window, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio, drop)
        self.drop_path = DropPath(drop_path)
        self._masks = _MaskCache()

    def forward(self, x: Tensor, kv: Tensor) -> Tensor:
        grid, kgrid = tuple(x.shape[1:-1]), tuple(kv.shape[1:-1])
        win, sh = effective_window(grid, self.window, self.shift)
        kwin, ksh = effective_window(kgrid, self.kv_window, self.shift)
        if sh != ksh:
            raise ValueError(f"query grid {grid} and key grid {kgrid} would be shifted differently")
        axes = tuple(range(1, len(grid) + 1))
        q = pad_to_window(self.norm_q(x), win)
        k = pad_to_window(self.norm_kv(kv), kwin)
        if any(sh):
            q = torch.roll(q, [-s for s in sh], axes)
            k = torch.roll(k, [-s for s in sh], axes)
        pgrid = tuple(q.shape[1:-1])
        mask = self._masks.get(x.device, grid, win, sh, kgrid, kwin)
        qw, kw = window_partition(q, win), window_partition(k, kwin)
        if qw.shape[0] != kw.shape[0]:
            raise ValueError(f"query grid {grid} / window {win} and key grid {kgrid} / window {kwin} "
                             "give different window counts")
        y = window_reverse(self.attn(qw, kw, mask=mask, window=win, kv_window=kwin), win, pgrid)
        if any(sh):
            y = torch.roll(y, list(sh), axes)
        if pgrid != grid:
            y = y[(slice(None), *(slice(0, g) for g in grid))]
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinStage(nn.Module):
    """``depth`` Swin blocks alternating regular and shifted windows (Swin Fig. 3b)."""

    def __init__(self, dim: int, heads: int, window: Sequence[int], depth: int, mlp_ratio: float = 4.0,
                 drop_path: float | Sequence[float] = 0.0):
        super().__init__()
        dps = [drop_path] * depth if isinstance(drop_path, float | int) else list(drop_path)
        self.blocks = nn.ModuleList(
            SwinBlock(dim, heads, window, shift=i % 2 == 1, mlp_ratio=mlp_ratio, drop_path=dps[i])
            for i in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x


# ---------------------------------------------------------------- patches (Pangu-Weather)


def _pad_hw(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad the last two (lat, lon) axes of a channels-first tensor to a multiple."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return F.pad(x, (0, pw, 0, ph)) if ph or pw else x


class PatchEmbed(nn.Module):
    """Pangu-Weather patch embedding: 3-D fields ``[B, T, C3, D, H, W]`` through a Conv3d with patch
    ``(1, p, p)`` over (depth, lat, lon), surface fields ``[B, T, C2, H, W]`` through a Conv2d with
    the same ``p x p`` patch appended as level ``D``: tokens ``[B, T, D+1, ceil(H/p), ceil(W/p), dim]``
    (fields zero-padded at the end of lat/lon when not divisible)."""

    def __init__(self, c3: int, c2: int, dim: int, patch: int):
        super().__init__()
        self.patch = patch
        self.conv3 = nn.Conv3d(c3, dim, (1, patch, patch), stride=(1, patch, patch))
        self.conv2 = nn.Conv2d(c2, dim, patch, stride=patch)

    def forward(self, x3: Tensor, x2: Tensor) -> Tensor:
        b, t = x3.shape[:2]
        t3 = self.conv3(_pad_hw(x3.flatten(0, 1), self.patch))  # [B*T, dim, D, h, w]
        t2 = self.conv2(_pad_hw(x2.flatten(0, 1), self.patch))  # [B*T, dim, h, w]
        tok = torch.cat([t3, t2[:, :, None]], dim=2).permute(0, 2, 3, 4, 1)
        return tok.reshape(b, t, *tok.shape[1:])


class PatchRecovery(nn.Module):
    """Inverse of :class:`PatchEmbed` (a linear layer + pixel shuffle, i.e. a transposed conv with
    stride = kernel = patch): tokens ``[B, T, D+1, h, w, dim]`` -> ``[B, T, C3, D, H, W]`` and
    ``[B, T, C2, H, W]`` cropped to ``grid``."""

    def __init__(self, dim: int, c3: int, c2: int, patch: int):
        super().__init__()
        self.c3, self.c2, self.patch = c3, c2, patch
        self.norm = nn.LayerNorm(dim)
        self.lin3 = nn.Linear(dim, c3 * patch * patch)
        self.lin2 = nn.Linear(dim, c2 * patch * patch)

    def forward(self, tok: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
        p = self.patch
        tok = self.norm(tok)
        b, t, lv, h, w, _ = tok.shape
        y3 = self.lin3(tok[:, :, :-1]).reshape(b, t, lv - 1, h, w, self.c3, p, p)
        y3 = y3.permute(0, 1, 5, 2, 3, 6, 4, 7).reshape(b, t, self.c3, lv - 1, h * p, w * p)
        y2 = self.lin2(tok[:, :, -1]).reshape(b, t, h, w, self.c2, p, p)
        y2 = y2.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, t, self.c2, h * p, w * p)
        return y3[..., : grid[0], : grid[1]], y2[..., : grid[0], : grid[1]]


class PatchMerging(nn.Module):
    """Swin/Pangu downsampling: concatenate each 2 x 2 (lat, lon) neighbourhood (last two grid axes,
    zero-padded to even), LayerNorm, linear ``4C -> 2C``. ``[B, ..., h, w, C] -> [B, ..., h/2, w/2, 2C]``."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-3:-1]
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        h2, w2 = x.shape[-3] // 2, x.shape[-2] // 2
        x = x.reshape(*x.shape[:-3], h2, 2, w2, 2, x.shape[-1]).transpose(-4, -3).flatten(-3)
        return self.reduction(self.norm(x))


class PatchExpanding(nn.Module):
    """Upsampling (Swin-Unet / Pangu): linear ``2C -> 4C``, pixel shuffle to ``2h x 2w`` with ``C``
    channels, LayerNorm, crop to the target (lat, lon) size."""

    def __init__(self, dim: int):
        super().__init__()
        self.expand = nn.Linear(dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(dim // 2)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        *lead, h, w, c = x.shape
        x = self.expand(x).reshape(*lead, h, w, 2, 2, c // 2).transpose(-4, -3)
        x = x.reshape(*lead, 2 * h, 2 * w, c // 2)[..., : size[0], : size[1], :]
        return self.norm(x)


# ------------------------------------------------------------------------------ TSformer


class TSformerNet(nn.Module):
    """TSformer: non-autoregressive 3-D Swin U-Net forecaster (all lead days in one pass).

    Tokens: :class:`PatchEmbed` -> grid ``(T_in, D+1, h, w)`` (time, level incl. surface, lat, lon)
    + learned factorised absolute embeddings (input day, level, lat, lon).
    Encoder: stage 1 (``blocks[0]`` blocks, dim, window ``window``) -> :class:`PatchMerging` ->
    stage 2 (``blocks[1]`` blocks, 2 dim, 2 heads) at half lat/lon resolution.
    Decoder, per resolution (coarse first): lead-time query tokens ``(T_out, D+1, h, w)`` = learned
    lead-day embedding + a projection of the encoder's last-input-day tokens; one window
    cross-attention block in which each query attends to the encoder tokens of *all* input days
    in the same (level, lat, lon) window (key window spans T_in, query window spans T_out, relative
    bias over (lead - input day, level, lat, lon) offsets); then self-attention blocks alternating
    regular/shifted windows over ``(T_out, D+1, h, w)``. Between the two, :class:`PatchExpanding`
    and the skip connection from encoder stage 1 (concatenated with the stage-1 lead queries,
    linear back to dim; stage-1 cross-attention reads encoder stage 1 as well).
    Output: :class:`PatchRecovery` gives a per-lead increment added to the last input day
    (persistence + delta): the untrained network already starts near persistence, which keeps
    early training and long leads stable. Outputs are zeroed where the ocean masks are 0.
    Inputs are expected normalised, land filled with 0.
    """

    def __init__(self, c3: int, c2: int, depth_levels: int, t_in: int, t_out: int, grid: tuple[int, int],
                 dim: int = 48, heads: int = 4, window: tuple[int, ...] = (2, 2, 4, 4), patch: int = 2,
                 blocks: tuple[int, int] = (2, 2), mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        if c3 < 1 or c2 < 1:
            raise ValueError("TSformerNet needs at least one 3-D and one surface variable")
        if len(window) != 4:
            raise ValueError(f"window must be (time, depth, lat, lon), got {window}")
        self.c3, self.c2, self.depth_levels = c3, c2, depth_levels
        self.t_in, self.t_out, self.grid, self.patch = t_in, t_out, tuple(grid), patch
        levels = depth_levels + 1
        h, w = math.ceil(grid[0] / patch), math.ceil(grid[1] / patch)
        self.tokens = (h, w)
        window = tuple(window)
        q_win, kv_win = (t_out, *window[1:]), (t_in, *window[1:])
        d2, h2 = 2 * dim, 2 * heads
        n_blocks = blocks[0] + blocks[1]
        dp = [drop_path * i / max(n_blocks - 1, 1) for i in range(n_blocks)]

        self.embed = PatchEmbed(c3, c2, dim, patch)
        self.pos_time = nn.Parameter(torch.zeros(t_in, 1, 1, 1, dim))
        self.pos_level = nn.Parameter(torch.zeros(levels, 1, 1, dim))
        self.pos_lat = nn.Parameter(torch.zeros(h, 1, dim))
        self.pos_lon = nn.Parameter(torch.zeros(w, dim))
        self.enc1 = SwinStage(dim, heads, window, blocks[0], mlp_ratio, dp[: blocks[0]])
        self.down = PatchMerging(dim)
        self.enc2 = SwinStage(d2, h2, window, blocks[1], mlp_ratio, dp[blocks[0]:])

        self.lead2 = nn.Parameter(torch.zeros(t_out, 1, 1, 1, d2))
        self.query2 = nn.Linear(d2, d2)
        self.cross2 = CrossSwinBlock(d2, h2, q_win, kv_win, mlp_ratio=mlp_ratio)
        self.dec2 = SwinStage(d2, h2, window, blocks[1], mlp_ratio, dp[blocks[0]:][::-1])
        self.up = PatchExpanding(d2)
        self.lead1 = nn.Parameter(torch.zeros(t_out, 1, 1, 1, dim))
        self.query1 = nn.Linear(dim, dim)
        self.fuse = nn.Linear(2 * dim, dim)
        self.cross1 = CrossSwinBlock(dim, heads, q_win, kv_win, mlp_ratio=mlp_ratio)
        self.dec1 = SwinStage(dim, heads, window, blocks[0], mlp_ratio, dp[: blocks[0]][::-1])
        self.recover = PatchRecovery(dim, c3, c2, patch)
        self.apply(self._init)
        for p in (self.pos_time, self.pos_level, self.pos_lat, self.pos_lon, self.lead1, self.lead2):
            nn.init.trunc_normal_(p, std=0.02)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x3: Tensor, x2: Tensor, mask3: Tensor | None = None,
                mask2: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x3 [B, T_in, C3, D, H, W]``, ``x2 [B, T_in, C2, H, W]``, optional ocean masks ``[D, H, W]``
        / ``[H, W]`` (1 ocean, 0 land) -> ``y3 [B, T_out, C3, D, H, W]``, ``y2 [B, T_out, C2, H, W]``."""
        b, t = x3.shape[:2]
        grid = tuple(x3.shape[-2:])
        if t != self.t_in or grid != self.grid or x3.shape[3] != self.depth_levels:
            raise ValueError(f"expected T_in={self.t_in}, D={self.depth_levels}, grid={self.grid}; "
                             f"got x3 {tuple(x3.shape)}")
        e1 = self.embed(x3, x2) + self.pos_time + self.pos_level + self.pos_lat + self.pos_lon
        e1 = self.enc1(e1)  # [B, T_in, L, h, w, dim]
        e2 = self.enc2(self.down(e1))  # [B, T_in, L, h/2, w/2, 2 dim]

        q2 = self.lead2 + self.query2(e2[:, -1:])  # [B, T_out, L, h/2, w/2, 2 dim]
        d2 = self.dec2(self.cross2(q2, e2))
        q1 = self.lead1 + self.query1(e1[:, -1:])  # [B, T_out, L, h, w, dim]
        up = self.up(d2, self.tokens)
        d1 = self.fuse(torch.cat([up, q1.expand_as(up)], dim=-1))
        d1 = self.dec1(self.cross1(d1, e1))

        dy3, dy2 = self.recover(d1, grid)
        y3 = x3[:, -1:] + dy3  # persistence + learned increment, every lead at once
        y2 = x2[:, -1:] + dy2
        if mask3 is not None:
            y3 = y3 * mask3.to(y3.dtype)
        if mask2 is not None:
            y2 = y2 * mask2.to(y2.dtype)
        return y3, y2


# ------------------------------------------------------------------- U-Net baseline


class _ConvBlock(nn.Sequential):
    """(conv 3x3 -> GroupNorm -> ReLU) x 2."""

    def __init__(self, c_in: int, c_out: int, padding_mode: str, groups: int):
        g = math.gcd(groups, c_out)
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode=padding_mode, bias=False),
            nn.GroupNorm(g, c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, padding_mode=padding_mode, bias=False),
            nn.GroupNorm(g, c_out), nn.ReLU(inplace=True),
        )


class UNet2d(nn.Module):
    """Autoregressive baseline: a small 2-level U-Net (Ronneberger et al., 2015) with conv-GN-ReLU
    blocks and skip connections, non-circular padding (``"zeros"`` or ``"reflect"``; the domain is
    regional). Input: the last ``t_in`` days stacked as channels ``t_in * (C3*D + C2)``; output: the
    next day (``C3*D + C2`` channels) as a residual on the last input day. Grids not divisible by
    4 are zero-padded at the end and cropped back."""

    def __init__(self, c3: int, c2: int, depth_levels: int, t_in: int, base: int = 32,
                 padding_mode: str = "zeros", groups: int = 8):
        super().__init__()
        if padding_mode not in ("zeros", "reflect", "replicate"):
            raise ValueError(f"padding_mode must be zeros/reflect/replicate (regional domain, not circular), "
                             f"got {padding_mode!r}")
        self.c3, self.c2, self.depth_levels, self.t_in = c3, c2, depth_levels, t_in
        per_day = c3 * depth_levels + c2
        pm = padding_mode
        self.enc0 = _ConvBlock(t_in * per_day, base, pm, groups)
        self.enc1 = _ConvBlock(base, 2 * base, pm, groups)
        self.mid = _ConvBlock(2 * base, 4 * base, pm, groups)
        self.up1 = nn.ConvTranspose2d(4 * base, 2 * base, 2, stride=2)
        self.dec1 = _ConvBlock(4 * base, 2 * base, pm, groups)
        self.up0 = nn.ConvTranspose2d(2 * base, base, 2, stride=2)
        self.dec0 = _ConvBlock(2 * base, base, pm, groups)
        self.head = nn.Conv2d(base, per_day, 1)

    def forward(self, x3: Tensor, x2: Tensor, mask3: Tensor | None = None,
                mask2: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x3 [B, T, C3, D, H, W]``, ``x2 [B, T, C2, H, W]`` (T >= t_in; the last t_in days are used)
        -> next day ``y3 [B, 1, C3, D, H, W]``, ``y2 [B, 1, C2, H, W]``."""
        x3, x2 = x3[:, -self.t_in:], x2[:, -self.t_in:]
        b, t, c3, d, h, w = x3.shape
        days = torch.cat([x3.flatten(2, 3), x2], dim=2)  # [B, T, C3*D + C2, H, W]
        z = _pad_hw(days.flatten(1, 2), 4)
        s0 = self.enc0(z)
        s1 = self.enc1(F.max_pool2d(s0, 2))
        z = self.mid(F.max_pool2d(s1, 2))
        z = self.dec1(torch.cat([self.up1(z), s1], dim=1))
        z = self.dec0(torch.cat([self.up0(z), s0], dim=1))
        y = days[:, -1] + self.head(z)[..., :h, :w]  # residual on the last day
        y3 = y[:, : c3 * d].reshape(b, 1, c3, d, h, w)
        y2 = y[:, c3 * d:].reshape(b, 1, -1, h, w)
        if mask3 is not None:
            y3 = y3 * mask3.to(y3.dtype)
        if mask2 is not None:
            y2 = y2 * mask2.to(y2.dtype)
        return y3, y2


def rollout(net: nn.Module, x3: Tensor, x2: Tensor, steps: int, mask3: Tensor | None = None,
            mask2: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Autoregressive forecast: ``steps`` calls of the one-day ``net`` (e.g. :class:`UNet2d`), each on
    the latest ``net.t_in`` days with its own previous predictions fed back.
    Returns ``y3 [B, steps, C3, D, H, W]``, ``y2 [B, steps, C2, H, W]``."""
    t_in = int(getattr(net, "t_in", x3.shape[1]))
    win3, win2 = x3[:, -t_in:], x2[:, -t_in:]
    out3, out2 = [], []
    for _ in range(steps):
        y3, y2 = net(win3, win2, mask3, mask2)
        out3.append(y3)
        out2.append(y2)
        win3 = torch.cat([win3[:, 1:], y3], dim=1)
        win2 = torch.cat([win2[:, 1:], y2], dim=1)
    return torch.cat(out3, dim=1), torch.cat(out2, dim=1)
