"""Robustness metrics: average, worst-group and shortcut-broken accuracy, ECE.

Groups are (label, binary spurious attributes) as in :mod:`harness.datasets.robust_common`:
``g = y * 2**A + bits``. A shortcut is *broken* either by an explicit test set (HANS for
lexical overlap, ImageNet-9 ``mixed_rand`` for the background) or, when the data have none,
by reweighting the groups of the in-distribution test set: the broken attribute becomes
uniform given the rest, every other attribute keeps its training share,

    acc_broken_k = sum_g w_g acc_g / sum_g w_g,   w_g = P_train(y, a_{-k}) / 2,

and with every shortcut broken ``w_g = P_train(y) / 2**A`` (the group-balanced accuracy within
each class). ``acc_weighted`` weights the test groups by their training shares (the average
JTT and WILDS report on Waterbirds, whose test set is group-balanced).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

ECE_BINS = 15


def per_group(correct: Tensor, groups: Tensor, n_groups: int) -> tuple[Tensor, Tensor]:
    """Accuracy and count per group (accuracy NaN where a group has no example)."""
    count = torch.bincount(groups, minlength=n_groups).double()
    hits = torch.bincount(groups, weights=correct.double(), minlength=n_groups)
    return hits / count.clamp_min(1) + torch.where(count > 0, 0.0, float("nan")), count


def reweighted(acc: Tensor, count: Tensor, weights: Tensor) -> float:
    """sum_g w_g acc_g / sum_g w_g over the groups that have test examples."""
    present = (count > 0) & (weights > 0)
    if not present.any():
        return float("nan")
    w = weights[present]
    return float((w * acc[present]).sum() / w.sum())


def broken_weights(train_share: Tensor, n_attrs: int, attr: int | None) -> Tensor:
    """Group weights that make attribute ``attr`` (None: all attributes) uniform given the
    label and the other attributes, which keep their training shares."""
    n_classes = train_share.numel() // 2 ** n_attrs
    share = train_share.double().reshape(n_classes, *([2] * n_attrs))
    if attr is None:
        w = share.sum(dim=tuple(range(1, n_attrs + 1)), keepdim=True) / 2 ** n_attrs
    else:
        w = share.sum(dim=1 + attr, keepdim=True) / 2
    return w.expand_as(share).reshape(-1)


def collapse_probs(probs: Tensor, mapping: Sequence[int] | None) -> Tensor:
    """Sum the model's class probabilities into a test set's classes (HANS: entailment vs
    non-entailment from three NLI classes)."""
    if mapping is None:
        return probs
    idx = torch.as_tensor(list(mapping), device=probs.device)
    out = probs.new_zeros(probs.shape[0], int(idx.max()) + 1)
    return out.index_add_(1, idx, probs)


def ece(probs: Tensor, y: Tensor) -> float:
    """Expected calibration error, 15 equal-width confidence bins, L1 (torchmetrics)."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    return float(multiclass_calibration_error(probs.float(), y, num_classes=probs.shape[1],
                                              n_bins=ECE_BINS, norm="l1"))


def validation_metrics(probs: Tensor, y: Tensor, groups: Tensor, n_groups: int) -> dict[str, float]:
    """``acc``, ``worst_group_acc`` (needs group labels), ``worst_class_acc`` (labels only), ``ece``."""
    correct = probs.argmax(1) == y
    g_acc, _ = per_group(correct, groups, n_groups)
    c_acc, _ = per_group(correct, y, probs.shape[1])
    return {"acc": float(correct.double().mean()), "worst_group_acc": float(g_acc.nan_to_num(2).min()),
            "worst_class_acc": float(c_acc.nan_to_num(2).min()), "ece": ece(probs, y)}


def test_metrics(probs: Tensor, y: Tensor, groups: Tensor, sets: Tensor, set_names: Sequence[str],
                 train_share: Tensor, attr_names: Sequence[str], broken: Mapping[str, str],
                 collapse: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """Every test metric of the robustness family (module docstring).

    ``sets[i]`` indexes ``set_names`` (``"test"`` is the in-distribution set); ``y`` is in each
    set's own label space (collapsed sets: see :func:`collapse_probs`).
    """
    n_groups = train_share.numel()
    out: dict[str, float] = {}
    pooled_correct, pooled_groups = [], []
    for s, name in enumerate(set_names):
        sel = sets == s
        if not sel.any():
            continue
        p = collapse_probs(probs[sel], collapse.get(name))
        correct = p.argmax(1) == y[sel]
        out[f"acc_set_{name}"] = float(correct.double().mean())
        if name not in collapse:
            pooled_correct.append(correct)
            pooled_groups.append(groups[sel])
        if name == "test":
            acc, count = per_group(correct, groups[sel], n_groups)
            out["acc"] = out[f"acc_set_{name}"]
            out["acc_weighted"] = reweighted(acc, count, train_share.double())
            out["ece"] = ece(p, y[sel])
            for k, attr in enumerate(attr_names):
                if attr not in broken:
                    out[f"acc_broken_{attr}"] = reweighted(acc, count, broken_weights(train_share,
                                                                                      len(attr_names), k))
            if "all" not in broken:
                out["acc_all_broken"] = reweighted(acc, count, broken_weights(train_share,
                                                                              len(attr_names), None))
    for attr, name in broken.items():
        key = "acc_all_broken" if attr == "all" else f"acc_broken_{attr}"
        if f"acc_set_{name}" in out:
            out[key] = out[f"acc_set_{name}"]
    if pooled_correct:
        acc, _ = per_group(torch.cat(pooled_correct), torch.cat(pooled_groups), n_groups)
        out["worst_group_acc"] = float(acc.nan_to_num(2).min())
    return out
