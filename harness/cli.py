"""``harness``: list, bench, report, sweep, sync. A :class:`~harness.errors.UserError` (any
family's bad input) ends with one ``error:`` line; Ctrl-C with a line saying how to resume."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Any

from harness import console, registry, spec, tracking
from harness.errors import UserError


def _trainer_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    given = vars(args)
    for name in ("accelerator", "devices", "strategy", "num_nodes", "precision", "max_epochs"):
        v = given.get(name)
        if v not in (None, ""):
            out[name] = int(v) if isinstance(v, str) and v.isdigit() else v
    return out


def _load(args: argparse.Namespace) -> spec.Benchmark:
    return spec.load(args.benchmark, profile=args.profile, seeds=args.seeds, data_dir=args.data,
                     dataset=args.dataset, trainer=_trainer_overrides(args), tuned=args.tuned,
                     backbone=args.backbone)


def cmd_list(args: argparse.Namespace) -> int:
    broken = 0
    for kind in ("method", "dataset"):
        print(f"{kind}s:")
        for name, target, doc, problem in registry.describe(kind):
            print(f"  {name:<12} {target:<45} {doc}")
            if problem:
                broken += 1
                print(f"  {'':<12} BROKEN: {problem}")
    print("benchmarks:")
    for b in spec.available():
        print(f"  {b}")
    if broken:
        print(f"error: {broken} plugin(s) break the contract (harness/api.py, docs/architecture.md)",
              file=sys.stderr)
    return 1 if broken else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from harness import report
    from harness.runner import Runner

    bench = _load(args)
    start = time.time()
    runner = Runner(bench, uri=args.tracking_uri, run_dir=args.run_dir,
                    progress=not args.no_progress and args.jobs == 1, jobs=args.jobs)
    print(f"benchmark {bench.name}, profile {bench.profile}: {len(bench.runs)} runs "
          f"({len(bench.methods)} methods x {len(bench.datasets)} datasets x "
          f"{len(bench.config['seeds'])} seeds); tracking {runner.uri}", flush=True)
    parent, results = runner.run_all()
    if tracking.global_rank() != 0:  # under torchrun / SLURM only rank 0 reports
        return 0
    failed = [r for r in results if r.status == "failed"]
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    print(f"\nruns: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed "
          f"in {time.time() - start:.0f} s", flush=True)
    for r in failed:
        print(f"  FAILED {r.spec.name}: {r.error} (MLflow run {r.run_id}, see error.txt)")
    if not args.no_report:
        path, md = report.write(bench, runner.uri, args.reports, run_id=parent)
        print("\n" + md)
        print(f"report: {path} (+ .tex, .csv, .png); MLflow run {parent}")
    return 1 if failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from harness import report

    bench = _load(args)
    path, md = report.write(bench, args.tracking_uri, args.reports)
    print(md)
    print(f"report: {path} (+ .tex, .csv, .png)")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from harness import sweep

    bench = _load(args)
    row = args.row or (bench.proposed[0] if bench.proposed else next(iter(bench.methods)))
    dataset = args.dataset if args.dataset in bench.datasets else bench.datasets[0]
    out = sweep.sweep(bench, row, dataset, args.trials, storage=args.storage,
                      uri=args.tracking_uri, progress=not args.no_progress)
    c = out["counts"]
    print(f"study {out['study']} in {out['storage']}: {c['complete']} complete, {c['pruned']} "
          f"pruned, {c['fail']} failed trials")
    print(f"best {bench.config['monitor']['metric']} = {out['best_value']:.6g} with "
          f"{out['best_params']}")
    print(f"written to {out['path']}; use it with `make bench METHOD={bench.name} TUNED=1`")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    uri = tracking.tracking_uri(args.tracking_uri)
    if uri.startswith("http"):
        tracking.configure_http_retries()
    mlf = tracking.client(uri)
    files = tracking.journal_files(args.run_dir)
    left = 0
    for path in files:
        journal = tracking.Journal(mlf, path)
        n = journal.pending
        delivered = journal.flush()
        print(f"{path}: {n} pending writes {'delivered' if delivered else 'still pending'}")
        left += 0 if delivered else journal.pending
    print(f"{len(files)} journals, {left} writes still pending" if files else "nothing pending")
    return 1 if left else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registered methods, datasets and benchmarks").set_defaults(
        fn=cmd_list)
    sy = sub.add_parser("sync", help="deliver MLflow writes kept locally while the server was away")
    sy.add_argument("--tracking-uri", default=None)
    sy.add_argument("--run-dir", default="runs")
    sy.set_defaults(fn=cmd_sync)
    for name, fn, help_ in (("bench", cmd_bench, "run a benchmark and print its table"),
                            ("report", cmd_report, "rebuild a benchmark's tables from MLflow"),
                            ("sweep", cmd_sweep, "tune a method row with an Optuna study")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("benchmark", help="benchmark name (benchmarks/<name>.yaml) or a YAML path")
        s.add_argument("--profile", default=os.environ.get("PROFILE") or "default")
        s.add_argument("--seeds", type=int, default=None, help="number of seeds (0..n-1)")
        s.add_argument("--data", default=None, help="directory with real data")
        s.add_argument("--dataset", default=None, help="dataset label or real category name")
        s.add_argument("--backbone", default=None,
                       help="local Hugging Face causal-LM directory (LLM recommenders)")
        s.add_argument("--tracking-uri", default=None,
                       help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
        s.add_argument("--reports", default="reports", help="output directory for tables")
        s.add_argument("--run-dir", default="runs", help="checkpoint directory")
        for t in ("accelerator", "devices", "strategy", "num_nodes", "precision", "max_epochs"):
            s.add_argument(f"--{t.replace('_', '-')}", dest=t, default=None)
        s.add_argument("--no-progress", action="store_true", help="hide progress bars")
        s.add_argument("--jobs", type=int, default=int(os.environ.get("JOBS") or 1),
                       help="independent runs at once, each on its own GPU or CPU share")
        s.add_argument("--no-report", action="store_true", help="skip the table at the end")
        s.add_argument("--tuned", action="store_true",
                       help="use the parameters in benchmarks/tuned/<benchmark>-<dataset>.yaml")
        if name == "sweep":
            s.add_argument("--row", default=None, help="method row to tune (default: first proposed)")
            s.add_argument("--trials", type=int, default=20, help="finished trials the study should hold")
            s.add_argument("--storage", default=None,
                           help="Optuna storage URL (default $OPTUNA_STORAGE or sqlite:///optuna.db)")
        s.set_defaults(fn=fn)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import lightning.pytorch  # noqa: F401  (configures its loggers on import; quiet them after)

    console.quiet()
    try:
        return args.fn(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
