"""MLflow plumbing: an explicit tracking URI, experiments, run lookup by key, provenance tags."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from harness.errors import UserError

TAG_KEY = "harness.run_key"
TAG_COMPLETE = "harness.complete"
TAG_KIND = "harness.kind"


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


def client(uri: str) -> Any:
    """An ``MlflowClient`` for ``uri`` (imported lazily: mlflow is slow to import)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def ensure_experiment(mlf: Any, name: str, uri: str) -> str:
    """The id of experiment ``name``, created if missing (restored if deleted).

    For a local SQLite store, artifacts go to ``./mlartifacts/<name>`` beside the database.
    """
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


class RunLogger(MLFlowLogger):
    """Lightning's MLflow logger bound to a run the harness created and owns.

    The runner logs parameters and sets the run status itself, so this logger only
    logs metrics. With ``stage`` set, metric keys carry the stage name
    (``<stage>/val/recall_20``), for methods with several stages.
    """

    LOGGER_JOIN_CHAR = "/"

    def __init__(self, uri: str, run_id: str, stage: str = ""):
        super().__init__(tracking_uri=uri, run_id=run_id, prefix=stage, log_model=False)

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:  # the runner logs parameters
        return None

    def finalize(self, status: str = "success") -> None:  # the runner sets the status
        return None
