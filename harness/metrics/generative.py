"""Metrics for generative models: InvDiff's bias score, the Fréchet distance, improved precision and
recall, and the agreement of inferred groups with the true ones.

Features for the Fréchet distance and precision/recall are rows of an ``(N, D)`` matrix. Offline there
are no Inception/VGG weights: the caller extracts them with a classifier it trained itself and names
the metric after it (e.g. ``fd_resnet18`` rather than ``fid``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor

from harness.errors import UserError


def _labels(x: Tensor, n: int, name: str) -> Tensor:
    x = torch.as_tensor(x).reshape(-1).long()
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= n):
        raise UserError(f"{name} must hold integers in [0, {n}); got values in "
                        f"[{int(x.min())}, {int(x.max())}]")
    return x


def _class_counts(pred_attr: Tensor, cls: Tensor, n_attr: int, n_classes: int) -> Tensor:
    """Images per (class, attribute value), float64 ``(n_classes, n_attr)``."""
    a = _labels(pred_attr, n_attr, "pred_attr")
    c = _labels(cls, n_classes, "cls")
    if a.numel() != c.numel():
        raise UserError(f"pred_attr and cls must have one entry per image; got {a.numel()} and {c.numel()}")
    return torch.bincount(c * n_attr + a, minlength=n_classes * n_attr).reshape(n_classes, n_attr).double()


def attribute_shares(pred_attr: Tensor, cls: Tensor, n_attr: int, n_classes: int) -> Tensor:
    """Share of each predicted attribute value among the images generated for each class,
    ``(n_classes, n_attr)`` float64; a row is NaN where a class has no image."""
    counts = _class_counts(pred_attr, cls, n_attr, n_classes)
    total = counts.sum(1, keepdim=True)
    return counts / total.clamp_min(1) + torch.where(total > 0, 0.0, float("nan"))


def bias_score(pred_attr: Tensor, cls: Tensor, n_attr: int, n_classes: int) -> float:
    """InvDiff's bias score: mean over classes of the normalised pairwise count differences,

        bias_c = sum_{i<j} |n_ci - n_cj| / (N_c * K (K - 1) / 2),   score = mean_c bias_c,

    with ``n_ci`` the images generated for class ``c`` that the attribute classifier labels ``i``,
    ``N_c = sum_i n_ci`` and ``K = n_attr``. 0: every class balanced; 1 with ``K = 2`` (``2/K`` in
    general): every image of a class shares one attribute value. As ``calculate_debias_score`` and
    ``get_bias_score`` in ``Hundredl/InvDiff``, ``src/utils/score/bias_score.py`` (commit 0d47371);
    unlike it, classes without a generated image are left out of the mean instead of making it NaN.
    """
    if n_attr < 2:
        raise UserError(f"the bias score needs at least 2 attribute values; got n_attr={n_attr}")
    counts = _class_counts(pred_attr, cls, n_attr, n_classes)
    total = counts.sum(1)
    present = total > 0
    if not present.any():
        raise UserError("the bias score needs at least one generated image; got none")
    pair_diff = (counts[:, :, None] - counts[:, None, :]).abs().sum((1, 2)) / 2  # sum over i<j
    per_class = pair_diff[present] / (total[present] * (n_attr * (n_attr - 1) / 2))
    return float(per_class.mean())


def _features(x: Tensor, name: str, min_rows: int) -> Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise UserError(f"{name} must be a feature matrix (N, D); got shape {tuple(x.shape)}")
    if x.shape[0] < min_rows:
        raise UserError(f"{name} needs at least {min_rows} samples; got {x.shape[0]}")
    return x.detach().double()


def frechet_distance(feat_a: Tensor, feat_b: Tensor, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID's formula, Heusel et al.
    2017), in float64:

        d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}),

    ``S`` the unbiased (N - 1) sample covariances, as ``np.cov`` in pytorch-fid. As there, when the
    square root of ``S_a S_b`` is not finite (near-singular covariances) it is taken of
    ``(S_a + eps I)(S_b + eps I)``, and a negligible imaginary part of it is dropped.
    """
    from scipy import linalg

    a = _features(feat_a, "feat_a", 2).cpu().numpy()
    b = _features(feat_b, "feat_b", 2).cpu().numpy()
    if a.shape[1] != b.shape[1]:
        raise UserError(f"feature sets must have the same dimension; got {a.shape[1]} and {b.shape[1]}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a = np.atleast_2d(np.cov(a, rowvar=False))
    s_b = np.atleast_2d(np.cov(b, rowvar=False))

    def sqrt_prod(offset: float) -> np.ndarray | None:
        eye = np.eye(s_a.shape[0]) * offset
        with warnings.catch_warnings():  # a singular product is handled below, not warned about
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
            root = linalg.sqrtm((s_a + eye) @ (s_b + eye))
        if not np.isfinite(root).all():
            return None
        if np.iscomplexobj(root):
            if not np.allclose(np.diagonal(root).imag, 0, atol=1e-3):
                return None
            root = root.real
        return root

    root = sqrt_prod(0.0)
    if root is None:
        root = sqrt_prod(eps)
    if root is None:
        raise UserError("the feature covariances are too degenerate for the Fréchet distance "
                        "((S_a S_b)^1/2 is not real); use more samples than feature dimensions")
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(root))


