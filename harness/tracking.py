"""MLflow plumbing: an explicit tracking URI, experiments, run lookup by key, provenance tags."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.logger import _add_prefix
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from harness.errors import UserError

TAG_KEY = "harness.run_key"
TAG_COMPLETE = "harness.complete"
TAG_KIND = "harness.kind"

log = logging.getLogger(__name__)


def tracking_uri(explicit: str | None = None) -> str:
    """``explicit``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db`` (absolute)."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        uri = f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    if uri.startswith("file:") or "://" not in uri:
        raise UserError(
            f"tracking URI {uri!r} is a file store, which MLflow >= 3.13 refuses; use "
            "sqlite:///mlflow.db or an http(s):// MLflow server"
        )
    return uri


def global_rank() -> int:
    """This process's rank in a multi-process launch (torchrun, SLURM, ...); 0 otherwise."""
    for var in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


class _ReadOnlyClient:
    """What ranks other than 0 get: MLflow reads pass through, writes do nothing.

    Under torchrun or SLURM every rank runs the whole command; only rank 0 may create
    runs or log, while the others still read (run keys, experiment ids) to take the
    same skip and resume decisions.
    """

    _WRITES = ("create_experiment", "restore_experiment", "update_run", "set_tag", "log_param",
               "log_metric", "log_batch", "log_text", "log_artifact", "log_artifacts",
               "set_terminated", "delete_run")

    def __init__(self, make: Any):
        self._make, self._real = make, None  # created on first read, after rank 0's setup

    def create_run(self, experiment_id: str, **kwargs: Any) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(info=SimpleNamespace(run_id=f"rank{global_rank()}-no-run"))

    def __getattr__(self, name: str) -> Any:
        if name in self._WRITES:
            return lambda *a, **k: None
        if self._real is None:
            self._real = self._make()
        return getattr(self._real, name)


def client(uri: str) -> Any:
    """An ``MlflowClient`` for ``uri``; read-only on ranks other than 0."""
    from mlflow.tracking import MlflowClient

    if global_rank() == 0:
        return MlflowClient(tracking_uri=uri)
    return _ReadOnlyClient(lambda: MlflowClient(tracking_uri=uri))


def ensure_experiment(mlf: Any, name: str, uri: str) -> str:
    """The id of experiment ``name``, created if missing (restored if deleted).

    For a local SQLite store, artifacts go to ``./mlartifacts/<name>`` beside the database.
    """
    if global_rank() != 0:  # rank 0 creates it; wait for that without touching the schema
        import time

        for _ in range(1200):
            if _sqlite_has_experiment(uri, name):
                exp = mlf.get_experiment_by_name(name)
                if exp is not None:
                    return exp.experiment_id
            time.sleep(0.1)
        raise UserError(f"rank {global_rank()}: experiment {name!r} never appeared in MLflow")
    exp = mlf.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            mlf.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        location = (db.parent / "mlartifacts" / name).resolve().as_uri()
    try:
        return mlf.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by another process
        exp = mlf.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _sqlite_has_experiment(uri: str, name: str) -> bool:
    """For SQLite stores, look for the experiment with plain sqlite3 (no schema creation,
    which would race with rank 0's); other stores are always ready to be asked."""
    if not uri.startswith("sqlite:///"):
        return True
    import sqlite3

    db = uri.removeprefix("sqlite:///")
    if not Path(db).exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT 1 FROM experiments WHERE name = ?", (name,)).fetchone() is not None
    except sqlite3.Error:
        return False


def runs_with_key(mlf: Any, experiment_id: str, key: str) -> list[Any]:
    """All runs of the experiment tagged with run key ``key``, newest first."""
    return mlf.search_runs(
        [experiment_id], filter_string=f"tags.`{TAG_KEY}` = '{key}'",
        order_by=["attributes.start_time DESC"], max_results=100,
    )


def is_complete(run: Any) -> bool:
    return run.data.tags.get(TAG_COMPLETE) == "1"


def git_info(cwd: str | Path | None = None) -> dict[str, str]:
    """Commit and dirty flag of the working tree (``unknown`` outside git)."""
    root = cwd or Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=root, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    return {"git_commit": commit or "unknown", "git_dirty": str(bool(status.strip())).lower()}


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dict -> ``{"a.b": "value"}`` strings for MLflow params."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)[:6000]
    return out


