"""Time a 30-day TSformer forecast against the QG simulator running the same 30 days.

    .venv/bin/python scripts/time_forecast.py [--days 30] [--device cpu|cuda] [--threads 2]

The TSformer network is built as in ``benchmarks/tsformer.yaml`` (default profile, its
``t_in``, grid and width) but with ``t_out = days``: one forward pass gives every lead day.
The simulator is the eddy configuration at the resolution that made the data (nx=256,
dt=1 h: 24 steps a model day) plus the daily coarse-graining; its time is measured over
``--sim-days`` days and scaled to ``days``. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import time

import torch
import yaml

from harness.datasets.qg import DAY, QGConfig, QGModel, coarsen
from harness.methods.swin import TSformerNet
from harness.spec import benchmarks_dir


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--sim-days", type=float, default=3.0, help="simulated days measured (scaled to --days)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nx", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bench = yaml.safe_load((benchmarks_dir() / "tsformer.yaml").read_text())
    ds = bench["datasets"]["qg-daily"]["params"]
    row = bench["methods"]["tsformer"]["params"]
    grid = int((ds.get("sim") or {}).get("nx_daily", 32))
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in row.items()
          if k in ("dim", "heads", "window", "patch", "blocks", "mlp_ratio")}
    net = TSformerNet(3, 1, 2, ds.get("t_in", 5), args.days, (grid, grid), **kw).to(args.device).eval()
    x3 = torch.randn(1, ds.get("t_in", 5), 3, 2, grid, grid, device=args.device)
    x2 = torch.randn(1, ds.get("t_in", 5), 1, grid, grid, device=args.device)
    with torch.inference_mode():
        net(x3, x2)
        t_net = _median_time(lambda: net(x3, x2), 5)

    model = QGModel(QGConfig(nx=args.nx), device=args.device)
    model.random_init(0)
    steps = int(round(args.sim_days * DAY / model.cfg.dt))
    model.step(24)

    def simulate() -> None:
        for _ in range(int(round(args.sim_days))):
            model.step(int(DAY / model.cfg.dt))
            coarsen(model.q, grid)

    t_sim = _median_time(simulate, 1) * args.days / args.sim_days
    print(f"| what | {args.days}-day forecast (s) | per model day (ms) |")
    print("|---|---|---|")
    print(f"| TSformer, one pass, grid {grid}x{grid}, {sum(p.numel() for p in net.parameters())} "
          f"params, {args.device} x{args.threads} threads | {t_net:.3f} | {1e3 * t_net / args.days:.1f} |")
    print(f"| QG simulator nx={args.nx}, dt={model.cfg.dt:.0f} s ({steps} steps measured) | {t_sim:.1f} | "
          f"{1e3 * t_sim / args.days:.1f} |")
    print(f"\nspeed-up: {t_sim / t_net:.0f}x")


if __name__ == "__main__":
    main()
