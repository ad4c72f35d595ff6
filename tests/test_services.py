"""Against real servers: an MLflow tracking server (killed mid-run), PostgreSQL for Optuna."""

import os
import subprocess
import sys
import time

import pytest
from services import Postgres, postgres_bin

from harness import tracking
from harness.cli import main

SLOW = """
name: fault
methods:
  lightgcn: {method: bpr, params: {backbone: lightgcn, lr: 0.01}}
datasets:
  synth:
    dataset: amazon
    # one optimiser step per Lightning step: train/loss logged every 5 steps, 14+ times
    params: {batch_size: 256, group_batches: 1, synthetic: {n_users: 1200, n_items: 600, n_topics: 6}}
seeds: 1
monitor: {metric: val/recall_20, mode: max}
table: [recall_20]
trainer: {max_epochs: 14, accelerator: cpu, devices: 1, log_every_n_steps: 5}
"""


def harness(workdir, *args, uri=None):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if uri:
        env["MLFLOW_TRACKING_URI"] = uri
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_quick_bench_through_a_tracking_server(workdir, mlflow_server, capsys):
    argv = ["bench", "aurl", "--profile", "quick", "--no-progress", "--tracking-uri",
            mlflow_server.url]
    assert main(argv) == 0
    mlf = tracking.client(mlflow_server.url)
    exp = mlf.get_experiment_by_name("aurl")
    runs = mlf.search_runs([exp.experiment_id], filter_string="tags.`harness.complete` = '1'")
    assert len(runs) == 8
    (parent,) = mlf.search_runs([exp.experiment_id], filter_string="tags.`harness.kind` = 'bench'")
    names = {a.path for a in mlf.list_artifacts(parent.info.run_id, "report")}
    assert "report/aurl.csv" in names  # uploaded through the server's artifact proxy
    assert not (workdir / "mlflow.db").exists()


def test_tracking_server_killed_mid_run_loses_nothing(workdir, mlflow_server):
    (workdir / "fault.yaml").write_text(SLOW)
    proc = harness(workdir, "bench", "fault.yaml", "--no-progress", "--no-report",
                   uri=mlflow_server.url)
    mlf = tracking.client(mlflow_server.url)
    run_id, deadline = None, time.time() + 180
    while time.time() < deadline and proc.poll() is None:  # wait for two logged epochs
        exp = mlf.get_experiment_by_name("fault")
        runs = mlf.search_runs([exp.experiment_id], "tags.`harness.kind` = 'run'") if exp else []
        if runs and len(mlf.get_metric_history(runs[0].info.run_id, "val/recall_20")) >= 2:
            run_id = runs[0].info.run_id
            break
        time.sleep(0.3)
    assert run_id, proc.communicate()[0]
    mlflow_server.kill()
    time.sleep(4)  # training goes on without the server
    assert proc.poll() is None, "the bench died with the tracking server"
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    assert "writes kept in" in out
    assert tracking.journal_files(workdir / "runs")

    mlflow_server.start()  # back, on the same port and database
    sync = harness(workdir, "sync", uri=mlflow_server.url)
    sync_out = sync.communicate(timeout=120)[0]
    assert sync.returncode == 0, sync_out
    assert not tracking.journal_files(workdir / "runs")

    run = mlf.get_run(run_id)
    assert run.data.tags[tracking.TAG_COMPLETE] == "1" and run.info.status == "FINISHED"
    val = mlf.get_metric_history(run_id, "val/recall_20")
    assert sorted(m.step for m in val) == sorted({m.step for m in val}) and len(val) == 14
    loss = mlf.get_metric_history(run_id, "train/loss")
    assert len(loss) >= 14 and len({m.step for m in loss}) == len(loss)
    assert "test/recall_20" in run.data.metrics
    kept = [ln for ln in out.splitlines() if "writes kept in" in ln]
    print(f"\nserver killed after 2 epochs; {kept[0].strip()}; after sync: {len(val)} val/recall_20 "
          f"steps (14 epochs), {len(loss)} train/loss steps, all unique; {sync_out.strip()}")


def test_jobs_two_workers(workdir, capsys):
    argv = ["bench", "aurl", "--profile", "quick", "--no-progress", "--no-report", "--jobs", "2"]
    assert main(argv) == 0
    assert "8 done" in capsys.readouterr().out
    mlf = tracking.client(tracking.tracking_uri())
    exp = mlf.get_experiment_by_name("aurl")
    runs = mlf.search_runs([exp.experiment_id], filter_string="tags.`harness.complete` = '1'")
    assert len(runs) == 8 and len({r.data.tags["mlflow.parentRunId"] for r in runs}) == 1
    assert main(argv) == 0
    assert "0 done, 8 skipped" in capsys.readouterr().out


def _open_store(uri, barrier, results):
    barrier.wait()  # every process opens the new store at the same moment
    try:
        tracking.client(uri).search_experiments()
        results.put("ok")
    except Exception as exc:  # the race: "duplicate column name", alembic's CommandError
        results.put(f"{type(exc).__name__}: {str(exc)[:120]}")


def test_processes_opening_a_new_sqlite_store_at_once(tmp_path):
    """Opening a store creates its tables; without the lock in ``tracking.client`` three of
    four processes opening a new SQLite database at once failed (a script polling a run's
    progress while the run's process started hit it)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")  # harness.tracking is imported already: no re-import per child
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # without the lock this failed 3 times of 3
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_open_store, args=(uri, barrier, results)) for _ in range(4)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert got == ["ok"] * 4, got


@pytest.mark.skipif(postgres_bin() is None and not os.environ.get("CI"),
                    reason="PostgreSQL server not installed (.ci/run installs it)")
def test_two_sweep_workers_share_a_postgres_study(workdir, mlflow_server):
    pg = Postgres()
    pg.start()
    try:
        args = ("sweep", "aurl", "--profile", "quick", "--trials", "8", "--no-progress",
                "--storage", pg.url)
        workers = [harness(workdir, *args, uri=mlflow_server.url) for _ in range(2)]
        outs = [w.communicate(timeout=400)[0] for w in workers]
        assert all(w.returncode == 0 for w in workers), outs

        import optuna

        study = optuna.load_study(study_name="aurl-amazon-synthetic-mf+aurl", storage=pg.url)
        finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                           optuna.trial.TrialState.PRUNED)]
        assert len(finished) >= 8
        assert {w.pid for w in workers} == {t.user_attrs["worker_pid"] for t in study.trials}
    finally:
        pg.stop()


