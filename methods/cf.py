"""Collaborative-filtering backbones, full-ranking evaluation, and the BPR and IPS baselines.

Every CF method in the harness is a :class:`CFRecommender`: a backbone
(:class:`MF` or :class:`LightGCN`) producing user and item embeddings, scores as
their dot product, and one :meth:`CFRecommender.objective` holding the method's
whole objective on one batch. Training runs several optimiser steps per Lightning
step (the loader hands over groups of consecutive batches: see
``AmazonDataModule.group_batches``), which takes Lightning's per-step cost off
CF's many small steps. Evaluation ranks every item for every user (training items masked,
and validation items too at test time) in batches on the model's device.

Metrics logged per stage (``val/``, ``test/``): ``recall_K``, ``ndcg_K`` overall,
on tail items (``_tail``: relevance restricted to tail items, ranking still over
the full catalogue) and on inactive users (``_inactive``), ``avg_pop_K`` (mean
training interaction count of the top K) and ``coverage_K`` (share of the
catalogue in anyone's top K).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api import Method, choice
from harness.datasets.amazon import RecData
from harness.metrics import ranking as rk


def csr_rows_dense(indptr: Tensor, indices: Tensor, rows: Tensor, n_cols: int) -> Tensor:
    """Dense bool matrix [len(rows), n_cols] of the given CSR rows, built without a Python loop."""
    starts, ends = indptr[rows], indptr[rows + 1]
    lens = ends - starts
    out = torch.zeros(len(rows), n_cols, dtype=torch.bool, device=indices.device)
    total = int(lens.sum())
    if total == 0:
        return out
    row_ids = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), lens)
    first = torch.repeat_interleave(starts - (torch.cumsum(lens, 0) - lens), lens)
    cols = indices[first + torch.arange(total, device=rows.device)]
    out[row_ids, cols] = True
    return out


def split_group(batch: tuple[Tensor, ...]) -> list[tuple[Tensor, Tensor, Tensor]]:
    """The batches of a training loader item: ``(users, positives, negatives, sizes)`` holds
    ``len(sizes)`` consecutive batches end to end (``AmazonDataModule.group_batches``); a
    plain ``(users, positives, negatives)`` is one batch."""
    if len(batch) == 3:
        return [tuple(batch)]  # type: ignore[list-item]
    u, i, j, sizes = batch
    sizes = list(sizes)
    return list(zip(u.split(sizes), i.split(sizes), j.split(sizes), strict=True))


class _GatherRows(torch.autograd.Function):
    """``w[idx]`` for a 2-D ``w``: ``index_select`` forward, ``index_add_`` backward.

    Advanced indexing's backward is ``index_put_(accumulate=True)``, several times slower on
    CPU than ``index_add_`` for a batch of rows (docs/aurl.md, "The training step").
    """

    @staticmethod
    def forward(ctx: Any, w: Tensor, idx: Tensor) -> Tensor:
        ctx.save_for_backward(idx)
        ctx.rows = w.shape[0]
        return w.index_select(0, idx)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None
        (idx,) = ctx.saved_tensors
        return grad.new_zeros(ctx.rows, grad.shape[1]).index_add_(0, idx, grad), None


def gather_rows(w: Tensor, idx: Tensor) -> Tensor:
    """Rows ``idx`` of ``w`` with a scatter-add backward (same values and gradient as ``w[idx]``)."""
    return _GatherRows.apply(w, idx)


class _BPRRows(torch.autograd.Function):
    """BPR on gathered rows, fused with its gather and an optional L2 on the same rows:

        loss = mean_b w_b * -log sigmoid(e_u . (e_i - e_j))
               + l2 * (||E_u||^2 + ||E_i||^2 + ||E_j||^2) / (2 B)

    (``l2`` only where the rows are the ego embeddings, i.e. MF). Returns the loss and the
    gathered rows ``(e_u, e_i, e_j)`` (other terms may use them). The backward is the closed
    form: with g_b = -w_b sigmoid(-(s_ui - s_uj)) / B and c = l2 / B,
    d/de_u = g (e_i - e_j) + c e_u, d/de_i = g e_u + c e_i, d/de_j = -g e_u + c e_j, plus
    whatever reached the returned rows, scattered once per table.
    """

    @staticmethod
    def forward(ctx: Any, users: Tensor, items: Tensor, u: Tensor, i: Tensor, j: Tensor,
                weight: Tensor | None, l2: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        eu, ei, ej = users.index_select(0, u), items.index_select(0, i), items.index_select(0, j)
        diff = (eu * (ei - ej)).sum(-1)  # s_ui - s_uj
        per = F.logsigmoid(diff)
        loss = -((per * weight).mean() if weight is not None else per.mean())
        if l2:
            sq = sum(torch.dot(e.reshape(-1), e.reshape(-1)) for e in (eu, ei, ej))
            loss = loss + l2 * sq / (2 * len(u))
        ctx.save_for_backward(u, i, j, eu, ei, ej, diff, weight)
        ctx.shapes, ctx.l2 = (users.shape, items.shape), l2
        ctx.set_materialize_grads(False)
        return loss, eu, ei, ej

    @staticmethod
    def backward(ctx: Any, g_loss: Tensor | None, g_eu: Tensor | None, g_ei: Tensor | None,
                 g_ej: Tensor | None) -> tuple[Tensor | None, ...]:
        u, i, j, eu, ei, ej, diff, weight = ctx.saved_tensors
        if g_loss is not None:
            coef = torch.sigmoid(diff.neg()).mul_(g_loss.neg() / len(u))  # g_b
            if weight is not None:
                coef.mul_(weight)
            coef = coef.unsqueeze(1)
            geu = torch.sub(ei, ej).mul_(coef)
            gei = torch.mul(eu, coef)
            gej = torch.mul(eu, coef.neg())
            if ctx.l2:
                c = g_loss * (ctx.l2 / len(u))
                geu.addcmul_(eu, c)
                gei.addcmul_(ei, c)
                gej.addcmul_(ej, c)
        else:
            geu, gei, gej = torch.zeros_like(eu), torch.zeros_like(ei), torch.zeros_like(ej)
        for g, extra in ((geu, g_eu), (gei, g_ei), (gej, g_ej)):
            if extra is not None:
                g.add_(extra)
        g_users = g_items = None
        if ctx.needs_input_grad[0]:  # index_add_ without alpha: its alpha path is several x slower
            g_users = geu.new_zeros(ctx.shapes[0]).index_add_(0, u, geu)
        if ctx.needs_input_grad[1]:
            g_items = gei.new_zeros(ctx.shapes[1]).index_add_(0, i, gei).index_add_(0, j, gej)
        return g_users, g_items, None, None, None, None, None


class MF(nn.Module):
    """Matrix factorisation: a user and an item embedding table, Xavier-normal initialised.

    The initialisation is RecBole's for BPR (std sqrt(2 / (rows + dim)): 0.045 for ML-100K's
    users). With LightGCN's N(0, 0.1) instead, MF on ML-100K scored 0.012 lower validation
    and 0.021 lower test Recall@20, below RecBole's BPR (docs/recbole.md): Adam moves each coordinate
    by about the learning rate per step, so the noise left in rarely updated rows decays
    slowly and blurs their rankings.
    """

    def __init__(self, n_users: int, n_items: int, dim: int):
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        nn.init.xavier_normal_(self.user.weight)
        nn.init.xavier_normal_(self.item.weight)

    def forward(self) -> tuple[Tensor, Tensor]:
        return self.user.weight, self.item.weight


class _SymmetricSpMM(torch.autograd.Function):
    """``adj @ x`` for a symmetric sparse ``adj``, whose backward is ``adj @ grad``.

    Autograd's generic sparse-CSR backward transposes the matrix (a sort of every
    non-zero) at every layer of every step; LightGCN's normalised adjacency is its own
    transpose, so the backward is one more product with the same matrix.
    """

    @staticmethod
    def forward(ctx: Any, adj: Tensor, x: Tensor) -> Tensor:
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor]:
        return None, ctx.adj @ grad


class LightGCN(nn.Module):
    """LightGCN (He et al., 2020): E^(k+1) = D^-1/2 A D^-1/2 E^(k); E = mean_k E^(k) (eqs. 3, 4).

    The normalised bipartite adjacency is a sparse CSR matrix built once per device
    from the training interactions; it is not a parameter or a buffer, so
    checkpoints stay small.
    """

    def __init__(self, n_users: int, n_items: int, dim: int, n_layers: int,
                 train_user: Tensor, train_item: Tensor):
        super().__init__()
        self.n_users, self.n_items, self.n_layers = n_users, n_items, n_layers
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        nn.init.normal_(self.user.weight, std=0.1)
        nn.init.normal_(self.item.weight, std=0.1)
        n = n_users + n_items
        rows = torch.cat([train_user, train_item + n_users])
        cols = torch.cat([train_item + n_users, train_user])
        deg = torch.bincount(rows, minlength=n).to(torch.float32)
        inv_sqrt = deg.clamp(min=1).pow(-0.5)
        vals = inv_sqrt[rows] * inv_sqrt[cols]
        self._coo = (torch.stack([rows, cols]), vals, n)
        self._adj: dict[torch.device, Tensor] = {}

    def adjacency(self, device: torch.device) -> Tensor:
        if device not in self._adj:
            idx, vals, n = self._coo
            # built outside inference mode so a matrix first made during validation can train
            with torch.inference_mode(False):
                coo = torch.sparse_coo_tensor(idx, vals, (n, n), check_invariants=False).coalesce()
                self._adj[device] = coo.to_sparse_csr().to(device)
        return self._adj[device]

    def forward(self) -> tuple[Tensor, Tensor]:
        e = torch.cat([self.user.weight, self.item.weight])
        adj = self.adjacency(e.device)
        total = e
        for _ in range(self.n_layers):
            e = _SymmetricSpMM.apply(adj, e)
            total = total + e  # a running sum: no stacked copy of every layer
        out = total / (self.n_layers + 1)
        return out[: self.n_users], out[self.n_users :]


#: the backbones a CF method can run on
BACKBONES = ("mf", "lightgcn")


class CFRecommender(Method):
    """Base of every CF method: backbone, optimiser, full-ranking validation and test.

    Subclasses write :meth:`objective` (their loss on one batch) and may add hyperparameters;
    :meth:`training_step` runs one optimiser step per batch of each loader group.
    """

    #: 2: MF initialised Xavier-normal; LightGCN's backward by the symmetric product.
    #: 3: fused BPR and Adam kernels, several optimiser steps per Lightning step, and the
    #: loader's negatives drawn per group of batches (a different random stream)
    version = "3"

    #: metric -> direction, for checkpoint selection, sweeps and report bolding
    metrics: dict[str, str] = {
        "recall_20": "max", "ndcg_20": "max", "recall_20_tail": "max", "ndcg_20_tail": "max",
        "recall_20_inactive": "max", "ndcg_20_inactive": "max", "avg_pop_20": "min",
        "coverage_20": "max",
    }

    def __init__(self, info: RecData, backbone: str = "mf", dim: int = 64, n_layers: int = 3,
                 lr: float = 1e-3, reg: float = 1e-4, ks: tuple[int, ...] = (20,)):
        super().__init__()
        self.save_hyperparameters(ignore=["info"])
        self.automatic_optimization = False  # training_step steps once per batch of its group
        self.n_users, self.n_items = info.n_users, info.n_items
        if choice("backbone", backbone, BACKBONES) == "mf":
            self.encoder: nn.Module = MF(info.n_users, info.n_items, dim)
        else:
            self.encoder = LightGCN(info.n_users, info.n_items, dim, n_layers,
                                    info.train_user, info.train_item)
        for name in ("train_indptr", "train_indices", "valid_indptr", "valid_indices",
                     "test_indptr", "test_indices", "item_popularity", "head_item",
                     "active_user"):
            self.register_buffer(name, getattr(info, name).clone(), persistent=False)
        self._eval: dict[str, Any] = {}

    # -- training -------------------------------------------------------------------------

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """All user and item embeddings from the backbone."""
        return self.encoder()

    def bpr_loss(self, u: Tensor, i: Tensor, j: Tensor, weight: Tensor | None = None,
                 embeddings: tuple[Tensor, Tensor] | None = None, reg: float = 0.0
                 ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        """BPR (Rendle et al., 2009, eq. 7's ln sigma term): mean -log sigmoid(s_ui - s_uj),
        optionally weighted per pair, plus ``reg`` times :meth:`l2`; fused with its gather
        (:class:`_BPRRows`; the L2 too on MF, whose scoring rows are the ego rows).

        ``embeddings`` lets a caller that already propagated the graph reuse its output.
        Returns the loss and the scoring rows ``(e_u, e_i, e_j)``.
        """
        users, items = embeddings if embeddings is not None else self.embeddings()
        fuse = isinstance(self.encoder, MF) and embeddings is None
        loss, eu, ei, ej = _BPRRows.apply(users, items, u, i, j, weight, reg if fuse else 0.0)
        if reg and not fuse:
            loss = loss + reg * self.l2(u, i, j, (eu, ei, ej))
        return loss, (eu, ei, ej)

    def l2(self, u: Tensor, i: Tensor, j: Tensor,
           batch: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
        """L2 on the batch's ego (layer-0) embeddings, as LightGCN and RecBole do.

        ``batch``: the ``(e_u, e_i, e_j)`` :meth:`bpr_loss` returned; on MF they are the ego
        embeddings, so they are reused instead of gathered (and scattered back) again.
        """
        enc = self.encoder
        if batch is not None and isinstance(enc, MF):
            eu, ei, ej = batch
        else:
            w_user, w_item = enc.user.weight, enc.item.weight
            eu, ei, ej = gather_rows(w_user, u), gather_rows(w_item, i), gather_rows(w_item, j)
        return (eu.pow(2).sum() + ei.pow(2).sum() + ej.pow(2).sum()) / (2 * len(u))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam; its fused kernel where every parameter allows it (the same update rule)."""
        params = list(self.parameters())
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
        return torch.optim.Adam(params, lr=self.hparams.lr, fused=fused or None)

    def objective(self, batch: tuple[Tensor, Tensor, Tensor]
                  ) -> tuple[Tensor, dict[str, Tensor]]:
        """The method's loss on one batch ``(users, positives, negatives)`` and the scalars
        to log (``train/...``; averaged over the batches of a Lightning step)."""
        raise NotImplementedError

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One optimiser step per batch of the group the loader handed over.

        ``batch``: a group ``(users, positives, negatives, sizes)`` (:func:`split_group`) or one
        batch. Manual optimisation: the same zero_grad / backward / Adam step per batch as
        Lightning's automatic loop would run, without its per-step cost.
        """
        group = split_group(batch)
        opt = self.optimizers()
        sums: dict[str, Tensor] = {}
        for b in group:
            opt.zero_grad(set_to_none=True)
            loss, logs = self.objective(b)
            self.manual_backward(loss)
            opt.step()
            for k, v in logs.items():
                v = v.detach()
                sums[k] = sums[k] + v if k in sums else v
        self.log_dict({k: v / len(group) for k, v in sums.items()}, prog_bar=True,
                      batch_size=len(group))

    # -- evaluation -----------------------------------------------------------------------

    def _start_eval(self) -> None:
        with torch.no_grad():
            users, items = self.embeddings()
        names = []
        for k in self.hparams.ks:
            names += [f"{m}_{k}{g}" for m in ("recall", "ndcg") for g in ("", "_tail", "_inactive")]
            names.append(f"avg_pop_{k}")
        accs = {k: rk.RankingAccumulator(names, self.n_items, self.device) for k in self.hparams.ks}
        self._eval = {"users": users, "items": items, "acc": accs}

    def _eval_step(self, batch: Tensor, stage: str) -> None:
        users = batch
        e = self._eval
        scores = e["users"][users] @ e["items"].T
        exclude = csr_rows_dense(self.train_indptr, self.train_indices, users, self.n_items)
        if stage == "test":
            exclude |= csr_rows_dense(self.valid_indptr, self.valid_indices, users, self.n_items)
            truth = csr_rows_dense(self.test_indptr, self.test_indices, users, self.n_items)
        else:
            truth = csr_rows_dense(self.valid_indptr, self.valid_indices, users, self.n_items)
        tail_truth = truth & ~self.head_item
        inactive = ~self.active_user[users]
        top_all = rk.topk_items(scores, max(self.hparams.ks), exclude)
        for k in self.hparams.ks:
            acc, top = e["acc"][k], top_all[:, :k]
            for suffix, t, keep in (("", truth, None), ("_tail", tail_truth, None),
                                    ("_inactive", truth, inactive)):
                hit, n = rk.hits(top, t), t.sum(1)
                rec, ndcg = rk.recall_at_k(hit, n), rk.ndcg_at_k(hit, n)
                if keep is not None:
                    rec, ndcg = rec[keep], ndcg[keep]
                acc.add(f"recall_{k}{suffix}", rec)
                acc.add(f"ndcg_{k}{suffix}", ndcg)
            acc.add(f"avg_pop_{k}", rk.mean_popularity(top, self.item_popularity))
            acc.cover(top)

    def _end_eval(self, stage: str) -> None:
        out: dict[str, float] = {}
        for k, acc in self._eval["acc"].items():
            state = self.trainer.strategy.reduce(acc.state(), reduce_op="sum")
            vals = acc.compute(state)
            vals[f"coverage_{k}"] = vals.pop("coverage")
            out.update(vals)
        self.log_dict({f"{stage}/{k}": v for k, v in out.items()}, sync_dist=False)
        self._eval = {}

    def on_validation_epoch_start(self) -> None:
        self._start_eval()

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._end_eval("val")

    def on_test_epoch_start(self) -> None:
        self._start_eval()

    def test_step(self, batch: Tensor, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._end_eval("test")


class BPR(CFRecommender):
    """The plain backbone: BPR loss plus L2 on the batch embeddings (rows ``mf``, ``lightgcn``)."""

    search_space = {"lr": ("log", 1e-4, 1e-2), "reg": ("log", 1e-6, 1e-2)}

    def objective(self, batch: tuple[Tensor, Tensor, Tensor]
                  ) -> tuple[Tensor, dict[str, Tensor]]:
        u, i, j = batch
        loss, _ = self.bpr_loss(u, i, j, reg=self.hparams.reg)
        return loss, {"train/loss": loss}


class IPS(CFRecommender):
    """Inverse-propensity-weighted BPR (rows ``*+ips``).

    Propensity of item i: p_i = (n_i / max_j n_j)^eta (Yang et al., RecSys 2018, eq. 6 style
    power-law propensity); each positive pair is weighted by min(1/p_i, max_weight),
    normalised to mean 1 over the training interactions so the learning rate keeps
    its meaning: L = mean_(u,i,j) w_i * -log sigmoid(s_ui - s_uj).
    """

    search_space = {"lr": ("log", 1e-4, 1e-2), "eta": ("float", 0.1, 1.0),
                    "max_weight": ("log", 2.0, 100.0)}

    def __init__(self, info: RecData, eta: float = 0.5, max_weight: float = 20.0, **kw: Any):
        super().__init__(info, **kw)
        pop = info.item_popularity.to(torch.float32).clamp(min=1)
        w = (pop / pop.max()).pow(-eta).clamp(max=max_weight)
        w = w / (w[info.train_item].mean())
        self.register_buffer("ips_weight", w, persistent=False)

    def objective(self, batch: tuple[Tensor, Tensor, Tensor]
                  ) -> tuple[Tensor, dict[str, Tensor]]:
        u, i, j = batch
        loss, _ = self.bpr_loss(u, i, j, weight=self.ips_weight[i], reg=self.hparams.reg)
        return loss, {"train/loss": loss}
