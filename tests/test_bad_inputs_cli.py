"""Bad command-line values, benchmark YAMLs and URIs: each ends with exit code 2 and one
``error:`` line naming the file, key or flag and what to do, before any run starts; no URL
password reaches a message, tag or parameter."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import user_error

from harness import registry, spec, tracking
from harness.cli import main

HARNESS = [sys.executable, "-m", "harness.cli"]

# ------------------------------------------------------------------ command-line values


@pytest.mark.parametrize("argv, needle", [
    (["bench", "aurl", "--seeds", "0"], "argument --seeds: 0 is out of range"),
    (["bench", "aurl", "--seeds", "-1"], "argument --seeds: -1 is out of range"),
    (["bench", "aurl", "--seeds", "three"], "'three' is not an integer"),
    (["report", "aurl", "--seeds", "0"], "see harness report --help"),
    (["bench", "aurl", "--jobs", "0"], "argument --jobs: 0 is out of range"),
    (["bench", "aurl", "--jobs", "-3"], "argument --jobs: -3 is out of range"),
    (["bench", "aurl", "--jobs", "x"], "argument --jobs: 'x' is not an integer"),
    (["sweep", "aurl", "--trials", "0"], "argument --trials: 0 is out of range"),
    (["sweep", "aurl", "--trials", "many"], "argument --trials: 'many' is not an integer"),
    (["bench", "aurl", "--max-epochs", "0"], "argument --max-epochs: 0 is out of range"),
    (["bench", "aurl", "--max-epochs", "-2"], "argument --max-epochs: -2 is out of range"),
    (["bench", "aurl", "--max-epochs", "two"], "argument --max-epochs: 'two' is a string"),
    (["bench", "aurl", "--devices", "0"], "argument --devices: 0 is not a device count"),
    (["bench", "aurl", "--devices", "-5"], "argument --devices: -5 is not a device count"),
    (["bench", "aurl", "--devices", "two"], "argument --devices: 'two' is not a device count"),
    (["bench", "aurl", "--num-nodes", "0"], "argument --num-nodes: 0 is out of range"),
    (["bench", "aurl", "--num-nodes", "x"], "argument --num-nodes: 'x' is a string"),
    (["bench", "aurl", "--precision", "17"], "argument --precision: 17 is an integer, not one of"),
    (["bench", "aurl", "--precision", "fp16"], "'bf16-mixed'"),
    (["bench", "aurl", "--accelerator", "gpuu"], "did you mean 'gpu'?"),
    (["bench", "aurl", "--strategy", "dpp"], "did you mean 'ddp'?"),
    (["bench", "aurl", "--no-such-flag"], "unrecognized arguments: --no-such-flag; see harness bench"),
    (["bench", "aurl", "--max-epochs"], "expected one argument"),
    (["bench"], "the following arguments are required: benchmark"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "the following arguments are required: command"),
])
def test_bad_command_line_values(workdir, capsys, argv, needle):
    line = user_error(argv, capsys, needle=needle)
    assert line.endswith("--help")


@pytest.mark.parametrize("jobs", ["abc", "0", "-2", "1.5"])
def test_bad_jobs_environment_variable(workdir, capsys, monkeypatch, jobs):
    monkeypatch.setenv("JOBS", jobs)
    user_error(["bench", "aurl", "--profile", "quick", "--no-progress"], capsys,
               needle=f"JOBS={jobs!r} in the environment is not a positive integer")
    assert not (workdir / "mlflow.db").exists()


def test_jobs_precedence_flag_environment_benchmark(monkeypatch):
    """--jobs, else $JOBS, else the benchmark's ``jobs:``, else 1."""
    from argparse import Namespace

    from harness.cli import _jobs

    monkeypatch.delenv("JOBS", raising=False)
    assert _jobs(Namespace(jobs=None)) == 1
    assert _jobs(Namespace(jobs=None), 2) == 2
    monkeypatch.setenv("JOBS", "3")
    assert _jobs(Namespace(jobs=None), 2) == 3
    assert _jobs(Namespace(jobs=1), 2) == 1
    assert spec.load("mimu").jobs == 2 and spec.load("mimu", profile="quick").jobs is None