def _knn_radii(x: Tensor, k: int, batch: int) -> Tensor:
    """Distance from each row of ``x`` to its k-th nearest other row (itself is the 0th)."""
    out = [torch.cdist(x[i:i + batch], x).topk(k + 1, dim=1, largest=False).values[:, -1]
           for i in range(0, x.shape[0], batch)]
    return torch.cat(out)


def precision_recall(real: Tensor, fake: Tensor, k: int = 3, *, batch: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, NeurIPS).

    Each sample's ball has the radius of its k-th nearest neighbour within its own set (itself
    excluded). precision = share of fake samples within (<=, the paper's definition) at least one
    real ball; recall = share of real samples within at least one fake ball. Distances in float64,
    ``batch`` rows of a distance matrix at a time (memory ``batch x N``), so 10k x 10k fits easily.
    (InvDiff's copy, ``src/utils/score/improved_prd.py``, tests ``<``; the two differ only on ties.)
    """
    if k < 1:
        raise UserError(f"k must be at least 1; got {k}")
    r = _features(real, "real", k + 1)
    f = _features(fake, "fake", k + 1).to(r.device)
    if r.shape[1] != f.shape[1]:
        raise UserError(f"feature sets must have the same dimension; got {r.shape[1]} and {f.shape[1]}")
    radii_r, radii_f = _knn_radii(r, k, batch), _knn_radii(f, k, batch)
    fake_in = torch.zeros(f.shape[0], dtype=torch.bool, device=f.device)
    real_in = torch.zeros(r.shape[0], dtype=torch.bool, device=r.device)
    for i in range(0, f.shape[0], batch):
        d = torch.cdist(f[i:i + batch], r)  # (fake chunk, real)
        fake_in[i:i + batch] = (d <= radii_r[None, :]).any(1)
        real_in |= (d <= radii_f[i:i + batch, None]).any(0)
    return float(fake_in.double().mean()), float(real_in.double().mean())


def _comb2(x: Tensor) -> Tensor:
    return x * (x - 1) / 2


def group_agreement(assign: Tensor, truth: Tensor) -> dict[str, float]:
    """Agreement of a hard group assignment with the true groups, from their contingency table:

    ``ari``: adjusted Rand index (Hubert & Arabie 1985),
        (sum_ij C(n_ij, 2) - E) / ((sum_i C(a_i, 2) + sum_j C(b_j, 2)) / 2 - E),
        E = sum_i C(a_i, 2) sum_j C(b_j, 2) / C(n, 2);
    ``nmi``: mutual information over the arithmetic mean of the two entropies (sklearn's default).
    Labels are arbitrary integers; both are 1 for the same partition up to relabelling, and, as in
    sklearn, when both partitions are trivial (one group, or every sample alone).
    """
    a = torch.as_tensor(assign).reshape(-1)
    t = torch.as_tensor(truth).reshape(-1)
    if a.numel() != t.numel() or a.numel() == 0:
        raise UserError(f"assign and truth must have one label per sample; got {a.numel()} and {t.numel()}")
    _, ia = torch.unique(a, return_inverse=True)
    _, it = torch.unique(t, return_inverse=True)
    na, nt = int(ia.max()) + 1, int(it.max()) + 1
    table = torch.bincount(ia * nt + it, minlength=na * nt).reshape(na, nt).double()
    n = float(a.numel())
    rows, cols = table.sum(1), table.sum(0)

    index, sum_a, sum_b = float(_comb2(table).sum()), float(_comb2(rows).sum()), float(_comb2(cols).sum())
    expected = sum_a * sum_b / (n * (n - 1) / 2) if n > 1 else 0.0
    top = (sum_a + sum_b) / 2
    ari = 1.0 if math.isclose(top, expected) else (index - expected) / (top - expected)

    if na == nt == 1:
        nmi = 1.0
    else:
        nz = table > 0
        p = table[nz] / n
        outer = (rows[:, None] * cols[None, :])[nz] / n**2
        mi = float((p * (p / outer).log()).sum())

        def entropy(c: Tensor) -> float:
            q = c[c > 0] / n
            return float(-(q * q.log()).sum())

        mean_h = (entropy(rows) + entropy(cols)) / 2
        nmi = 0.0 if mi <= 0 else mi / max(mean_h, float(np.finfo(np.float64).eps))
    return {"ari": ari, "nmi": nmi}
