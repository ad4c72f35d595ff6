"""MLflow plumbing: an explicit tracking URI, experiments, run lookup by key, provenance tags."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.logger import _add_prefix
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from harness.errors import UserError

TAG_KEY = "harness.run_key"
TAG_COMPLETE = "harness.complete"
TAG_KIND = "harness.kind"
# scheme://user:password@host: the password runs to the last '@' before the host (an
# unescaped '@' or '/' inside it is still masked)
_CREDENTIALS = re.compile(r"(?<=://)([^:/@\s]*:)[^\s]*?@(?=[^@\s]*(?:[/?#]|$|\s))")

log = logging.getLogger(__name__)


def redact(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part masked as ``***``.

    ``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``; a URL
    without a password (or anything that is not a URL) comes back unchanged.
    """
    return _CREDENTIALS.sub(r"\1***@", url)


def tracking_uri(explicit: str | None = None) -> str:
    """``explicit``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db`` (absolute).

    Refuses (one-line :class:`UserError`) a file store, a scheme MLflow has no store for, a
    database whose driver is not installed, and a ``sqlite:///`` path that cannot be a database.
    """
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    source = "--tracking-uri" if explicit else "MLFLOW_TRACKING_URI" if uri else "the default"
    if not uri:
        uri = f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    if uri in ("databricks", "databricks-uc", "uc"):
        return uri
    if uri.startswith("file:") or "://" not in uri:
        raise UserError(
            f"tracking URI {redact(uri)!r} ({source}) is a file store, which MLflow >= 3.13 "
            "refuses; use sqlite:///mlflow.db or an http(s):// MLflow server"
        )
    scheme = uri.split("://", 1)[0].lower()
    schemes = _tracking_schemes()
    if scheme.split("+", 1)[0] not in schemes:
        raise UserError(
            f"tracking URI {redact(uri)!r} ({source}): unknown scheme {scheme + '://'!r}; use "
            f"one of {', '.join(s + '://' for s in sorted(schemes))}, e.g. sqlite:///mlflow.db "
            "or http://host:5000"
        )
    if scheme.split("+", 1)[0] in _SQL_ENGINES:
        check_database_url(uri, "tracking URI", source)
    return uri


_SQL_ENGINES = ("postgresql", "mysql", "sqlite", "mssql")
# per database: (SQLAlchemy driver name, module it imports, package to install)
_DRIVERS = {
    "postgresql": (("psycopg2", "psycopg2", "psycopg2-binary"), ("psycopg", "psycopg", "'psycopg[binary]'"),
                   ("pg8000", "pg8000", "pg8000")),
    "mysql": (("mysqldb", "MySQLdb", "mysqlclient"), ("pymysql", "pymysql", "PyMySQL"),
              ("mysqlconnector", "mysql.connector", "mysql-connector-python")),
    "mssql": (("pyodbc", "pyodbc", "pyodbc"), ("pymssql", "pymssql", "pymssql")),
}


def _tracking_schemes() -> set[str]:
    """URI schemes MLflow has a tracking store for (plugins included), minus the file store."""
    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        schemes = {s for s in _tracking_store_registry._registry if s}
    except Exception:  # a private API: fall back to the built-in stores
        schemes = {"http", "https", "databricks", "databricks-uc", "uc", *_SQL_ENGINES}
    return schemes - {"file"}


def check_database_url(url: str, what: str, source: str = "") -> None:
    """Refuse a SQLAlchemy database URL that cannot work, with one line naming ``what`` (and the
    ``source`` it came from: a flag or an environment variable).

    Unparsable URLs, unknown dialects, a driver that is not installed (naming the package and
    any installed alternative), and a ``sqlite:///`` path whose directory is missing or whose
    file is not an SQLite database.
    """
    import importlib.util

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = f"{redact(url)!r}" + (f" ({source})" if source else "")
    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise UserError(f"{what} {shown}: unknown database scheme {url.split('://')[0] + '://'!r}; "
                        "use sqlite:///file.db, postgresql+psycopg2://... or mysql+pymysql://...") from None
    except ArgumentError:
        raise UserError(f"{what} {shown} is not a database URL; write it as "
                        "dialect[+driver]://user:password@host/db or sqlite:///file.db") from None
    backend = parsed.get_backend_name()
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        options = _DRIVERS.get(backend, ())
        missing = next((pkg for drv, _, pkg in options if drv == dialect.driver), exc.name or dialect.driver)
        have = [f"{backend}+{drv}://" for drv, mod, _ in options
                if drv != dialect.driver and importlib.util.find_spec(mod.split(".")[0]) is not None]
        alt = f", or use the installed driver: {' or '.join(have)}" if have else ""
        raise UserError(f"{what} {shown} needs the {dialect.driver} driver, which is not "
                        f"installed: install it (.venv/bin/pip install {missing}){alt}") from None
    if backend == "sqlite":
        _check_sqlite_path(parsed.database, shown, what)


