"""Executes a benchmark's runs with skip, resume and MLflow records (``spec`` expands them).

A run's key hashes everything that determines its result (method, parameters, dataset, its
arguments and raw-data fingerprint, seed, Trainer settings, the method's ``version``). A key
with a complete MLflow run is skipped; an incomplete one (killed, failed) is resumed into
the same MLflow run from ``runs/<benchmark>/<key>/<stage>/last.ckpt``.

Stages (:class:`harness.api.Method`): each of ``model.stages`` is one ``Trainer.fit`` with
its own checkpoint directory and metric prefix. Before it the runner calls
``model.begin_stage(stage)`` and hands the dataset the data the stage asks for,
``dm.use_stage_data(model.stage_data(stage))``. After it the model continues from that
stage's best checkpoint (selected on validation); a finished stage leaves a ``done`` marker
so a resumed run starts in the stage it was killed in. ``model.finish_stages()`` runs after
the last stage, before the test.

Shared stages: ``model.stage_independent = {stage: (param, ...)}`` names the row parameters
a stage does not depend on (MoLoRec's mixture temperature does not change its general LoRA).
Rows that differ only in those parameters then train that stage once: its checkpoints live
under ``runs/<benchmark>/stages/<key of the run without those parameters>/<stage>/``,
guarded by a file lock so parallel jobs wait for each other instead of training it twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, TQDMProgressBar

from harness import api, cache, checkpoints, console, registry, tracking
from harness.errors import Interrupted, UserError, raise_on_signals, received_signal
from harness.spec import Benchmark, RunSpec

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    spec: RunSpec
    key: str
    run_id: str | None
    status: str  # done | skipped | failed
    seconds: float = 0.0
    error: str | None = None
    best_score: float | None = None  # best validation value of the monitored metric


def make_datamodule(spec: RunSpec) -> api.DataModule:
    """Instantiate the run's dataset with its arguments and the run's seed."""
    cls = registry.load("dataset", spec.dataset)
    params = dict(spec.dataset_params)
    params.setdefault("seed", spec.seed)
    try:
        return cls(**params)
    except TypeError as exc:
        raise UserError(f"dataset {spec.dataset!r} rejected its arguments: {exc}") from None


def make_model(spec: RunSpec, dm: api.DataModule) -> api.Method:
    """Instantiate the run's method from the dataset's metadata and the row's parameters."""
    cls = registry.load("method", spec.method)
    try:
        model = cls(dm.info, **spec.params)
    except TypeError as exc:
        raise UserError(f"method {spec.method!r} rejected its parameters: {exc}") from None
    hidden = api.hidden_hyperparameters(model)
    if hidden:
        raise UserError(f"method {spec.method!r} does not save hyperparameters {hidden}: call "
                        "self.save_hyperparameters(ignore=['info']) in its __init__")
    return model


def run_key(spec: RunSpec, dm: api.DataModule) -> str:
    dm.prepare_data()
    return spec.key(dm.fingerprint(), str(registry.load("method", spec.method).version))


def stage_dir(run_dir: Path, spec: RunSpec, key: str, dm: api.DataModule, model: api.Method,
              stage: str) -> Path:
    """Checkpoint directory of one stage: the run's own, or a shared one (``stage_independent``)."""
    stages = tuple(model.stages)
    declared = model.stage_independent
    upto = stages[: stages.index(stage) + 1]  # a stage starts from the weights of those before it
    ignored = set.intersection(*(set(declared.get(s, ())) for s in upto))
    if not ignored:
        return run_dir / spec.benchmark / key / stage
    kept = {k: v for k, v in spec.params.items() if k not in ignored}
    shared = run_key(replace(spec, params={**kept, "__stages__": list(upto)}), dm)
    return run_dir / spec.benchmark / "stages" / shared / stage


@contextlib.contextmanager
def _stage_lock(root: Path) -> Iterator[None]:
    """Exclusive lock for a shared stage directory (one process per run; not under DDP ranks)."""
    if "stages" not in root.parts or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        yield
        return
    import fcntl

    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class ThrottledProgressBar(TQDMProgressBar):
    """Lightning's progress bar, redrawn at most every ``interval`` seconds (and at the end).

    The stock bar redraws after every step and reads the logged metrics back for its
    postfix; on a CF step of a millisecond or two that costs as much as the step itself.
    """

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__()
        self._interval, self._last = interval, 0.0

    def _should_update(self, current: int, total: int | float) -> bool:
        if not self.is_enabled:
            return False
        now = time.monotonic()
        if current == total or now - self._last >= self._interval:
            self._last = now
            return True
        return False