def test_report_ignores_jobs_and_refuses_an_empty_store(workdir, capsys, monkeypatch):
    """JOBS concerns bench only; a report of nothing no longer overwrites the tables."""
    monkeypatch.setenv("JOBS", "abc")
    (workdir / "reports").mkdir()
    (workdir / "reports" / "aurl.md").write_text("earlier table")
    user_error(["report", "aurl", "--profile", "quick"], capsys, needle="no finished runs")
    assert (workdir / "reports" / "aurl.md").read_text() == "earlier table"


# ------------------------------------------------------------------ benchmark YAML

BASE = {
    "name": "tiny",
    "proposed": ["mf+aurl"],
    "methods": {
        "mf": {"method": "bpr", "group": "mf", "params": {"backbone": "mf", "lr": 0.01}},
        "mf+aurl": {"method": "aurl", "group": "mf", "params": {"backbone": "mf", "lr": 0.01}},
    },
    "datasets": {"synth": {"dataset": "amazon",
                           "params": {"synthetic": {"n_users": 100, "n_items": 80}}}},
    "seeds": 1,
    "monitor": {"metric": "val/recall_20", "mode": "max"},
    "table": ["recall_20", "ndcg_20"],
    "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1},
    "profiles": {"quick": {"trainer": {"max_epochs": 1}}},
}
BASE_TEXT = yaml.safe_dump(BASE, sort_keys=False)


def _set(*keys: Any, value: Any) -> Callable[[dict], None]:
    def mutate(d: dict) -> None:
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return mutate


def _drop(*keys: Any) -> Callable[[dict], None]:
    def mutate(d: dict) -> None:
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]
    return mutate


def _text(edit: Callable[[str], str]) -> str:
    return edit(BASE_TEXT)


