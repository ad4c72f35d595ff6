"""Optuna sweeps over a method row's declared search space, each trial an MLflow child run.

One study per (benchmark, dataset, method row), named ``<benchmark>-<dataset>-<row>``,
in ``sqlite:///optuna.db`` unless ``OPTUNA_STORAGE`` (or ``--storage``) names another
(PostgreSQL for several machines). TPE sampler, median pruner through
optuna-integration's Lightning pruning callback, the objective the benchmark's monitored
validation metric. The study continues until it holds ``trials`` finished (complete or
pruned) trials, so rerunning the same command, or a second process on the same storage,
adds to it. Trials of a killed process are marked failed by Optuna's heartbeat and never
count as complete. The best parameters go to ``benchmarks/tuned/<benchmark>-<dataset>.yaml``.

A method declares its space as ``search_space = {"name": (kind, low, high), ...}`` with
kind ``float``, ``log`` or ``int``, or ``{"name": ("cat", [choices])}``.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from harness import registry, tracking
from harness.errors import UserError
from harness.runner import Runner
from harness.spec import Benchmark

log = logging.getLogger(__name__)
KINDS = ("float", "log", "int", "cat")


def storage_url(explicit: str | None = None) -> str:
    """``explicit``, else ``$OPTUNA_STORAGE``, else ``sqlite:///<cwd>/optuna.db``."""
    return explicit or os.environ.get("OPTUNA_STORAGE") or f"sqlite:///{Path.cwd() / 'optuna.db'}"


def validate_space(space: dict[str, Any], method: str) -> None:
    """Refuse a search space that would produce invalid values, before any trial runs."""
    if not space:
        raise UserError(f"method {method!r} declares no search_space; nothing to sweep")
    for name, spec in space.items():
        kind = spec[0] if isinstance(spec, tuple | list) and spec else None
        if kind not in KINDS:
            raise UserError(f"{method}.search_space[{name!r}] = {spec!r}: the kind must be one of "
                            f"{KINDS}, e.g. ('log', 1e-4, 1e-2)")
        if kind == "cat":
            if len(spec) != 2 or not list(spec[1]):
                raise UserError(f"{method}.search_space[{name!r}]: use ('cat', [choice, ...])")
            continue
        if len(spec) != 3 or not all(isinstance(v, int | float) for v in spec[1:]):
            raise UserError(f"{method}.search_space[{name!r}] = {spec!r}: use (kind, low, high)")
        low, high = spec[1], spec[2]
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            raise UserError(f"{method}.search_space[{name!r}]: low {low} must be below high {high}")
        if kind == "log" and low <= 0:
            raise UserError(f"{method}.search_space[{name!r}]: a log range needs low > 0, got {low}")


