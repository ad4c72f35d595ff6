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
kind ``float``, ``log`` or ``int``, or ``{"name": ("cat", [choices])}`` (:mod:`harness.api`).
The tuned file is named after the final dataset label, so ``make sweep DATA=... DATASET=Books``
writes ``<benchmark>-Books.yaml``, the file ``make bench DATA=... DATASET=Books TUNED=1`` reads.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from harness import api, registry, tracking
from harness.errors import Interrupted, UserError
from harness.runner import Runner, process_tags
from harness.spec import Benchmark, tuned_path

log = logging.getLogger(__name__)


def storage_url(explicit: str | None = None) -> str:
    """``explicit``, else ``$OPTUNA_STORAGE``, else ``sqlite:///<cwd>/optuna.db``; checked.

    A URL that cannot work (not a database URL, unknown scheme, driver not installed, a
    ``sqlite:///`` path that cannot be a database) is a one-line :class:`UserError`.
    """
    url = explicit or os.environ.get("OPTUNA_STORAGE") or f"sqlite:///{Path.cwd() / 'optuna.db'}"
    source = "--storage" if explicit else "OPTUNA_STORAGE" if os.environ.get("OPTUNA_STORAGE") else ""
    tracking.check_database_url(url, "Optuna storage", source)
    return url


def validate_space(space: dict[str, Any], method: str) -> None:
    """Refuse an empty search space, or one that would produce invalid values."""
    if not space:
        raise UserError(f"method {method!r} declares no search_space; nothing to sweep")
    api.validate_space(space, method)


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
    first = str(last).splitlines()[0] if str(last).strip() else ""
    raise UserError(
        f"cannot open Optuna storage {tracking.redact(storage)!r} ({type(last).__name__}: "
        f"{tracking.redact(first)[:200]}); check OPTUNA_STORAGE or --storage, "
        "e.g. sqlite:///optuna.db or postgresql+psycopg2://user@host/db"
    )


def write_tuned(bench: str, dataset: str, row: str, params: dict[str, Any], note: str) -> Path:
    """Add ``row``'s best parameters to ``benchmarks/tuned/<bench>-<dataset>.yaml`` (atomically),
    with a header line ``# <row>: <note>`` saying where they come from; the other rows keep
    their parameters and their header lines."""
    from harness.cache import atomic_file

    path = tuned_path(bench, dataset)
    text = path.read_text() if path.exists() else ""
    data = (yaml.safe_load(text) or {}) if text else {}
    header = [line for line in text.splitlines()
              if line.startswith("#") and not line.startswith(f"# {row}: ")]
    data[row] = {k: (float(v) if isinstance(v, float) else v) for k, v in params.items()}
    with atomic_file(path) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in [*header, f"# {row}: {note}"])
                       + yaml.safe_dump(data, sort_keys=True))
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
    space = dict(cls.search_space)
    validate_space(space, base.method)
    storage = storage_url(storage)
    name = f"{bench.name}-{dataset}-{row}"
    study = open_study(name, storage, "maximize" if base.mode == "max" else "minimize")
    runner = Runner(bench, uri=uri, progress=progress)
    runner.close_stale_runs()  # a SIGKILLed sweep's parent and trial run
    parent = runner.mlf.create_run(
        runner.experiment_id, run_name=f"sweep-{name}-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={tracking.TAG_KIND: "sweep", "study": name, "storage": tracking.redact(storage),
              **runner.git, **process_tags()},
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
    except (KeyboardInterrupt, Interrupted):
        status = "KILLED"
        raise
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
    return {"study": name, "storage": tracking.redact(storage), "best_value": best.value,
            "best_params": best.params, "counts": counts, "path": str(path)}
