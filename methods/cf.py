"""Collaborative-filtering backbones, full-ranking evaluation, and the BPR and IPS baselines.

Every CF method in the harness is a :class:`CFRecommender`: a backbone
(:class:`MF` or :class:`LightGCN`) producing user and item embeddings, scores as
their dot product, and one ``training_step`` holding the method's whole
objective. Evaluation ranks every item for every user (training items masked,
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
        layers = [e]
        for _ in range(self.n_layers):
            e = _SymmetricSpMM.apply(adj, e)
            layers.append(e)
        out = torch.stack(layers).mean(0)
        return out[: self.n_users], out[self.n_users :]


#: the backbones a CF method can run on
BACKBONES = ("mf", "lightgcn")


class CFRecommender(Method):
    """Base of every CF method: backbone, optimiser, full-ranking validation and test.

    Subclasses write ``training_step`` (their objective) and may add hyperparameters.
    """

    #: 2: MF initialised Xavier-normal; LightGCN's backward by the symmetric product
    version = "2"

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
                 embeddings: tuple[Tensor, Tensor] | None = None
                 ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        """BPR (Rendle et al., 2009): -log sigmoid(s_ui - s_uj), optionally weighted per pair.

        ``embeddings`` lets a caller that already propagated the graph reuse its output.
        """
        users, items = embeddings if embeddings is not None else self.embeddings()
        eu, ei, ej = users[u], items[i], items[j]
        diff = (eu * (ei - ej)).sum(-1)  # s_ui - s_uj
        loss = -F.logsigmoid(diff)
        loss = (loss * weight).mean() if weight is not None else loss.mean()
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
            eu, ei, ej = enc.user.weight[u], enc.item.weight[i], enc.item.weight[j]
        return (eu.pow(2).sum() + ei.pow(2).sum() + ej.pow(2).sum()) / (2 * len(u))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

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

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        u, i, j = batch
        bpr, emb = self.bpr_loss(u, i, j)
        loss = bpr + self.hparams.reg * self.l2(u, i, j, emb)
        self.log("train/loss", loss, prog_bar=True)
        return loss


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

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        u, i, j = batch
        bpr, emb = self.bpr_loss(u, i, j, weight=self.ips_weight[i])
        loss = bpr + self.hparams.reg * self.l2(u, i, j, emb)
        self.log("train/loss", loss, prog_bar=True)
        return loss
