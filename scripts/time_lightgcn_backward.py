"""Seconds per LightGCN training step: autograd's sparse-CSR backward against the symmetric
product (methods/cf.py, ``_SymmetricSpMM``), alternating in one process (3 rounds of 6 steps).

    .venv/bin/python scripts/time_lightgcn_backward.py default 2     # <size> <threads>
    .venv/bin/python scripts/time_lightgcn_backward.py 1m 1

A bare loop of the harness's BPR step and Adam (no Lightning), so load on a shared machine
hits both sides alike and the ratio is what carries over.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from harness.datasets.amazon import AmazonDataModule
from harness.methods import cf

SIZES = {"default": {},
         "1m": {"n_users": 60000, "n_items": 20000, "n_topics": 50, "mean_activity": 17.0}}


def main() -> None:
    size = sys.argv[1] if len(sys.argv) > 1 else "default"
    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
    t0 = time.time()
    dm = AmazonDataModule(synthetic=SIZES[size], batch_size=2048, cache_dir=".cache/harness")
    dm.setup()
    d = dm.info
    print(f"data {time.time() - t0:.0f} s; {d.n_users} users, {d.n_items} items, "
          f"{len(d.train_user)} training interactions", flush=True)
    model = cf.BPR(d, backbone="lightgcn", lr=1e-3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = cf.split_group(next(iter(dm.train_dataloader())))[:6]  # a loader item is a group
    symmetric = cf._SymmetricSpMM.apply

    def plain(adj: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return adj @ e  # autograd's own backward: transposes the CSR matrix

    def run(product) -> float:
        cf._SymmetricSpMM.apply = product
        t = time.perf_counter()
        for u, i, j in batches:
            opt.zero_grad()
            bpr, emb = model.bpr_loss(u, i, j)
            (bpr + 1e-4 * model.l2(u, i, j, emb)).backward()
            opt.step()
        return (time.perf_counter() - t) / len(batches)

    run(symmetric), run(plain)  # warm-up
    a, b = [], []
    for _ in range(3):
        a.append(run(plain))
        b.append(run(symmetric))
    cf._SymmetricSpMM.apply = symmetric
    pa, pb = statistics.median(a), statistics.median(b)
    steps = -(-len(d.train_user) // 2048)
    print(f"{size}: s/step autograd backward {pa:.4f}, symmetric {pb:.4f}, ratio {pb / pa:.3f}; "
          f"{steps} steps/epoch", flush=True)


if __name__ == "__main__":
    main()