def suggest(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    """Draw one value per parameter of the space from an Optuna trial."""
    out: dict[str, Any] = {}
    for name, spec in space.items():
        kind = spec[0]
        if kind == "cat":
            out[name] = trial.suggest_categorical(name, list(spec[1]))
        elif kind == "int":
            out[name] = trial.suggest_int(name, int(spec[1]), int(spec[2]))
        else:
            out[name] = trial.suggest_float(name, float(spec[1]), float(spec[2]), log=kind == "log")
    return out


def open_study(name: str, storage: str, direction: str) -> Any:
    """Create or load a study; an unreachable storage is a one-line user error."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    last: Exception | None = None
    for attempt in range(4):  # processes starting together race to create the schema
        try:
            rdb = optuna.storages.RDBStorage(
                storage, heartbeat_interval=15, grace_period=45,
                engine_kwargs={"pool_pre_ping": True} if not storage.startswith("sqlite") else None,
            )
            return optuna.create_study(
                study_name=name, storage=rdb, load_if_exists=True, direction=direction,
                sampler=optuna.samplers.TPESampler(n_startup_trials=5),
                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
            )
        except Exception as exc:  # sqlalchemy errors, bad URLs, missing drivers
            last = exc
            if "refused" in str(exc) or "could not translate" in str(exc) or "No module" in str(exc):
                break
            time.sleep(0.5 + random.random() * (attempt + 1))
    raise UserError(
        f"cannot open Optuna storage {storage!r} ({type(last).__name__}: "
        f"{str(last).splitlines()[0][:200]}); check OPTUNA_STORAGE or --storage, "
        "e.g. sqlite:///optuna.db or postgresql://user:pass@host/db"
    )


def tuned_path(bench: str, dataset: str) -> Path:
    """``benchmarks/tuned/<bench>-<dataset>.yaml`` under the working directory."""
    return Path.cwd() / "benchmarks" / "tuned" / f"{bench}-{dataset}.yaml"


def load_tuned(bench: Benchmark) -> dict[str, dict[str, Any]]:
    """dataset -> row -> parameters, from every tuned YAML of this benchmark."""
    out = {}
    for ds in bench.datasets:
        path = tuned_path(bench.name, ds)
        if path.exists():
            out[ds] = yaml.safe_load(path.read_text()) or {}
    if not out:
        raise UserError(f"no tuned parameters for {bench.name} (looked for "
                        f"{tuned_path(bench.name, bench.datasets[0])}); run `make sweep` first")
    return out


def write_tuned(bench: str, dataset: str, row: str, params: dict[str, Any], note: str) -> Path:
    path = tuned_path(bench, dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    data[row] = {k: (float(v) if isinstance(v, float) else v) for k, v in params.items()}
    path.write_text(f"# {note}\n" + yaml.safe_dump(data, sort_keys=True))
    return path


def sweep(bench: Benchmark, row: str, dataset: str, trials: int, storage: str | None = None,
          uri: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Run the study until it has ``trials`` finished trials; export and return the best."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState
    from optuna_integration import PyTorchLightningPruningCallback

    if row not in bench.methods:
        raise UserError(f"benchmark {bench.name} has no method row {row!r}; rows: "
                        f"{', '.join(bench.methods)}")
    if dataset not in bench.datasets:
        raise UserError(f"benchmark {bench.name} has no dataset {dataset!r}; datasets: "
                        f"{', '.join(bench.datasets)}")
    base = next(r for r in bench.runs if r.label == row and r.dataset_label == dataset)
    cls = registry.load("method", base.method)
    space = dict(getattr(cls, "search_space", {}) or {})
    validate_space(space, base.method)
    storage = storage_url(storage)
    name = f"{bench.name}-{dataset}-{row}"
    study = open_study(name, storage, "maximize" if base.mode == "max" else "minimize")
    runner = Runner(bench, uri=uri, progress=progress)
    parent = runner.mlf.create_run(
        runner.experiment_id, run_name=f"sweep-{name}-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={tracking.TAG_KIND: "sweep", "study": name, "storage": storage, **runner.git},
    )
    pid = parent.info.run_id

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker_pid", os.getpid())
        trial.set_user_attr("worker_host", socket.gethostname())
        params = suggest(trial, space)
        spec = replace(base, params={**base.params, **params})
        print(f"[trial {trial.number}] {params}", flush=True)
        pruner = PyTorchLightningPruningCallback(trial, monitor=spec.monitor)
        tags = {"optuna.study": name, "optuna.trial": str(trial.number), "optuna.state": "running"}
        try:
            result = runner.run_one(spec, pid, callbacks=[pruner], reraise=(optuna.TrialPruned,),
                                    tags=tags)
        except optuna.TrialPruned as exc:
            runner.mlf.set_tag(exc.run_id, "optuna.state", "pruned")  # type: ignore[attr-defined]
            raise
        if result.run_id:
            state = "complete" if result.status in ("done", "skipped") else "failed"
            runner.mlf.set_tag(result.run_id, "optuna.state", state)
            trial.set_user_attr("mlflow_run_id", result.run_id)
        if result.status == "failed" or result.best_score is None:
            raise RuntimeError(f"trial run failed: {result.error}")
        return result.best_score

    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    status = "FAILED"
    try:
        if done < trials:
            study.optimize(objective, n_trials=trials - done, catch=(RuntimeError,),
                           callbacks=[MaxTrialsCallback(trials, states=finished)])
        status = "FINISHED"
    finally:
        runner.mlf.set_terminated(pid, status)
    counts = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,)))
              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise UserError(f"study {name} has no complete trial yet ({counts}); rerun to continue")
    best = study.best_trial
    path = write_tuned(bench.name, dataset, row, best.params,
                       f"written by `harness sweep`: study {name}, best of {len(complete)} "
                       f"complete trials, {base.monitor} = {best.value:.6g} (validation)")
    for k, v in counts.items():
        runner.mlf.log_metric(pid, f"trials_{k}", v)
    runner.mlf.log_artifact(pid, str(path), "tuned")
    return {"study": name, "storage": storage, "best_value": best.value,
            "best_params": best.params, "counts": counts, "path": str(path)}
