"""``harness``: list, bench, report, sweep, sync, reproduce. A :class:`~harness.errors.UserError` (any
family's bad input) ends with one ``error:`` line; Ctrl-C with a line saying how to resume."""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from harness import console, registry, spec
from harness.errors import (
    Interrupted,
    UserError,
    raise_on_signals,
    received_signal,
    restore_signals,
)


class _Lazy:
    """``harness.tracking`` on first attribute access: it imports Lightning (seconds), which
    ``harness list`` does not need. (Not importlib's LazyLoader: a lazy module left in
    ``sys.modules`` is touched, and so imported, in the middle of torch's own import.)"""

    def __getattr__(self, name: str) -> Any:
        from harness import tracking as module

        return getattr(module, name)


tracking: Any = _Lazy()

_TRAINER_FLAGS = ("accelerator", "devices", "strategy", "num_nodes", "precision", "max_epochs")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line: ``error: <what>; see harness <cmd> --help``."""

    _argv: list[str] = []

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        prog = self.prog  # the subcommand's help, also for errors the top-level parser reports
        subs = next((a.choices for a in self._actions if isinstance(a, argparse._SubParsersAction)), {})
        cmd = next((a for a in self._argv if not a.startswith("-")), None)
        if cmd in subs:
            prog = subs[cmd].prog
        self.exit(2, f"error: {message}; see {prog} --help\n")


def _int_arg(low: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer; give {what}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is out of range; give {what}")
        return value

    parse.__name__ = "integer"
    return parse


def _trainer_arg(name: str) -> Callable[[str], Any]:
    """An argparse type for a Trainer flag: the value typed as Lightning takes it, and checked
    against what ``lightning.pytorch.Trainer`` accepts (:func:`harness.spec.trainer_problem`)."""

    def parse(text: str) -> Any:
        value: Any = text.strip()
        if re.fullmatch(r"-?\d+", value):
            value = int(value)
        problem = spec.trainer_value_error(name, value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = name
    return parse


def _jobs(args: argparse.Namespace, default: int | None = None) -> int:
    """``--jobs``, else ``$JOBS``, else ``default`` (the benchmark's ``jobs:``), else 1; a bad
    ``$JOBS`` is a one-line error."""
    if args.jobs is not None:
        return int(args.jobs)
    text = os.environ.get("JOBS", "").strip()
    if not text:
        return default or 1
    if not re.fullmatch(r"\d+", text) or int(text) < 1:
        raise UserError(f"JOBS={text!r} in the environment is not a positive integer; set JOBS=1 "
                        "or more (independent runs at once), or unset it")
    return int(text)


def _trainer_overrides(args: argparse.Namespace) -> dict[str, Any]:
    given = vars(args)
    return {name: given[name] for name in _TRAINER_FLAGS if given.get(name) not in (None, "")}


def _load(args: argparse.Namespace) -> spec.Benchmark:
    return spec.load(args.benchmark, profile=args.profile, seeds=args.seeds, data_dir=args.data,
                     dataset=args.dataset, trainer=_trainer_overrides(args), tuned=args.tuned,
                     backbone=args.backbone)


def cmd_list(args: argparse.Namespace) -> int:
    if args.check:  # the plugins import Lightning: configure and quiet its loggers first
        import lightning.pytorch  # noqa: F401

        console.quiet()
    broken = 0
    for kind in ("method", "dataset"):
        print(f"{kind}s:")
        for name, target, doc, problem in registry.describe(kind, check_contract=args.check):
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


@dataclass
class _Outcome:
    """What :func:`_bench` did: exit code, run counts, failed runs, the report written."""

    code: int
    counts: dict[str, int] = field(default_factory=dict)
    failed: list[Any] = field(default_factory=list)
    written: Any = None  # harness.report.Written


def _bench(args: argparse.Namespace, bench: spec.Benchmark) -> _Outcome:
    """Run a loaded benchmark as ``harness bench`` does (finished run keys skipped, interrupted
    runs resumed), then its report and claims unless ``--no-report``."""
    from harness import report
    from harness.runner import Runner

    jobs = _jobs(args, bench.jobs)
    start = time.time()
    runner = Runner(bench, uri=args.tracking_uri, run_dir=args.run_dir,
                    progress=not args.no_progress and jobs == 1, jobs=jobs)
    print(f"benchmark {bench.name}, profile {bench.profile}: {len(bench.runs)} runs "
          f"({len(bench.methods)} methods x {len(bench.datasets)} datasets x "
          f"{len(bench.config['seeds'])} seeds); tracking {tracking.redact(runner.uri)}", flush=True)
    parent, results = runner.run_all()
    if tracking.global_rank() != 0:  # under torchrun / SLURM only rank 0 reports
        return _Outcome(0)
    failed = [r for r in results if r.status == "failed"]
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    print(f"\nruns: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed "
          f"in {time.time() - start:.0f} s", flush=True)
    for r in failed:
        print(f"  FAILED {r.spec.name}: {r.error} (MLflow run {r.run_id}, see error.txt)")
    written = None
    if not getattr(args, "no_report", False):
        written = report.write_full(bench, runner.uri, args.reports, run_id=parent)
        print("\n" + written.md)
        print(f"report: {written.path} (+ .tex, .csv, .png); MLflow run {parent}")
        _print_claims(written)
    return _Outcome(1 if failed else 0, counts, failed, written)


def _print_claims(written: Any) -> None:
    from harness import claims

    if written.claims:
        print("\n" + "\n".join(claims.summary_table(written.claims)))
        print(f"claims: {claims.count_line(written.claims)}; {written.files[0]} (+ .csv)")


def cmd_bench(args: argparse.Namespace) -> int:
    _jobs(args)  # a bad $JOBS fails before anything is read
    tracking.tracking_uri(args.tracking_uri)  # a URI that cannot work fails before anything runs
    return _bench(args, _load(args)).code


def cmd_report(args: argparse.Namespace) -> int:
    from harness import report

    tracking.tracking_uri(args.tracking_uri)
    bench = _load(args)
    written = report.write_full(bench, args.tracking_uri, args.reports, require_runs=True)
    print(written.md)
    print(f"report: {written.path} (+ .tex, .csv, .png)")
    _print_claims(written)
    return 0


# make variables for the flags `harness reproduce` shares with `make reproduce`
_MAKE_VARS = {"seeds": "SEEDS", "data": "DATA", "dataset": "DATASET", "backbone": "BACKBONE",
              "devices": "DEVICES", "accelerator": "ACCELERATOR", "strategy": "STRATEGY",
              "num_nodes": "NUM_NODES", "precision": "PRECISION", "jobs": "JOBS"}


def _reproduce_command(args: argparse.Namespace, names: list[str] | None) -> str:
    """The command that reproduces ``names`` (None: every benchmark) with these options, as
    ``make reproduce ...`` where make can say it, else as ``harness reproduce ...``."""
    given = {k: v for k, v in vars(args).items() if v not in (None, False, "")}
    flags = [f"--profile {shlex.quote(args.profile)}"]
    flags += [f"--{k.replace('_', '-')} {shlex.quote(str(given[k]))}"
              for k in (*_MAKE_VARS, "max_epochs") if k in given]
    flags += ["--tuned"] if given.get("tuned") else []
    for k, default in (("tracking_uri", None), ("reports", "reports"), ("run_dir", "runs")):
        if given.get(k, default) != default:
            flags.append(f"--{k.replace('_', '-')} {shlex.quote(tracking.redact(str(given[k])))}")
    harness = " ".join(["harness reproduce", *(shlex.quote(n) for n in names or []), *flags])
    if any(k in given for k in ("max_epochs", "tracking_uri")) or \
            given.get("reports", "reports") != "reports" or given.get("run_dir", "runs") != "runs":
        return harness
    make = ["make reproduce", f"PROFILE={shlex.quote(args.profile)}"]
    if names:
        make.append(f"METHODS={shlex.quote(' '.join(names))}")
    make += [f"{var}={shlex.quote(str(given[k]))}" for k, var in _MAKE_VARS.items() if k in given]
    make += ["TUNED=1"] if given.get("tuned") else []
    return " ".join(make)


def _paper_of(name: str) -> list[str]:
    """The ``paper:`` a benchmark's YAML names, read without validating it (for a failed one)."""
    from pathlib import Path

    try:
        path = Path(name) if name.endswith((".yaml", ".yml")) else spec.benchmarks_dir() / f"{name}.yaml"
        raw = spec.read_yaml(path)
    except UserError:
        return []
    paper = raw.get("paper") if isinstance(raw, dict) else None
    return [paper] if isinstance(paper, str) else []


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Every benchmark named (default: all) as ``harness bench`` runs it, its report and claims,
    then ``reports/REPRODUCTION.md``. A benchmark that fails is on the page with its error and
    the others still run; the exit status is 1 if any failed."""
    import traceback
    from datetime import UTC, datetime
    from pathlib import Path

    from harness import claims

    _jobs(args)
    uri = tracking.tracking_uri(args.tracking_uri)
    names = args.benchmarks or spec.available()
    unknown = [n for n in names if not n.endswith((".yaml", ".yml")) and n not in spec.available()]
    if unknown:
        raise UserError(f"no benchmark {', '.join(map(repr, unknown))}; available: "
                        f"{', '.join(spec.available())} (METHODS=\"aurl tsformer\" with make)")
    git = tracking.git_info()
    command = _reproduce_command(args, args.benchmarks or None)
    page = Path(args.reports) / "REPRODUCTION.md"
    entries: list[claims.Reproduced] = []
    for i, name in enumerate(names, 1):
        print(f"\n=== reproduce {i}/{len(names)}: {name} ({args.profile} profile) ===", flush=True)
        one = argparse.Namespace(**{**vars(args), "benchmark": name})
        entry = claims.Reproduced(benchmark=name, profile=args.profile,
                                  command=_reproduce_command(args, [name]))
        try:
            bench = _load(one)
            entry.benchmark = bench.name
            entry.alpha = bench.claims_alpha
            entry.papers = list(dict.fromkeys(c.paper for c in bench.claims)) or \
                ([bench.config["paper"]] if bench.config.get("paper") else [])
            outcome = _bench(one, bench)
            entry.runs = outcome.counts
            if outcome.failed:
                entry.status = "runs failed"
                entry.error = "; ".join(f"{r.spec.name}: {r.error}" for r in outcome.failed)
            if outcome.written is not None:
                w = outcome.written
                entry.results, entry.provenance = w.claims, w.provenance
                entry.files = [str(w.path), *map(str, w.files)]
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            entry.status, entry.error = "failed", str(exc)
            entry.papers = entry.papers or _paper_of(name)
        except Exception as exc:  # a bug in one benchmark does not stop the others
            if received_signal() is not None:
                raise
            traceback.print_exc()
            entry.status, entry.error = "failed", f"{type(exc).__name__}: {exc}"
        entries.append(entry)
        if tracking.global_rank() != 0:  # under torchrun / SLURM only rank 0 writes the page
            continue
        page.parent.mkdir(parents=True, exist_ok=True)  # after each: an interrupted run keeps a page
        page.write_text(claims.reproduction_markdown(
            entries, args.profile, command, git, datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            tracking.redact(uri)))
    if tracking.global_rank() != 0:
        return 1 if any(e.status == "failed" for e in entries) else 0
    print(f"\n{page}:")
    for e in entries:
        tally = claims.count_line(e.results) if e.results else "no claims judged"
        print(f"  {e.benchmark}: {e.status}; {tally}" + (f" ({e.error})" if e.status == "failed" else ""))
    bad = [e.benchmark for e in entries if e.status != "done"]
    if bad:
        print(f"error: {len(bad)} benchmark(s) did not finish cleanly: {', '.join(bad)} (see {page})",
              file=sys.stderr)
    return 1 if bad else 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from harness import sweep

    tracking.tracking_uri(args.tracking_uri)
    sweep.storage_url(args.storage)
    bench = _load(args)
    row = args.row or (bench.proposed[0] if bench.proposed else next(iter(bench.methods)))
    dataset = args.dataset if args.dataset in bench.datasets else bench.datasets[0]
    out = sweep.sweep(bench, row, dataset, args.trials, storage=args.storage,
                      uri=args.tracking_uri, progress=not args.no_progress)
    c = out["counts"]
    print(f"study {out['study']} in {tracking.redact(out['storage'])}: {c['complete']} complete, "
          f"{c['pruned']} pruned, {c['fail']} failed trials")
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
    p = _Parser(prog="harness", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="registered methods, datasets and benchmarks")
    ls.add_argument("--check", action="store_true",
                    help="also import every plugin and check it against the contract (seconds: "
                         "torch and Lightning); without it the list is read from the sources")
    ls.set_defaults(fn=cmd_list, light=True)
    sy = sub.add_parser("sync", help="deliver MLflow writes kept locally while the server was away")
    sy.add_argument("--tracking-uri", default=None)
    sy.add_argument("--run-dir", default="runs")
    sy.set_defaults(fn=cmd_sync)
    for name, fn, help_ in (("bench", cmd_bench, "run a benchmark and print its table"),
                            ("report", cmd_report, "rebuild a benchmark's tables from MLflow"),
                            ("sweep", cmd_sweep, "tune a method row with an Optuna study"),
                            ("reproduce", cmd_reproduce, "run benchmarks, judge their papers' claims, "
                             "write reports/REPRODUCTION.md")):
        s = sub.add_parser(name, help=help_)
        if name == "reproduce":
            s.add_argument("benchmarks", nargs="*", metavar="benchmark",
                           help="benchmarks to run (default: every one in benchmarks/)")
        else:
            s.add_argument("benchmark", help="benchmark name (benchmarks/<name>.yaml) or a YAML path")
        s.add_argument("--profile", default=os.environ.get("PROFILE") or "default")
        s.add_argument("--seeds", type=_int_arg(1, "a number of seeds >= 1"), default=None,
                       help="number of seeds (0..n-1)")
        s.add_argument("--data", default=None, help="directory with real data")
        s.add_argument("--dataset", default=None, help="dataset label or real category name")
        s.add_argument("--backbone", default=None,
                       help="local Hugging Face model directory: a causal LM (LLM recommenders), "
                            "a ViT or BERT (mimu), a diffusers Stable Diffusion pipeline (invdiff)")
        s.add_argument("--tracking-uri", default=None,
                       help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
        s.add_argument("--reports", default="reports", help="output directory for tables")
        s.add_argument("--run-dir", default="runs", help="checkpoint directory")
        for t in _TRAINER_FLAGS:
            s.add_argument(f"--{t.replace('_', '-')}", dest=t, default=None, type=_trainer_arg(t),
                           help=f"Trainer({t}=...), overriding the benchmark's")
        s.add_argument("--no-progress", action="store_true", help="hide progress bars")
        s.add_argument("--jobs", type=_int_arg(1, "a number of runs at once >= 1"), default=None,
                       help="independent runs at once, each on its own GPU or CPU share "
                       "(default $JOBS or 1)")
        if name != "reproduce":
            s.add_argument("--no-report", action="store_true", help="skip the table at the end")
        s.add_argument("--tuned", action="store_true",
                       help="use the parameters in benchmarks/tuned/<benchmark>-<dataset>.yaml")
        if name == "sweep":
            s.add_argument("--row", default=None, help="method row to tune (default: first proposed)")
            s.add_argument("--trials", type=_int_arg(1, "a number of trials >= 1"), default=20,
                           help="finished trials the study should hold")
            s.add_argument("--storage", default=None,
                           help="Optuna storage URL (default $OPTUNA_STORAGE or sqlite:///optuna.db)")
        s.set_defaults(fn=fn)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "light", False):  # `harness list` reads sources: no Lightning (seconds)
        import lightning.pytorch  # noqa: F401  (configures its loggers on import; quiet them after)

        console.quiet()
    previous = raise_on_signals()
    try:
        return args.fn(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        return exc.report()
    except KeyboardInterrupt:
        return Interrupted(signal.SIGINT).report()
    except Exception:
        sig = received_signal()
        if sig is None:
            raise
        return Interrupted(sig).report()  # lost inside an import: it surfaced as an ImportError
    finally:
        restore_signals(previous)


if __name__ == "__main__":
    sys.exit(main())