class StepClock(L.Callback):
    """Seconds a run spends in its training, validation and test loops (loading batches, the
    steps, the method's end-of-epoch evaluation), summed over every Trainer of the run.

    The rest of a run (data set-up, model building, checkpoint writes, MLflow writes,
    Trainer construction) is the harness's overhead around the method's own work; the
    runner logs ``steps_seconds`` and ``overhead_share`` = 1 - steps / run seconds.
    Checkpoint callbacks run after every other callback, so ``on_validation_end`` here
    stops the clock before the checkpoint is written.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self._t: float | None = None

    def _start(self, *_: Any) -> None:
        self._stop()
        self._t = time.perf_counter()

    def _stop(self, *_: Any) -> None:
        if self._t is not None:
            self.seconds += time.perf_counter() - self._t
            self._t = None

    on_train_epoch_start = on_validation_start = on_test_start = _start
    on_train_epoch_end = on_validation_end = on_test_end = _stop


class Runner:
    """Runs a benchmark's runs one after another inside one parent MLflow run."""

    def __init__(self, bench: Benchmark, uri: str | None = None, run_dir: str | Path = "runs",
                 progress: bool = True, jobs: int = 1):
        self.bench = bench
        self.jobs = max(1, jobs)
        self.uri = tracking.tracking_uri(uri)
        if self.uri.startswith("http"):
            tracking.configure_http_retries()
        self.run_dir = Path(run_dir)
        self.progress = progress
        self._clock = StepClock()  # one per run (run_one)
        self.mlf = tracking.client(self.uri)
        try:
            self.experiment_id = tracking.ensure_experiment(self.mlf, bench.name, self.uri)
        except UserError:
            raise
        except Exception as exc:
            raise UserError(tracking.unreachable_message(self.uri, exc)) from None
        self.git = tracking.git_info()

    # -- whole benchmark -------------------------------------------------------------------

    def run_all(self) -> tuple[str, list[RunResult]]:
        """Execute every run; returns the parent run id and one result per run.

        Before anything is recorded, every dataset is prepared (a bad data set is a user
        error before any run starts) and parent or child runs left RUNNING by a killed
        process of this host are closed as KILLED. The parent is closed on every exit path:
        FINISHED, FAILED, or KILLED on SIGINT / SIGTERM.
        """
        self.prepare_datasets()
        self.close_stale_runs()
        parent = self.mlf.create_run(
            self.experiment_id, run_name=f"{self.bench.name}-{self.bench.profile}-"
            f"{time.strftime('%Y%m%d-%H%M%S')}",
            tags={tracking.TAG_KIND: "bench", "benchmark": self.bench.name,
                  "profile": self.bench.profile, **self.git, **process_tags()},
        )
        pid = parent.info.run_id
        self.mlf.log_param(pid, "runs", len(self.bench.runs))
        status = "FAILED"
        start = time.time()
        try:
            results = self._run_parallel(pid) if self.jobs > 1 else self._run_serial(pid)
            status = "FINISHED"
        except (KeyboardInterrupt, Interrupted):
            status = "KILLED"
            raise
        finally:
            parent_journal = tracking.Journal(
                self.mlf, self.run_dir / self.bench.name / f"parent-{pid}" / "pending-mlflow.jsonl")
            parent_journal.call("log_metric", pid, "wall_seconds", time.time() - start)
            parent_journal.call("set_terminated", pid, status)
        return pid, results

    def prepare_datasets(self) -> None:
        """``prepare_data`` for each distinct dataset of the benchmark, before any run starts."""
        seen = set()
        for spec in self.bench.runs:
            sig = (spec.dataset, repr(spec.dataset_params))
            if sig not in seen:
                seen.add(sig)
                make_datamodule(spec).prepare_data()

    def close_stale_runs(self) -> list[str]:
        """Close the RUNNING runs of this experiment whose process (same host, by the
        ``harness.host`` / ``harness.pid`` tags) is gone: a SIGKILL or a power cut leaves them.
        Runs of a live process, or of another host, are left alone. Returns the closed ids."""
        if tracking.global_rank() != 0:
            return []
        host = socket.gethostname()
        closed = []
        stale = self.mlf.search_runs([self.experiment_id], filter_string="attributes.status = 'RUNNING'",
                                     max_results=1000)
        for run in stale:
            tags = run.data.tags
            pid = tags.get("harness.pid", "")
            if tags.get("harness.host") != host or not pid or _alive(pid):
                continue
            self.mlf.set_tag(run.info.run_id, "harness.closed", f"process {pid} on {host} was gone")
            self.mlf.set_terminated(run.info.run_id, "KILLED")
            closed.append(run.info.run_id)
        if closed:
            print(f"closed {len(closed)} run(s) left RUNNING by a killed process: "
                  f"{', '.join(closed)}", flush=True)
        return closed

    def _run_serial(self, parent_id: str) -> list[RunResult]:
        results: list[RunResult] = []
        for n, spec in enumerate(self.bench.runs, 1):
            eta = ""
            done = [r for r in results if r.status == "done"]
            if done:
                per = sum(r.seconds for r in done) / len(done)
                eta = f", about {math.ceil((len(self.bench.runs) - n + 1) * per / 60)} min left"
            print(f"[{n}/{len(self.bench.runs)}] {spec.name}{eta}", flush=True)
            results.append(self.run_one(spec, parent_id))
        return results

    def _run_parallel(self, parent_id: str) -> list[RunResult]:
        """``jobs`` worker processes, each pinned to one GPU (if any) or a share of the CPUs.

        Data are prepared and the MLflow experiment and parent run created here, before
        any worker starts: SQLite and the data cache are not safe to set up concurrently.
        """
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = mp.get_context("spawn")  # datasets were prepared in run_all
        slots = ctx.Queue()
        n_gpu = torch.cuda.device_count()
        for w in range(self.jobs):
            slots.put(w % n_gpu if n_gpu else None)
        threads = max(1, (os.cpu_count() or 1) // self.jobs)
        args = (self.bench, self.uri, str(self.run_dir), slots, threads)
        with ProcessPoolExecutor(self.jobs, mp_context=ctx, initializer=_worker_init,
                                 initargs=args) as pool:
            futures = [pool.submit(_worker_run, spec, parent_id) for spec in self.bench.runs]
            try:
                for n, fut in enumerate(as_completed(futures), 1):
                    res = fut.result()
                    print(f"[{n}/{len(futures)}] {res.spec.name}: {res.status} "
                          f"({res.seconds:.0f} s)", flush=True)
            except (KeyboardInterrupt, Interrupted):
                # SIGTERM reaches this process only (Ctrl-C the whole group): pass SIGTERM on.
                # A worker in a run closes it as KILLED and refuses the runs still queued; one
                # still starting up ends quietly. Whatever a worker left RUNNING is closed here.
                import signal

                for f in futures:
                    f.cancel()
                for proc in list(getattr(pool, "_processes", {}).values()):
                    with contextlib.suppress(OSError):
                        os.kill(proc.pid, signal.SIGTERM)
                pool.shutdown(wait=True, cancel_futures=True)
                self.close_stale_runs()
                raise
        return [f.result() for f in futures]  # in the benchmark's order

    # -- one run ---------------------------------------------------------------------------

    def run_one(self, spec: RunSpec, parent_id: str | None = None, callbacks: tuple[Any, ...] = (),
                reraise: tuple[type[BaseException], ...] = (), tags: dict[str, str] | None = None
                ) -> RunResult:
        """Run (or skip, or resume) one run. ``callbacks`` join the last stage's Trainer (the
        stage the monitor scores; a sweep's pruner sees its epochs only); exceptions of the
        ``reraise`` types (a pruned trial) end the run as KILLED and propagate.

        A skipped or resumed run moves under ``parent_id``: the latest parent run of a
        benchmark holds every run its invocation skipped, resumed or ran."""
        dm = make_datamodule(spec)
        key = run_key(spec, dm)
        previous = tracking.runs_with_key(self.mlf, self.experiment_id, key)
        complete = [r for r in previous if tracking.is_complete(r)]
        best_key = f"best/{spec.monitor}"
        root = self.run_dir / spec.benchmark / key
        journal = self._journal = tracking.Journal(self.mlf, root / "pending-mlflow.jsonl")
        if complete:
            run = complete[0]
            print(f"    skipped: finished run {run.info.run_id} has key {key}", flush=True)
            self._adopt(journal, run, parent_id)
            return RunResult(spec, key, run.info.run_id, "skipped",
                             best_score=run.data.metrics.get(best_key))
        if previous:
            run_id = previous[0].info.run_id
            self._claim_dir(root, run_id, resumed=True)
            self.mlf.update_run(run_id, "RUNNING")
            self._adopt(journal, previous[0], parent_id)
            print(f"    resuming run {run_id} (key {key})", flush=True)
        else:
            run_id = self._create_run(spec, key, dm, parent_id)
            self._claim_dir(root, run_id, resumed=False)
        for k, v in {**process_tags(), **(tags or {})}.items():
            journal.call("set_tag", run_id, k, v)
        started = time.time()
        self._clock = StepClock()
        try:
            best = self._execute(spec, key, dm, run_id, list(callbacks))
        except UserError:
            journal.call("set_terminated", run_id, "FAILED")
            raise
        except (KeyboardInterrupt, Interrupted):
            journal.call("set_terminated", run_id, "KILLED")
            raise
        except reraise as exc:
            journal.call("set_tag", run_id, "harness.stopped", f"{type(exc).__name__}: {exc}"[:5000])
            journal.call("set_terminated", run_id, "KILLED")
            exc.run_id = run_id  # type: ignore[attr-defined]
            raise
        except Exception as exc:  # one broken run must not lose the others
            sig = received_signal()
            if sig is not None:  # a signal raised inside an import came out as ImportError
                journal.call("set_terminated", run_id, "KILLED")
                raise Interrupted(sig) from None
            tb = str(exc) if isinstance(exc, RunFailed) else traceback.format_exc()
            log.error("run %s failed: %s", spec.name, exc)
            journal.call("set_tag", run_id, "harness.error", f"{type(exc).__name__}: {exc}"[:5000])
            journal.call("log_text", run_id, tb, "error.txt")
            journal.call("set_terminated", run_id, "FAILED")
            return RunResult(spec, key, run_id, "failed", time.time() - started, str(exc))
        seconds = time.time() - started
        journal.call("log_metric", run_id, "run_seconds", seconds)
        journal.call("log_metric", run_id, "steps_seconds", self._clock.seconds)
        journal.call("log_metric", run_id, "overhead_share",
                     1 - self._clock.seconds / seconds if seconds > 0 else 0.0)
        if best is not None:
            journal.call("log_metric", run_id, best_key, best)
        journal.call("set_tag", run_id, tracking.TAG_COMPLETE, "1")
        journal.call("set_terminated", run_id, "FINISHED")
        if journal.pending:
            print(f"    MLflow unreachable: {journal.pending} writes kept in {journal.path}; they "
                  "are delivered by the next run that reaches the server, or `harness sync`",
                  flush=True)
        return RunResult(spec, key, run_id, "done", seconds, best_score=best)

    @staticmethod
    def _adopt(journal: tracking.Journal, run: Any, parent_id: str | None) -> None:
        """Move ``run`` under this invocation's parent run (skipped and resumed runs)."""
        if parent_id and run.data.tags.get("mlflow.parentRunId") != parent_id:
            journal.call("set_tag", run.info.run_id, "mlflow.parentRunId", parent_id)

    def _claim_dir(self, root: Path, run_id: str, resumed: bool) -> None:
        """Bind the run's checkpoint directory to its MLflow run (``owner.json``).

        Checkpoints left by an MLflow run this tracking store does not know (a fresh
        ``MLFLOW_TRACKING_URI`` beside an old ``runs/``) would otherwise be resumed into a new
        run that then lacks the curves of the epochs they hold: they are moved aside and the
        run starts from its first epoch. A directory without ``owner.json`` that a resumed run
        finds (written before the file existed) is adopted.
        """
        owner = root / "owner.json"
        if root.is_dir():
            try:
                mine = json.loads(owner.read_text()).get("run_id") == run_id
            except (OSError, ValueError, AttributeError):
                mine = resumed and not owner.exists()
            if not mine and any(root.iterdir()):
                aside = root.with_name(f"{root.name}.orphaned-{time.strftime('%Y%m%d-%H%M%S')}")
                os.replace(root, aside)
                print(f"    {root} held checkpoints of another MLflow run (not in "
                      f"{tracking.redact(self.uri)}): moved to {aside.name}; this run starts "
                      "afresh", flush=True)
        root.mkdir(parents=True, exist_ok=True)
        tmp = owner.with_name(f".owner.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"run_id": run_id, "tracking": tracking.redact(self.uri)}))
        os.replace(tmp, owner)

    def _create_run(self, spec: RunSpec, key: str, dm: Any, parent_id: str | None) -> str:
        tags = {
            tracking.TAG_KEY: key, tracking.TAG_KIND: "run", "benchmark": spec.benchmark,
            "method": spec.label, "method_entry": spec.method, "group": spec.group,
            "dataset": spec.dataset_label, "seed": str(spec.seed),
            "data_fingerprint": dm.fingerprint(), "devices": self._devices(spec), **self.git,
            **process_tags(),  # from its first moment: a kill right after this is closed later
        }
        if parent_id:
            tags["mlflow.parentRunId"] = parent_id
        run = self.mlf.create_run(self.experiment_id, run_name=spec.name.replace(" | ", "-")
                                  .replace(" ", ""), tags=tags)
        rid = run.info.run_id
        params = {"seed": spec.seed, "method": spec.params, "data": spec.dataset_params,
                  "trainer": spec.trainer, "monitor": spec.monitor}
        from mlflow.entities import Param

        flat = tracking.flatten(params)
        self.mlf.log_batch(rid, params=[Param(k, v) for k, v in flat.items()])
        return rid

    @staticmethod
    def _devices(spec: RunSpec) -> str:
        acc = spec.trainer.get("accelerator", "auto")
        dev = spec.trainer.get("devices", "auto")
        if acc in ("auto", "gpu", "cuda") and torch.cuda.is_available():
            return f"cuda x{dev} ({torch.cuda.get_device_name(0)})"
        return f"cpu x{dev}"

    def _execute(self, spec: RunSpec, key: str, dm: Any, run_id: str,
                 extra_callbacks: list[Any]) -> float | None:
        """Fit every stage, then test; returns the last stage's best validation score."""
        L.seed_everything(spec.seed, workers=True, verbose=False)
        dm.setup("fit")
        from mlflow.entities import Param, RunTag

        stats = dm.stats()
        if stats:
            self._journal.call("log_batch", run_id,
                               tags=[RunTag(f"data.{k}", str(v)) for k, v in stats.items()])
        model = make_model(spec, dm)
        hparams = tracking.flatten({"hparams": dict(model.hparams)})
        self._journal.call("log_batch", run_id, params=[Param(k, v) for k, v in hparams.items()])
        stages = tuple(model.stages)
        root = self.run_dir / spec.benchmark / key
        score = None
        extra: dict[str, str] = {}  # selection criterion -> its best checkpoint of the last stage
        for stage in stages:
            model.begin_stage(stage)
            dm.use_stage_data(model.stage_data(stage))
            sdir = stage_dir(self.run_dir, spec, key, dm, model, stage)
            if sdir.parent != root:
                self._journal.call("set_tag", run_id, f"harness.stage.{stage}", f"shared: {sdir}")
            final = stage == stages[-1]
            with _stage_lock(sdir):
                best, score = self._fit_stage(
                    spec, model, dm, run_id, sdir, stage if len(stages) > 1 else "",
                    extra_callbacks if final else [], last_epoch=stage in tuple(model.last_epoch_stages),
                    criteria=spec.selection if final else ())
            if final:
                extra = {name: str(sdir / f"best-{name}.ckpt") for name, _, _ in spec.selection
                         if (sdir / f"best-{name}.ckpt").exists()}
            if best:
                state = checkpoints.load(best)
                model.load_state_dict(state["state_dict"],  # adapter-only checkpoints: not strict
                                      strict=model.strict_loading)
        model.finish_stages()  # e.g. merge the stages' adapters
        # the test scores the final model (after every stage): its metrics carry no prefix
        trainer = self._trainer(spec, dm, run_id, root / "test", "", callbacks=[])
        trainer.test(model, datamodule=dm, verbose=False)
        metrics = dict(trainer.callback_metrics)
        # each further selection criterion: the last stage's best weights under it, tested
        # again; its metrics are test/<criterion>/<metric>
        for name, _, _ in spec.selection:
            if name not in extra:
                raise RunFailed(f"selection {name!r}: no checkpoint was saved for it; "
                                f"{_data_origin(spec)}")
            model.load_state_dict(checkpoints.load(extra[name])["state_dict"], strict=model.strict_loading)
            model.finish_stages()
            trainer = self._trainer(spec, dm, run_id, root / f"test-{name}", "", callbacks=[],
                                    test_scope=name)
            trainer.test(model, datamodule=dm, verbose=False)
            metrics.update({tracking.scoped(k, name): v
                            for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
        self._check_finite(spec, score, metrics)
        return score

    def _check_finite(self, spec: RunSpec, score: float | None, metrics: dict[str, Any]) -> None:
        """A run whose monitored or table metric is not finite (or that logged no table metric
        at all) fails instead of being recorded complete: a rerun then tries it again."""
        where = _data_origin(spec)
        if score is not None and not math.isfinite(score):
            raise RunFailed(f"best validation {spec.monitor} is {score}: {where}")
        logged = {k: float(v) for k, v in metrics.items() if k.startswith("test/")}
        table = [f"test/{m}" for m in self.bench.table]
        bad = [f"{k} = {logged[k]}" for k in table if k in logged and not math.isfinite(logged[k])]
        if bad:
            raise RunFailed(f"{', '.join(bad)}: {where}")
        if not any(k in logged for k in table):
            raise RunFailed(f"the test logged none of the table metrics ({', '.join(self.bench.table)}"
                            f"); is the test split empty? {where}")

    def _trainer(self, spec: RunSpec, dm: Any, run_id: str, root: Path, prefix: str,
                 callbacks: list[Any], test_scope: str = "") -> L.Trainer:
        kwargs = dict(spec.trainer)
        kwargs.setdefault("num_sanity_val_steps", 0)
        kwargs.setdefault("enable_model_summary", False)
        kwargs.setdefault("log_every_n_steps", 10)
        if dm.shards_itself:
            kwargs["use_distributed_sampler"] = False
        callbacks = [*callbacks, self._clock]
        if self.progress:
            callbacks.append(ThrottledProgressBar())
        return L.Trainer(
            logger=tracking.RunLogger(self.uri, run_id, prefix, str(self._journal.path),
                                      test_scope=test_scope),
            callbacks=callbacks,
            default_root_dir=str(root), enable_progress_bar=self.progress, **kwargs,
        )

    def _fit_stage(self, spec: RunSpec, model: L.LightningModule, dm: Any, run_id: str,
                   root: Path, prefix: str, extra_callbacks: list[Any], last_epoch: bool = False,
                   criteria: tuple[tuple[str, str, str], ...] = ()
                   ) -> tuple[str | None, float | None]:
        """Fit one stage (resuming from its last finished epoch); return the checkpoint the
        next stage starts from (the best validation epoch's, or with ``last_epoch`` the last
        epoch's) and the best validation score. ``criteria``: further selection criteria, each
        with its own best checkpoint ``best-<name>.ckpt``. A checkpoint that fails the safe
        load is set aside and the stage restarts (:mod:`harness.checkpoints`)."""
        done = root / "done"
        best = root / "best.ckpt"
        last = root / "last.ckpt"
        kept = last if last_epoch else best  # the checkpoint the next stage starts from
        name = prefix or "fit"
        if done.exists():
            if not kept.exists():
                return None, None
            try:
                state = checkpoints.load(kept)
            except checkpoints.CorruptCheckpoint as exc:
                self._set_aside(run_id, exc, f"stage {name} restarts")
                done.unlink()
            else:
                print(f"    stage {name} already done, loading {kept}", flush=True)
                return str(kept), checkpoints.best_score(state, spec.monitor)
        root.mkdir(parents=True, exist_ok=True)
        checkpoints.remove_partial(root)
        ckpt = checkpoints.AtomicCheckpoint(
            dirpath=root, filename="best", monitor=spec.monitor, mode=spec.mode, save_top_k=1,
            enable_version_counter=False)
        last_ckpt = checkpoints.AtomicCheckpoint(  # after `ckpt`: its state is saved in last.ckpt
            dirpath=root, filename="last", monitor=None, save_top_k=1, enable_version_counter=False)
        chosen = [checkpoints.AtomicCheckpoint(
            dirpath=root, filename=f"best-{c}", monitor=metric, mode=mode, save_top_k=1,
            enable_version_counter=False) for c, metric, mode in criteria]
        callbacks: list[Any] = [ckpt, *chosen, last_ckpt, *extra_callbacks]
        if spec.early_stopping:
            callbacks.append(EarlyStopping(monitor=spec.monitor, mode=spec.mode,
                                           **spec.early_stopping))
        resume = None
        if last.exists():
            try:
                epoch = checkpoints.load(last).get("epoch", -1)
            except checkpoints.CorruptCheckpoint as exc:
                self._set_aside(run_id, exc, f"stage {name} restarts from its first epoch")
            else:
                resume = str(last)
                print(f"    resuming from {last} (epoch {epoch + 1} done)", flush=True)
                self._journal.call("set_tag", run_id, "harness.resumed_from",
                                   f"{last}@epoch{epoch + 1}")
        trainer = self._trainer(spec, dm, run_id, root, prefix, callbacks)
        trainer.fit(model, datamodule=dm, ckpt_path=resume, weights_only=True)
        if trainer.interrupted:
            raise KeyboardInterrupt
        done.touch()
        if last_epoch:
            return str(last), (float(ckpt.best_model_score) if ckpt.best_model_score is not None
                               else checkpoints.best_score(checkpoints.load(last), spec.monitor))
        path = ckpt.best_model_path or (str(best) if best.exists() else None)
        score = ckpt.best_model_score  # not carried back from ddp_spawn workers: read the file
        if score is None and path:
            return path, checkpoints.best_score(checkpoints.load(path), spec.monitor)
        return path, float(score) if score is not None else None

    def _set_aside(self, run_id: str, exc: checkpoints.CorruptCheckpoint, then: str) -> None:
        aside = checkpoints.set_aside(exc.path)
        print(f"    checkpoint {exc} -- set aside as {aside.name}; {then}", flush=True)
        self._journal.call("set_tag", run_id, "harness.checkpoint_set_aside", f"{aside} ({exc})"[:5000])


def process_tags() -> dict[str, str]:
    """Which process owns a RUNNING run: lets the next invocation close it if that one died."""
    return {"harness.host": socket.gethostname(), "harness.pid": _process_id(os.getpid())}


def _process_id(pid: int) -> str:
    """``<pid>@<start time>`` where /proc tells the start time (a reused pid is another
    process), else ``<pid>``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return f"{pid}@{stat.rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError):
        return str(pid)


def _alive(process: str) -> bool:
    """Whether the process a ``harness.pid`` tag names still runs."""
    pid = process.split("@")[0]
    if not pid.isdigit() or not cache.pid_alive(int(pid)):
        return False
    return "@" not in process or _process_id(int(pid)) == process


class RunFailed(Exception):
    """A run that finished but whose results cannot be recorded as complete."""


def _data_origin(spec: RunSpec) -> str:
    """Where a run's data came from, for messages about suspicious values."""
    real = registry.load("dataset", spec.dataset).real_data
    if real is not None and spec.dataset_params.get(real.dir_param):
        return (f"check the data in {spec.dataset_params[real.dir_param]} (dataset "
                f"{spec.dataset_label}) for NaN/inf values or empty splits")
    return (f"dataset {spec.dataset_label} ({spec.dataset}) is synthetic; check its parameters "
            "and the method's hyperparameters (a diverging loss gives nan)")


_WORKER: dict[str, Any] = {}


def _worker_init(bench: Benchmark, uri: str, run_dir: str, slots: Any, threads: int) -> None:
    """Pin a worker process to its device (GPU index or CPU threads) and build its Runner."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the parent decides
    gpu = slots.get()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    torch.set_num_threads(threads)
    console.quiet()
    _WORKER["runner"] = Runner(bench, uri=uri, run_dir=run_dir, progress=False)
    raise_on_signals()  # from here on a signal closes the worker's run; before, it just ends


def _worker_run(spec: RunSpec, parent_id: str) -> RunResult:
    if "stopped" in _WORKER:  # interrupted: runs already queued to this worker do not start
        raise Interrupted(_WORKER["stopped"])
    try:
        return _WORKER["runner"].run_one(spec, parent_id)
    except Interrupted as exc:
        _WORKER["stopped"] = exc.signum
        raise


def resolve_keys(bench: Benchmark) -> list[tuple[RunSpec, str]]:
    """Each run of the benchmark with its key (prepares data to fingerprint it)."""
    dms: dict[str, Any] = {}
    out = []
    for spec in bench.runs:
        sig = f"{spec.dataset}:{spec.dataset_params}"
        if sig not in dms:
            dms[sig] = make_datamodule(spec)
        out.append((spec, run_key(spec, dms[sig])))
    return out