def _check_sqlite_path(database: str | None, shown: str, what: str) -> None:
    """The file of a ``sqlite:///`` URL: its directory exists, and it is an SQLite database if
    present. ``shown``: the URL as messages show it (password masked), with its source."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if path.is_dir():
        raise UserError(f"{what} {shown} names a directory, not a database file; use "
                        f"sqlite:///{path / 'mlflow.db'} or another file name")
    if not path.parent.is_dir():
        raise UserError(f"{what} {shown}: directory {path.parent} does not exist; create it "
                        "or fix the path (sqlite:///relative.db or sqlite:////absolute/path.db)")
    if path.exists() and path.stat().st_size > 0:
        try:
            with open(path, "rb") as fh:
                head = fh.read(16)
        except OSError as exc:
            raise UserError(f"{what} {shown}: cannot read {path} ({exc.strerror}); fix its "
                            "permissions or choose another file") from None
        if head != b"SQLite format 3\x00":
            raise UserError(f"{what} {shown}: {path} exists but is not an SQLite database; "
                            "point the URL at another file name (it is created on first use)")


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
               "log_metric", "log_batch", "log_text", "log_table", "log_artifact", "log_artifacts",
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


@contextmanager
def _store_init_lock(uri: str) -> Iterator[None]:
    """One process at a time opens a local SQLite store.

    Opening a store creates or migrates its tables; two processes doing so at once on a new
    database fail (``duplicate column name``, alembic ``CommandError``): e.g. a run's process
    and a script polling its progress. An exclusive ``flock`` on a lock file in the temporary
    directory, named after the database's absolute path, serialises that step (never a lock
    on the database file itself: closing another descriptor of it would drop SQLite's own
    POSIX locks). Other URIs: no lock.
    """
    if not uri.startswith("sqlite:///") or uri.endswith(":memory:"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///").split("?", 1)[0]).resolve()
    digest = hashlib.sha1(str(db).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"harness-mlflow-{digest}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _mlflow_client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    with _store_init_lock(uri):
        return MlflowClient(tracking_uri=uri)  # opens the store: creates/migrates its tables


def client(uri: str) -> Any:
    """An ``MlflowClient`` for ``uri``; read-only on ranks other than 0."""
    if global_rank() == 0:
        return _mlflow_client(uri)
    return _ReadOnlyClient(lambda: _mlflow_client(uri))


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


def connect(uri: str) -> Any:
    """An MLflow client for ``uri`` that has answered one request, within seconds.

    HTTP retries are cut as for a run (:func:`configure_http_retries`); an unreachable
    server, refused credentials or a broken store is a one-line :class:`UserError`.
    """
    if uri.startswith("http"):
        configure_http_retries()
    mlf = client(uri)
    retries = logging.getLogger("urllib3.connectionpool")
    level = retries.level
    retries.setLevel(logging.ERROR)  # "Retrying (...)" warnings: the error below says it all
    try:
        mlf.search_experiments(max_results=1)
    except Exception as exc:
        raise UserError(unreachable_message(uri, exc)) from None
    finally:
        retries.setLevel(level)
    return mlf


def unreachable_message(uri: str, exc: BaseException) -> str:
    """One line for an MLflow store that did not answer ``exc``-free (password masked)."""
    text = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else "")[:200]
    if any(code in text for code in ("401", "403", "Unauthorized", "Forbidden")):
        return (f"MLflow tracking at {redact(uri)} refused the request ({text}); set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD for a server with "
                "authentication")
    if _unreachable(exc):
        full = str(exc)
        reason = next((why for needle, why in (
            ("refused", "connection refused"), ("timed out", "timed out"),
            ("Name or service not known", "unknown host"), ("resolve", "unknown host"),
            ("Remote end closed", "connection closed")) if needle in full), type(exc).__name__)
        return (f"cannot reach MLflow tracking at {redact(uri)} ({reason}); start the server or "
                "point MLFLOW_TRACKING_URI / --tracking-uri at a running one")
    return (f"MLflow tracking at {redact(uri)} failed ({type(exc).__name__}: {text}); check the "
            "store, or point MLFLOW_TRACKING_URI / --tracking-uri at another one")


def scoped(key: str, scope: str) -> str:
    """``test/<m>`` under a selection criterion: ``test/<scope>/<m>``; other keys unchanged."""
    return f"test/{scope}/{key[5:]}" if scope and key.startswith("test/") else key


class RunLogger(MLFlowLogger):
    """Lightning's MLflow logger bound to a run the harness created and owns.

    The runner logs parameters and sets the run status itself, so this logger only
    logs metrics, through the run's :class:`Journal` when one is given. With ``stage``
    set, metric keys carry the stage name (``<stage>/val/recall_20``), for methods with
    several stages.
    """

    LOGGER_JOIN_CHAR = "/"

    def __init__(self, uri: str, run_id: str, stage: str = "", journal_path: str | None = None,
                 test_scope: str = ""):
        super().__init__(tracking_uri=uri, run_id=run_id, prefix=stage, log_model=False)
        self.journal_path = journal_path
        self.test_scope = test_scope  # a selection criterion: test/<m> is logged as test/<scope>/<m>

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
        if self.test_scope:
            metrics = {scoped(k, self.test_scope): v for k, v in metrics.items()}
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