class Journal:
    """MLflow writes that survive an unreachable tracking server.

    Every write of a run goes through :meth:`call`. If the server cannot be reached the
    write is appended to a local JSON-lines file instead, and every later call first
    replays that file in order; ``harness sync`` replays what is left after a run ends.
    Nothing logged while the server is away is lost, and order is kept.
    """

    def __init__(self, mlf: Any, path: str | Path):
        self.mlf = mlf
        self.path = Path(path)

    @property
    def pending(self) -> int:
        if not self.path.exists():
            return 0
        return sum(1 for line in self.path.read_text().splitlines() if line.strip())

    def call(self, op: str, *args: Any, **kwargs: Any) -> bool:
        """Apply ``client.<op>(*args, **kwargs)`` now if possible; True when delivered."""
        record = {"op": op, "args": _encode(args), "kwargs": _encode(kwargs)}
        if self.flush():
            try:
                getattr(self.mlf, op)(*args, **kwargs)
                return True
            except Exception as exc:
                if not _unreachable(exc):
                    raise
                log.warning("tracking server unreachable (%s); keeping %s locally in %s",
                            type(exc).__name__, op, self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        return False

    def flush(self) -> bool:
        """Replay pending writes in order; True when nothing is left pending."""
        if not self.path.exists():
            return True
        lines = [ln for ln in self.path.read_text().splitlines() if ln.strip()]
        for n, line in enumerate(lines):
            rec = json.loads(line)
            try:
                getattr(self.mlf, rec["op"])(*_decode(rec["args"]), **_decode(rec["kwargs"]))
            except Exception as exc:
                if not _unreachable(exc):
                    raise
                self.path.write_text("".join(ln + "\n" for ln in lines[n:]))
                return False
        self.path.unlink()
        log.info("delivered %d pending MLflow writes from %s", len(lines), self.path)
        return True


def _unreachable(exc: BaseException) -> bool:
    """Connection-level failures (server down, refused, timed out), not bad requests."""
    import requests

    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    text = f"{type(exc).__name__}: {exc}"
    return any(s in text for s in ("Max retries exceeded", "Connection refused",
                                   "ConnectionError", "Failed to establish", "timed out",
                                   "API request to", "Remote end closed"))


def _encode(obj: Any) -> Any:
    from mlflow.entities import Metric, Param, RunTag

    if isinstance(obj, Metric):
        return {"__metric__": [obj.key, obj.value, obj.timestamp, obj.step]}
    if isinstance(obj, Param):
        return {"__param__": [obj.key, obj.value]}
    if isinstance(obj, RunTag):
        return {"__tag__": [obj.key, obj.value]}
    if isinstance(obj, list | tuple):
        return [_encode(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _encode(v) for k, v in obj.items()}
    return obj


def _decode(obj: Any) -> Any:
    from mlflow.entities import Metric, Param, RunTag

    if isinstance(obj, dict):
        if "__metric__" in obj:
            return Metric(*obj["__metric__"])
        if "__param__" in obj:
            return Param(*obj["__param__"])
        if "__tag__" in obj:
            return RunTag(*obj["__tag__"])
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(o) for o in obj]
    return obj


def journal_files(root: str | Path = "runs") -> list[Path]:
    """Every pending-writes journal under the checkpoint root."""
    return sorted(Path(root).glob("**/pending-mlflow.jsonl"))


def configure_http_retries() -> None:
    """Fail over to the journal within seconds instead of MLflow's minutes of retries."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


class RunLogger(MLFlowLogger):
    """Lightning's MLflow logger bound to a run the harness created and owns.

    The runner logs parameters and sets the run status itself, so this logger only
    logs metrics, through the run's :class:`Journal` when one is given. With ``stage``
    set, metric keys carry the stage name (``<stage>/val/recall_20``), for methods with
    several stages.
    """

    LOGGER_JOIN_CHAR = "/"

    def __init__(self, uri: str, run_id: str, stage: str = "", journal_path: str | None = None):
        super().__init__(tracking_uri=uri, run_id=run_id, prefix=stage, log_model=False)
        self.journal_path = journal_path

    @property
    def experiment(self) -> Any:
        # bound to an existing run: no lookup that would need the server at start-up
        if not self._initialized:
            import mlflow

            mlflow.set_tracking_uri(self._tracking_uri)
            self._experiment_id = None
            self._initialized = True
        return self._mlflow_client

    @property
    def experiment_id(self) -> Any:
        return self._experiment_id

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:  # the runner logs parameters
        return None

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import time as _time

        from mlflow.entities import Metric

        metrics = _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR)
        now = int(_time.time() * 1000)
        batch = [Metric(k.replace("@", "_"), float(v), now, step or 0) for k, v in metrics.items()]
        if self.journal_path is None:
            self.experiment.log_batch(self._run_id, metrics=batch)
        else:
            Journal(self.experiment, self.journal_path).call("log_batch", self._run_id,
                                                             metrics=batch)

    @rank_zero_only
    def log_figure(self, fig: Any, artifact_file: str) -> None:
        """Save a matplotlib figure beside the run's journal and log it as an artifact.

        The PNG stays on disk (``runs/<bench>/<key>/artifacts/``) and the upload goes
        through the journal, so a figure made while the server is away is not lost.
        """
        import tempfile

        base = Path(self.journal_path).parent if self.journal_path else Path(tempfile.mkdtemp())
        path = base / "artifacts" / artifact_file
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        folder = str(Path(artifact_file).parent) if Path(artifact_file).parent != Path(".") else None
        if self.journal_path is None:
            self.experiment.log_artifact(self._run_id, str(path), folder)
        else:
            Journal(self.experiment, self.journal_path).call("log_artifact", self._run_id, str(path),
                                                             folder)

    def finalize(self, status: str = "success") -> None:  # the runner sets the status
        return None


def log_figure(module: Any, fig: Any, artifact_file: str) -> bool:
    """Log ``fig`` to the module's harness run if it has one (True), else do nothing (False).

    Methods call it as ``self.log_figure(fig, "ke_spectra.png")`` (:class:`harness.api.Method`).
    The figure is closed either way.
    """
    import matplotlib.pyplot as plt

    done = False
    trainer = module._trainer  # a LightningModule's, None outside a Trainer
    for lg in (trainer.loggers if trainer is not None else []):
        if isinstance(lg, RunLogger):
            lg.log_figure(fig, artifact_file)
            done = True
    plt.close(fig)
    return done