YAML_CASES = [
    # syntax
    ("tab-indent", _text(lambda t: t.replace("  mf:\n", "\tmf:\n", 1)), ":5: a tab in the indentation"),
    ("unclosed-bracket", _text(lambda t: t.replace("proposed:\n- mf+aurl\n", "proposed: [mf+aurl\n")),
     "invalid YAML"),
    ("colon-in-value", _text(lambda t: t.replace("name: tiny", "name: tiny: two")),
     ":1:11: invalid YAML: mapping values are not allowed here"),
    ("duplicate-key", BASE_TEXT + "seeds: 2\n", "duplicate key 'seeds' (first at line"),
    ("not-a-mapping", "- aurl\n- tsformer\n", "the file is a list, not a mapping"),
    ("empty-file", "", "the file is empty"),
    # top level
    ("unknown-top-key", _set("tabel", value=["recall_20"]), "tabel: unknown key; did you mean 'table'?"),
    ("missing-monitor", _drop("monitor"), "monitor: missing; add monitor:"),
    ("bad-name", _set("name", value="a/b"), "name: 'a/b' is not a benchmark name"),
    ("requires-data-string", _set("requires_data", value="yes"), "requires_data: 'yes' is a string"),
    # seeds
    ("seeds-zero", _set("seeds", value=0), "seeds: 0 is not a number of seeds"),
    ("seeds-negative", _set("seeds", value=-1), "seeds: -1 is not a number of seeds"),
    ("seeds-string", _set("seeds", value="3"), "seeds: '3' is a string"),
    ("seeds-empty-list", _set("seeds", value=[]), "seeds: [] is a list"),
    ("seeds-repeated", _set("seeds", value=[1, 1]), "repeats a seed"),
    ("seeds-not-int", _set("seeds", value=[0, 1.5]), "seeds[1]: 1.5 is not a seed"),
    ("jobs-zero", _set("jobs", value=0), "jobs: 0 is not a number of runs at once"),
    ("jobs-string", _set("jobs", value="2"), "jobs: '2' is not a number of runs at once"),
    # methods
    ("methods-string", _set("methods", value="bpr"), "methods: a string, not a mapping of rows"),
    ("row-string", _set("methods", "mf", value="bpr"), "methods.mf: a string, not a mapping"),
    ("row-unknown-key", _set("methods", "mf", "param", value={}),
     "methods.mf.param: unknown key; did you mean 'params'?"),
    ("row-no-method", _drop("methods", "mf", "method"), "methods.mf: no 'method'"),
    ("unknown-method", _set("methods", "mf", "method", value="nosuch"),
     "methods.mf.method: unknown method 'nosuch'"),
    ("params-list", _set("methods", "mf", "params", value=[1]), "methods.mf.params: a list, not a mapping"),
    ("unknown-param", _set("methods", "mf", "params", "lrr", value=0.1),
     "methods.mf.params.lrr: method 'bpr' takes no parameter 'lrr'; did you mean 'lr'?"),
    ("param-1e-3", _set("methods", "mf", "params", "lr", value="1e-3"),
     "YAML reads 1e-3 as text (a float needs a dot and a signed exponent): write 0.001"),
    ("param-word", _set("methods", "mf", "params", "lr", value="fast"), "'fast' is a string, not a number"),
    ("group-int", _set("methods", "mf", "group", value=3), "methods.mf.group: 3 is an integer"),
    ("data-params-name", _set("methods", "mf", "data_params", value={"batchsize": 5}),
     "methods.mf.data_params.batchsize: dataset 'amazon' (of dataset 'synth') takes no parameter"),
    # datasets
    ("dataset-null", _set("datasets", "synth", value=None), "datasets.synth: null, not a mapping"),
    ("unknown-dataset", _set("datasets", "synth", "dataset", value="nosuch"),
     "datasets.synth.dataset: unknown dataset 'nosuch'"),
    ("dataset-param-name", _set("datasets", "synth", "params", "kcore", value=5), "did you mean 'k_core'?"),
    ("dataset-param-type", _set("datasets", "synth", "params", "k_core", value="five"),
     "datasets.synth.params.k_core: 'five' is a string, not an integer"),
    # references
    ("proposed-unknown-row", _set("proposed", value=["mf+nope"]),
     "proposed[0]: 'mf+nope' is not a method row"),
    ("table-undeclared", _set("table", value=["recall_20", "bogus"]),
     "table[1]: metric 'bogus' is declared by none of the method rows"),
    ("table-with-prefix", _set("table", value=["test/recall_20"]), "write 'recall_20' (without the prefix)"),
    ("table-empty", _set("table", value=[]), "table: empty, not a list of metrics"),
    ("monitor-no-val", _set("monitor", "metric", value="recall_20"),
     "monitor.metric: 'recall_20' is not a validation metric"),
    ("monitor-undeclared", _set("monitor", "metric", value="val/foo"),
     "monitor.metric: val/foo is not declared by method row 'mf'"),
    ("monitor-mode", _set("monitor", "mode", value="maximize"),
     "monitor.mode: 'maximize' is neither max nor min"),
    ("monitor-extra-key", _set("monitor", "patience", value=3), "monitor.patience: unknown key"),
    ("curve-no-x", _set("curves", value={"c": {"metric": "recall_20"}}),
     "curves.c.metric: 'recall_20' has no single {x}"),
    ("curve-undeclared", _set("curves", value={"c": {"metric": "foo_d{x}"}}),
     "matches no metric the method rows declare"),
    # trainer and early stopping
    ("max-epochs-word", _set("trainer", "max_epochs", value="two"),
     "trainer.max_epochs: 'two' is a string, not an integer or null"),
    ("max-epochs-zero", _set("trainer", "max_epochs", value=0), "trainer.max_epochs: 0 is out of range"),
    ("trainer-typo", _set("trainer", "max_epoch", value=3), "did you mean 'max_epochs'?"),
    ("trainer-logger", _set("trainer", "logger", value=False), "trainer.logger: set by the harness"),
    ("trainer-precision", _set("trainer", "precision", value="fp16"),
     "trainer.precision: 'fp16' is a string, not one of"),
    ("trainer-devices", _set("trainer", "devices", value="two"),
     "trainer.devices: 'two' is not a device count"),
    ("trainer-accelerator", _set("trainer", "accelerator", value="gpuu"), "did you mean 'gpu'?"),
    ("trainer-list", _set("trainer", value=["max_epochs"]), "trainer: a list, not a mapping"),
    ("early-stopping-type", _set("early_stopping", value={"patience": "ten"}),
     "early_stopping.patience: 'ten' is a string, not an integer"),
    ("early-stopping-monitor", _set("early_stopping", value={"monitor": "val/ndcg_20"}),
     "early_stopping.monitor: set by monitor:"),
    ("early-stopping-typo", _set("early_stopping", value={"patients": 3}), "did you mean 'patience'?"),
    # profiles
    ("profiles-list", _set("profiles", value=["quick"]), "profiles: a list, not a mapping"),
    ("profile-not-mapping", _set("profiles", "quick", value=3), "profiles.quick: an integer, not a mapping"),
    ("profile-typo", _set("profiles", "quick", "sedes", value=1),
     "profiles.quick.sedes: unknown key; did you mean 'seeds'?"),
    ("profile-trainer", _set("profiles", "quick", "trainer", "max_epochs", value=-5),
     "profiles.quick.trainer.max_epochs: -5 is out of range"),
    ("profile-table", _set("profiles", "quick", "table", value=["nope"]),
     "profiles.quick.table[0]: metric 'nope'"),
    ("other-profile", _set("profiles", "paper", value={"trainer": {"devices": 0}}),
     "profiles.paper.trainer.devices: 0 is not a device count"),
]


