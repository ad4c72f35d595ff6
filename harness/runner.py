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
import logging
import math
import os
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from harness import api, console, registry, tracking
from harness.errors import UserError
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
        self.mlf = tracking.client(self.uri)
        try:
            self.experiment_id = tracking.ensure_experiment(self.mlf, bench.name, self.uri)
        except UserError:
            raise
        except Exception as exc:
            raise UserError(
                f"cannot reach MLflow tracking at {self.uri} ({type(exc).__name__}); start the "
                "server or point MLFLOW_TRACKING_URI / --tracking-uri at a running one"
            ) from None
        self.git = tracking.git_info()

    # -- whole benchmark -------------------------------------------------------------------

    def run_all(self) -> tuple[str, list[RunResult]]:
        """Execute every run; returns the parent run id and one result per run."""
        parent = self.mlf.create_run(
            self.experiment_id, run_name=f"{self.bench.name}-{self.bench.profile}-"
            f"{time.strftime('%Y%m%d-%H%M%S')}",
            tags={tracking.TAG_KIND: "bench", "benchmark": self.bench.name,
                  "profile": self.bench.profile, **self.git},
        )
        pid = parent.info.run_id
        self.mlf.log_param(pid, "runs", len(self.bench.runs))
        status = "FAILED"
        start = time.time()
        try:
            results = self._run_parallel(pid) if self.jobs > 1 else self._run_serial(pid)
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            parent_journal = tracking.Journal(
                self.mlf, self.run_dir / self.bench.name / f"parent-{pid}" / "pending-mlflow.jsonl")
            parent_journal.call("log_metric", pid, "wall_seconds", time.time() - start)
            parent_journal.call("set_terminated", pid, status)
        return pid, results

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

        seen = set()
        for spec in self.bench.runs:
            sig = (spec.dataset, repr(spec.dataset_params))
            if sig not in seen:
                seen.add(sig)
                make_datamodule(spec).prepare_data()
        ctx = mp.get_context("spawn")
        slots = ctx.Queue()
        n_gpu = torch.cuda.device_count()
        for w in range(self.jobs):
            slots.put(w % n_gpu if n_gpu else None)
        threads = max(1, (os.cpu_count() or 1) // self.jobs)
        args = (self.bench, self.uri, str(self.run_dir), slots, threads)
        with ProcessPoolExecutor(self.jobs, mp_context=ctx, initializer=_worker_init,
                                 initargs=args) as pool:
            futures = [pool.submit(_worker_run, spec, parent_id) for spec in self.bench.runs]
            for n, fut in enumerate(as_completed(futures), 1):
                res = fut.result()
                print(f"[{n}/{len(futures)}] {res.spec.name}: {res.status} ({res.seconds:.0f} s)",
                      flush=True)
        return [f.result() for f in futures]  # in the benchmark's order

    # -- one run ---------------------------------------------------------------------------

    def run_one(self, spec: RunSpec, parent_id: str | None = None, callbacks: tuple[Any, ...] = (),
                reraise: tuple[type[BaseException], ...] = (), tags: dict[str, str] | None = None
                ) -> RunResult:
        """Run (or skip, or resume) one run. ``callbacks`` join the Trainer's; exceptions of
        the ``reraise`` types (a pruned trial) end the run as KILLED and propagate."""
        dm = make_datamodule(spec)
        key = run_key(spec, dm)
        previous = tracking.runs_with_key(self.mlf, self.experiment_id, key)
        complete = [r for r in previous if tracking.is_complete(r)]
        best_key = f"best/{spec.monitor}"
        if complete:
            run = complete[0]
            print(f"    skipped: finished run {run.info.run_id} has key {key}", flush=True)
            return RunResult(spec, key, run.info.run_id, "skipped",
                             best_score=run.data.metrics.get(best_key))
        if previous:
            run_id = previous[0].info.run_id
            self.mlf.update_run(run_id, "RUNNING")
            print(f"    resuming run {run_id} (key {key})", flush=True)
        else:
            run_id = self._create_run(spec, key, dm, parent_id)
        journal = self._journal = tracking.Journal(
            self.mlf, self.run_dir / spec.benchmark / key / "pending-mlflow.jsonl")
        for k, v in (tags or {}).items():
            journal.call("set_tag", run_id, k, v)
        started = time.time()
        try:
            best = self._execute(spec, key, dm, run_id, list(callbacks))
        except UserError:
            journal.call("set_terminated", run_id, "FAILED")
            raise
        except KeyboardInterrupt:
            journal.call("set_terminated", run_id, "KILLED")
            raise
        except reraise as exc:
            journal.call("set_tag", run_id, "harness.stopped", f"{type(exc).__name__}: {exc}"[:5000])
            journal.call("set_terminated", run_id, "KILLED")
            exc.run_id = run_id  # type: ignore[attr-defined]
            raise
        except Exception as exc:  # one broken run must not lose the others
            tb = traceback.format_exc()
            log.error("run %s failed: %s", spec.name, exc)
            journal.call("set_tag", run_id, "harness.error", f"{type(exc).__name__}: {exc}"[:5000])
            journal.call("log_text", run_id, tb, "error.txt")
            journal.call("set_terminated", run_id, "FAILED")
            return RunResult(spec, key, run_id, "failed", time.time() - started, str(exc))
        seconds = time.time() - started
        journal.call("log_metric", run_id, "run_seconds", seconds)
        if best is not None:
            journal.call("log_metric", run_id, best_key, best)
        journal.call("set_tag", run_id, tracking.TAG_COMPLETE, "1")
        journal.call("set_terminated", run_id, "FINISHED")
        if journal.pending:
            print(f"    MLflow unreachable: {journal.pending} writes kept in {journal.path}; they "
                  "are delivered by the next run that reaches the server, or `harness sync`",
                  flush=True)
        return RunResult(spec, key, run_id, "done", seconds, best_score=best)

    def _create_run(self, spec: RunSpec, key: str, dm: Any, parent_id: str | None) -> str:
        tags = {
            tracking.TAG_KEY: key, tracking.TAG_KIND: "run", "benchmark": spec.benchmark,
            "method": spec.label, "method_entry": spec.method, "group": spec.group,
            "dataset": spec.dataset_label, "seed": str(spec.seed),
            "data_fingerprint": dm.fingerprint(), "devices": self._devices(spec), **self.git,
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
        for stage in stages:
            model.begin_stage(stage)
            dm.use_stage_data(model.stage_data(stage))
            sdir = stage_dir(self.run_dir, spec, key, dm, model, stage)
            if sdir.parent != root:
                self._journal.call("set_tag", run_id, f"harness.stage.{stage}", f"shared: {sdir}")
            with _stage_lock(sdir):
                best, score = self._fit_stage(spec, model, dm, run_id, sdir,
                                              stage if len(stages) > 1 else "", extra_callbacks)
            if best:
                state = torch.load(best, map_location="cpu", weights_only=False)
                model.load_state_dict(state["state_dict"],  # adapter-only checkpoints: not strict
                                      strict=model.strict_loading)
        model.finish_stages()  # e.g. merge the stages' adapters
        # the test scores the final model (after every stage): its metrics carry no prefix
        trainer = self._trainer(spec, dm, run_id, root / "test", "", callbacks=[])
        trainer.test(model, datamodule=dm, verbose=False)
        return score

    def _trainer(self, spec: RunSpec, dm: Any, run_id: str, root: Path, prefix: str,
                 callbacks: list[Any]) -> L.Trainer:
        kwargs = dict(spec.trainer)
        kwargs.setdefault("num_sanity_val_steps", 0)
        kwargs.setdefault("enable_model_summary", False)
        kwargs.setdefault("log_every_n_steps", 10)
        if dm.shards_itself:
            kwargs["use_distributed_sampler"] = False
        return L.Trainer(
            logger=tracking.RunLogger(self.uri, run_id, prefix, str(self._journal.path)),
            callbacks=callbacks,
            default_root_dir=str(root), enable_progress_bar=self.progress, **kwargs,
        )

    def _fit_stage(self, spec: RunSpec, model: L.LightningModule, dm: Any, run_id: str,
                   root: Path, prefix: str, extra_callbacks: list[Any]
                   ) -> tuple[str | None, float | None]:
        """Fit one stage (resuming from its last checkpoint); return its best checkpoint path
        and best validation score."""
        done = root / "done"
        best = root / "best.ckpt"
        if done.exists():
            print(f"    stage {prefix or 'fit'} already done, loading {best}", flush=True)
            if not best.exists():
                return None, None
            return str(best), _checkpoint_best_score(best)
        root.mkdir(parents=True, exist_ok=True)
        ckpt = ModelCheckpoint(dirpath=root, filename="best", monitor=spec.monitor, mode=spec.mode,
                               save_last=True, save_top_k=1, enable_version_counter=False)
        callbacks: list[Any] = [ckpt, *extra_callbacks]
        if spec.early_stopping:
            callbacks.append(EarlyStopping(monitor=spec.monitor, mode=spec.mode,
                                           **spec.early_stopping))
        last = root / "last.ckpt"
        resume = str(last) if last.exists() else None
        if resume:
            epoch = torch.load(last, map_location="cpu", weights_only=False).get("epoch", -1)
            print(f"    resuming from {last} (epoch {epoch + 1} done)", flush=True)
            self._journal.call("set_tag", run_id, "harness.resumed_from", f"{last}@epoch{epoch + 1}")
        trainer = self._trainer(spec, dm, run_id, root, prefix, callbacks)
        trainer.fit(model, datamodule=dm, ckpt_path=resume)
        if trainer.interrupted:
            raise KeyboardInterrupt
        done.touch()
        path = ckpt.best_model_path or (str(best) if best.exists() else None)
        score = ckpt.best_model_score  # not carried back from ddp_spawn workers: read the file
        if score is None and path:
            return path, _checkpoint_best_score(Path(path))
        return path, float(score) if score is not None else None


def _checkpoint_best_score(path: Path) -> float | None:
    """The ModelCheckpoint's best score stored inside a checkpoint file."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    for key, cb in state.get("callbacks", {}).items():
        if key.startswith("ModelCheckpoint") and cb.get("best_model_score") is not None:
            return float(cb["best_model_score"])
    return None


_WORKER: dict[str, Any] = {}


def _worker_init(bench: Benchmark, uri: str, run_dir: str, slots: Any, threads: int) -> None:
    """Pin a worker process to its device (GPU index or CPU threads) and build its Runner."""
    gpu = slots.get()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    torch.set_num_threads(threads)
    console.quiet()
    _WORKER["runner"] = Runner(bench, uri=uri, run_dir=run_dir, progress=False)


def _worker_run(spec: RunSpec, parent_id: str) -> RunResult:
    return _WORKER["runner"].run_one(spec, parent_id)


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
