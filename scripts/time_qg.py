"""Milliseconds per time step of the two-layer QG model (harness.datasets.qg), and spin-up KE.

    .venv/bin/python scripts/time_qg.py                      # nx 64 and 256, float64/32, 2 threads
    .venv/bin/python scripts/time_qg.py --threads 1 2 --batch 1 8
    .venv/bin/python scripts/time_qg.py --spinup-years 10     # + nx=256 spin-up, yearly mean KE

Each row: a model from ``random_init``, ``--warmup`` steps, then ``--repeats`` timed blocks of
``--steps`` steps (CUDA synchronised around each block); the table gives the median and the
best block in ms per step (per batch, not per member). CUDA rows are added when a GPU is
visible. The load average is printed because a shared machine slows both columns.
Reference (pyqg, Cython + FFTW, 2 cores): about 0.5 ms/step at nx=64 and 5-6 ms at nx=256.

``--spinup-years Y`` runs the eddy configuration at ``--spinup-nx`` (256) from random_init for
Y model years, recording per-layer KE daily, and prints the yearly means and the first year
from which every yearly mean stays within 10% of the mean over the second half of the run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from harness.datasets.qg import DAY, YEAR, QGConfig, QGModel, ke_timeseries


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    nx: int, dtype: torch.dtype, batch: int, device: torch.device, steps: int, repeats: int, warmup: int
) -> tuple[float, float]:
    """(median, best) ms per step over ``repeats`` blocks of ``steps`` steps."""
    m = QGModel(QGConfig(nx=nx), batch=(batch,) if batch > 1 else (), device=device, dtype=dtype)
    m.random_init(0)
    m.step(warmup)
    sync(device)
    blocks = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        m.step(steps)
        sync(device)
        blocks.append((time.perf_counter() - t0) / steps * 1e3)
    if not torch.isfinite(m.q).all():
        raise RuntimeError(f"non-finite state at nx={nx} {dtype}")
    return statistics.median(blocks), min(blocks)


def timing_table(args: argparse.Namespace) -> None:
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda"))
    dtypes = {"float64": torch.float64, "float32": torch.float32}
    print(f"torch {torch.__version__}, load average {os.getloadavg()[0]:.2f} (1 min), cpus {os.cpu_count()}")
    print()
    print("| device | threads | nx | dtype | batch | ms/step (median) | ms/step (best) |")
    print("|---|---|---|---|---|---|---|")
    for device in devices:
        threads = args.threads if device.type == "cpu" else [torch.get_num_threads()]
        name = "cpu" if device.type == "cpu" else torch.cuda.get_device_name(device)
        for th in threads:
            torch.set_num_threads(th)
            for nx in args.nx:
                steps = args.steps or (500 if nx <= 64 else 100)
                for dn in args.dtypes:
                    for batch in args.batch:
                        med, best = time_steps(
                            nx, dtypes[dn], batch, device, steps, args.repeats, args.warmup
                        )
                        print(
                            f"| {name} | {th} | {nx} | {dn} | {batch} | {med:.3f} | {best:.3f} |", flush=True
                        )
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


def spinup(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads[0])
    m = QGModel(QGConfig(nx=args.spinup_nx), dtype=torch.float64)
    m.random_init(args.seed)
    t0 = time.perf_counter()
    t, ke = ke_timeseries(m, days=args.spinup_years * 365.0, every=DAY, progress=True)
    wall = time.perf_counter() - t0
    print(
        f"\nspin-up nx={args.spinup_nx}: {args.spinup_years} model years in {wall:.0f} s "
        f"({wall / max(m.n_steps, 1) * 1e3:.2f} ms/step, {torch.get_num_threads()} threads)"
    )
    year = (t / YEAR - 1e-9).floor().long()
    n_years = int(year.max().item()) + 1
    means = torch.stack([ke[year == y].mean(0) for y in range(n_years)])  # [Y, 2]
    late = ke[t > t[-1] / 2].mean(0)
    print("\n| year | KE upper (m2/s2) | KE lower (m2/s2) | upper / late mean | lower / late mean |")
    print("|---|---|---|---|---|")
    for y in range(n_years):
        r = means[y] / late
        print(f"| {y + 1} | {means[y, 0]:.4e} | {means[y, 1]:.4e} | {r[0]:.3f} | {r[1]:.3f} |")
    within = ((means / late - 1).abs() < 0.10).all(-1).tolist()
    first = next((y for y in range(n_years) if all(within[y:])), None)
    print(
        f"\nKE growth from day 1 to the late mean: upper x{(late[0] / ke[0, 0]).item():.0f}, "
        f"lower x{(late[1] / ke[0, 1]).item():.0f}; min upper KE {ke[:, 0].min().item():.3e}"
    )
    if first is None:
        print("not steady: some yearly mean in every tail of the run differs from the late mean by >10%")
    else:
        print(f"statistically steady (yearly means within 10% of the late mean) from year {first + 1} on")
    print(f"final CFL {m.cfl().item():.3f}, finite: {bool(torch.isfinite(m.q).all())}")
    if args.save:
        torch.save({"t": t, "ke": ke, "nx": args.spinup_nx, "q": m.q}, args.save)
        print(f"saved KE series and final q to {args.save}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nx", type=int, nargs="+", default=[64, 256])
    p.add_argument("--dtypes", nargs="+", default=["float64", "float32"], choices=["float64", "float32"])
    p.add_argument("--batch", type=int, nargs="+", default=[1])
    p.add_argument(
        "--threads", type=int, nargs="+", default=[2], help="CPU intra-op threads (first one for --spinup)"
    )
    p.add_argument(
        "--steps", type=int, default=0, help="steps per timed block (default 500 at nx<=64, else 100)"
    )
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--cpu-only", action="store_true")
    p.add_argument("--no-timing", action="store_true", help="skip the timing table")
    p.add_argument("--spinup-years", type=float, default=0.0)
    p.add_argument("--spinup-nx", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default="", help="torch.save the spin-up KE series and final q here")
    args = p.parse_args()
    if not args.no_timing:
        timing_table(args)
    if args.spinup_years > 0:
        spinup(args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