@pytest.mark.parametrize("content, needle", [c[1:] for c in YAML_CASES], ids=[c[0] for c in YAML_CASES])
def test_bad_benchmark_yaml(workdir, capsys, content, needle):
    if callable(content):
        data = copy.deepcopy(BASE)
        content(data)
        content = yaml.safe_dump(data, sort_keys=False)
    path = workdir / "bad.yaml"
    path.write_text(content)
    line = user_error(["bench", str(path), "--profile", "quick", "--no-progress"], capsys,
                      needle=needle)
    assert line.startswith(f"error: {path}")
    assert not (workdir / "mlflow.db").exists() and not (workdir / "runs").exists()


def test_every_benchmark_validates_in_every_profile(tmp_path):
    """The checks accept every shipped benchmark, each profile merged (dummy DATA / BACKBONE
    directories where a profile needs real data or a real LLM)."""
    backbone = tmp_path / "llm"
    backbone.mkdir()
    (backbone / "config.json").write_text("{}")
    checked = []
    for name in spec.available():
        raw = spec.read_yaml(spec.benchmarks_dir() / f"{name}.yaml")
        for profile in ["default", *(raw.get("profiles") or {})]:
            merged = spec.deep_merge(raw, (raw.get("profiles") or {}).get(profile) or {})
            kw: dict[str, Any] = {}
            if merged.get("requires_data"):
                classes = [registry.load("dataset", d["dataset"]) for d in merged["datasets"].values()]
                by_category = any(c.real_data and c.real_data.category_param for c in classes)
                kw.update(data_dir=str(tmp_path), dataset="Books" if by_category else None)
            if merged.get("requires_backbone"):
                kw["backbone"] = str(backbone)
            assert spec.load(name, profile=profile, **kw).runs
            checked.append((name, profile))
    assert len(checked) >= 18 and {n for n, _ in checked} >= {"aurl", "tsformer", "weaverec"}


# ------------------------------------------------------------------ URIs


@pytest.fixture
def garbage_db(workdir: Path) -> Path:
    path = workdir / "notes.db"
    path.write_text("these are my notes, not a database\n")
    return path


def _bench(uri: str) -> list[str]:
    return ["bench", "aurl", "--profile", "quick", "--no-progress", "--tracking-uri", uri]


def _sweep(storage: str) -> list[str]:
    return ["sweep", "aurl", "--profile", "quick", "--trials", "1", "--no-progress",
            "--storage", storage]


@pytest.mark.parametrize("argv, missing, needle", [
    (_bench("bogus://x"), None, "unknown scheme 'bogus://'"),
    (_bench("postgresql://u:pw@db/mlflow"), "psycopg", "needs the psycopg driver"),
    (_bench("mysql://u:pw@db/mlflow"), "MySQLdb", "pip install mysqlclient"),
    (_bench("mysql+pymysql://u:pw@db/mlflow"), "pymysql", "pip install PyMySQL"),
    (_bench("mssql://u:pw@db/mlflow"), "pyodbc", "pip install pyodbc"),
    (_bench("sqlite:///{tmp}/no/such/dir/mlflow.db"), None, "no/such/dir does not exist"),
    (_bench("sqlite:///{tmp}/notes.db"), None, "exists but is not an SQLite database"),
    (_bench("sqlite:///{tmp}"), None, "names a directory, not a database file"),
    (["report", "aurl", "--profile", "quick", "--tracking-uri", "bogus://x"], None, "unknown scheme"),
    (["sync", "--tracking-uri", "sqlite:///{tmp}/notes.db"], None, "not an SQLite database"),
    (_sweep("bogus://x"), None, "Optuna storage 'bogus://x' (--storage): unknown database scheme"),
    (_sweep("optuna.db"), None, "is not a database URL"),
    (_sweep("postgresql://u:pw@db/optuna"), "psycopg", "'psycopg[binary]'"),
    (_sweep("sqlite:///{tmp}/notes.db"), None, "exists but is not an SQLite database"),
    (_sweep("sqlite:///{tmp}/missing/optuna.db"), None, "missing does not exist"),
    (_sweep("sqlite:///{tmp}/optuna.db") + ["--tracking-uri", "bogus://x"], None, "unknown scheme"),
])
def test_bad_uris(workdir, garbage_db, capsys, monkeypatch, argv, missing, needle):
    if missing:  # the driver is not installed (whatever this machine has)
        monkeypatch.setitem(sys.modules, missing, None)
    argv = [a.replace("{tmp}", str(workdir)) for a in argv]
    user_error(argv, capsys, needle=needle)
    assert not (workdir / "mlflow.db").exists()


@pytest.mark.parametrize("var, value, argv, needle", [
    ("MLFLOW_TRACKING_URI", "bogus://x", ["report", "aurl", "--profile", "quick"],
     "(MLFLOW_TRACKING_URI): unknown scheme"),
    ("OPTUNA_STORAGE", "nonsense", ["sweep", "aurl", "--profile", "quick"],
     "Optuna storage 'nonsense' (OPTUNA_STORAGE) is not a database URL"),
])
def test_bad_uris_from_the_environment(workdir, capsys, monkeypatch, var, value, argv, needle):
    monkeypatch.setenv(var, value)
    user_error(argv, capsys, needle=needle)


def test_postgres_driver_message_names_the_installed_alternative(workdir, capsys, monkeypatch):
    pytest.importorskip("psycopg2")
    monkeypatch.setitem(sys.modules, "psycopg", None)
    user_error(_sweep("postgresql://u:pw@db/optuna"), capsys,
               needle="or use the installed driver: postgresql+psycopg2://")


def _fresh_http_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the code under test set MLflow's retry variables, and restore them afterwards."""
    for var in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.setenv(var, "x")
        monkeypatch.delenv(var)


def test_report_against_an_unreachable_server_fails_within_seconds(workdir, capsys, monkeypatch):
    """It used to retry for 258 s and print five tracebacks."""
    import lightning.pytorch  # noqa: F401  (imports are not what is timed)

    spec.load("aurl", profile="quick")
    _fresh_http_retries(monkeypatch)
    start = time.time()
    user_error(["report", "aurl", "--profile", "quick", "--tracking-uri", "http://127.0.0.1:9"],
               capsys, needle="cannot reach MLflow tracking at http://127.0.0.1:9 (connection refused)")
    assert time.time() - start < 15


# ------------------------------------------------------------------ credentials


@pytest.mark.parametrize("url, shown", [
    ("postgresql://user:secret@host/db", "postgresql://user:***@host/db"),
    ("postgresql+psycopg2://optuna:s3cr%40t@db:5432/optuna?sslmode=require",
     "postgresql+psycopg2://optuna:***@db:5432/optuna?sslmode=require"),
    ("mysql://root:p@ss@db/x", "mysql://root:***@db/x"),
    ("https://alice:secret@tracking.example.org:5000", "https://alice:***@tracking.example.org:5000"),
    ("see http://a:b@h/x and postgresql://u:v@w/z", "see http://a:***@h/x and postgresql://u:***@w/z"),
    ("postgresql://user@host/db", "postgresql://user@host/db"),
    ("http://host:5000/path", "http://host:5000/path"),
    ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
])
def test_redact(url, shown):
    assert tracking.redact(url) == shown


def test_report_error_masks_the_password(workdir, capsys, monkeypatch):
    _fresh_http_retries(monkeypatch)
    line = user_error(["report", "aurl", "--profile", "quick", "--tracking-uri",
                       "http://alice:secret@127.0.0.1:9"], capsys, needle="alice:***@127.0.0.1:9")
    assert "secret" not in line


def test_storage_error_masks_the_password(workdir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "MySQLdb", None)
    line = user_error(_sweep("mysql://optuna:secret@db/optuna"), capsys, needle="optuna:***@db")
    assert "secret" not in line


def test_sweep_records_and_prints_no_storage_password(workdir, capsys, monkeypatch):
    """The Optuna storage URL, password included, was an MLflow tag of every sweep run and
    part of the sweep's summary line."""
    import optuna

    from harness import sweep

    storage = "postgresql+psycopg2://optuna:secret@127.0.0.1:1/optuna"
    local = f"sqlite:///{workdir / 'optuna.db'}"

    def open_local(name: str, url: str, direction: str) -> Any:  # the study, kept in SQLite
        assert url == storage
        study = optuna.create_study(study_name=name, storage=local, direction=direction,
                                    load_if_exists=True)
        dist = optuna.distributions.FloatDistribution(1e-5, 1.0, log=True)
        study.add_trial(optuna.trial.create_trial(
            params={"lr": 0.01, "lambda_ga": 0.1, "lambda_gu": 0.01},
            distributions={"lr": dist, "lambda_ga": dist, "lambda_gu": dist}, value=0.5))
        return study

    monkeypatch.setattr(sweep, "open_study", open_local)
    assert main(_sweep(storage)) == 0  # the study already holds its one trial: nothing trains
    out = capsys.readouterr()
    assert "optuna:***@127.0.0.1" in out.out
    assert "secret" not in out.out + out.err
    mlf = tracking.client(tracking.tracking_uri())
    exp = mlf.get_experiment_by_name("aurl")
    runs = mlf.search_runs([exp.experiment_id])
    assert runs
    for run in runs:
        assert "secret" not in repr(run.data.tags) + repr(run.data.params)
    (parent,) = [r for r in runs if r.data.tags.get(tracking.TAG_KIND) == "sweep"]
    assert parent.data.tags["storage"] == "postgresql+psycopg2://optuna:***@127.0.0.1:1/optuna"


def test_bench_prints_the_tracking_uri_masked(workdir, capsys, monkeypatch):
    from harness import runner

    class NoRuns:
        def __init__(self, bench: Any, uri: str | None = None, **kw: Any):
            self.uri = tracking.tracking_uri(uri)

        def run_all(self) -> tuple[str, list]:
            return "parent", []

    monkeypatch.setattr(runner, "Runner", NoRuns)
    uri = "https://alice:secret@tracking.example.org"
    assert main(["bench", "aurl", "--profile", "quick", "--no-report", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "tracking https://alice:***@tracking.example.org" in out and "secret" not in out


# ------------------------------------------------------------------ real console, subprocesses
# The real entry point (``python -m harness.cli``), each case in a fresh directory with a fresh
# SQLite MLflow store. The processes start with the module's first test and are read by the
# last tests of the file, so their start-up (importing Lightning) overlaps the tests above.

_PROCESSES = {
    "jobs-list": (["list"], {"JOBS": "abc"}),
    "jobs-bench": (["bench", "aurl"], {"JOBS": "abc"}),
    "report-empty-store": (["report", "aurl", "--profile", "quick"], {}),
}
_STARTED: dict[str, subprocess.Popen[str]] = {}


@pytest.fixture(scope="module", autouse=True)
def _start_processes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[None]:
    """Start the console cases now if any is selected; kill what is left at the end."""
    if any(item.name.startswith("test_console_") for item in request.session.items):
        for name, (argv, extra) in _PROCESSES.items():
            cwd = tmp_path_factory.mktemp(name)
            env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}", **extra}
            env.pop("PROFILE", None)
            _STARTED[name] = subprocess.Popen(HARNESS + argv, cwd=cwd, env=env, text=True,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    yield
    for proc in _STARTED.values():
        if proc.poll() is None:
            proc.kill()
    _STARTED.clear()


def _finish(name: str) -> tuple[int, str, list[str]]:
    out, err = _STARTED[name].communicate(timeout=300)
    return _STARTED[name].returncode, out, [ln for ln in err.splitlines() if ln.strip()]


def test_console_jobs_abc_does_not_break_list():
    """`JOBS=abc harness list` crashed: the --jobs default was computed when building the parser."""
    code, out, err = _finish("jobs-list")
    assert code == 0, err
    assert "benchmarks:" in out and "aurl" in out
    assert not any("Traceback" in ln or "error" in ln for ln in err), err


@pytest.mark.parametrize("case, needle", [
    ("jobs-bench", "JOBS='abc' in the environment is not a positive integer"),
    ("report-empty-store", "no finished runs of benchmark aurl"),
])
def test_console_user_error_is_one_line(case, needle):
    """The whole stderr of the real command: one line (no MLflow / alembic start-up lines, no
    traceback), exit code 2."""
    code, _, err = _finish(case)
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
