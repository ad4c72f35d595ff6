"""A bench killed with SIGKILL mid-run resumes from its checkpoint into the same MLflow run."""

import os
import signal
import subprocess
import sys
import time

from harness import tracking

BENCH = """
name: resume
methods:
  lightgcn: {method: bpr, params: {backbone: lightgcn, lr: 0.01}}
datasets:
  synth: {dataset: amazon, params: {synthetic: {n_users: 1500, n_items: 800, n_topics: 8}}}
seeds: 1
monitor: {metric: val/recall_20, mode: max}
table: [recall_20]
trainer: {max_epochs: 12, accelerator: cpu, devices: 1}
"""


def bench(workdir):
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "bench", str(workdir / "resume.yaml"),
         "--no-progress"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def test_sigkill_then_rerun_resumes_same_run(workdir):
    (workdir / "resume.yaml").write_text(BENCH)
    proc = bench(workdir)
    deadline = time.time() + 240
    last = None
    while time.time() < deadline and proc.poll() is None:
        found = list((workdir / "runs" / "resume").glob("*/fit/last.ckpt"))
        if found:
            last = found[0]
            time.sleep(0.5)  # let it get a little further into training
            break
        time.sleep(0.1)
    assert last is not None, proc.communicate()[0]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (last.parent / "done").exists(), "the run finished before it could be killed"

    mlf = tracking.client(tracking.tracking_uri())
    exp = mlf.get_experiment_by_name("resume")
    runs = mlf.search_runs([exp.experiment_id], filter_string="tags.`harness.kind` = 'run'")
    assert len(runs) == 1 and not tracking.is_complete(runs[0])
    killed_id = runs[0].info.run_id
    logged_before = len(mlf.get_metric_history(killed_id, "val/recall_20"))

    proc = bench(workdir)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    assert f"resuming run {killed_id}" in out and "resuming from" in out

    runs = mlf.search_runs([exp.experiment_id], filter_string="tags.`harness.kind` = 'run'")
    assert len(runs) == 1, "a second run was created for the same key"
    run = runs[0]
    assert run.info.run_id == killed_id and tracking.is_complete(run)
    resumed = run.data.tags["harness.resumed_from"]
    epoch = int(resumed.rsplit("@epoch", 1)[1])
    assert epoch >= 1  # training restarted from a saved epoch, not from scratch
    history = mlf.get_metric_history(killed_id, "val/recall_20")
    steps = sorted({m.step for m in history})
    assert len(steps) == 12  # every epoch's validation, each once, across both processes
    assert logged_before >= epoch
    assert "test/recall_20" in run.data.metrics

    # and a third invocation repeats nothing
    proc = bench(workdir)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0 and "0 done, 1 skipped" in out


SWEEP_BENCH = """
name: sweepkill
proposed: [lightgcn]
methods:
  lightgcn: {method: bpr, params: {backbone: lightgcn}}
datasets:
  synth: {dataset: amazon, params: {synthetic: {n_users: 1500, n_items: 800, n_topics: 8}}}
seeds: 1
monitor: {metric: val/recall_20, mode: max}
table: [recall_20]
trainer: {max_epochs: 10, accelerator: cpu, devices: 1}
"""


def test_sigkilled_sweep_continues_without_counting_the_killed_trial(workdir):
    import optuna

    (workdir / "sweepkill.yaml").write_text(SWEEP_BENCH)
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    args = [sys.executable, "-m", "harness.cli", "sweep", "sweepkill.yaml", "--trials", "4",
            "--no-progress", "--storage", storage]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(args, cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    name = "sweepkill-synth-lightgcn"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        try:
            trials = optuna.load_study(study_name=name, storage=storage).trials
        except KeyError:
            trials = []
        done = [t for t in trials if t.state.is_finished()]
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        if done and running:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            break
        time.sleep(0.2)
    after = optuna.load_study(study_name=name, storage=storage).trials
    running = [t.number for t in after if t.state == optuna.trial.TrialState.RUNNING]
    assert running, "no trial was in flight when the sweep was killed"
    killed_trial = running[0]

    proc = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = optuna.load_study(study_name=name, storage=storage)
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                      optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 4
    killed = study.trials[killed_trial]
    assert killed.state not in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    mlf = tracking.client(tracking.tracking_uri())
    exp = mlf.get_experiment_by_name("sweepkill")
    runs = mlf.search_runs([exp.experiment_id], filter_string="tags.`optuna.study` != ''")
    numbers = [r.data.tags["optuna.trial"] for r in runs]
    assert len(numbers) == len(set(numbers))  # no trial ran twice
    # every finished trial has its MLflow run (the killed one may have died before creating it)
    assert {str(t.number) for t in finished} <= set(numbers) <= {str(t.number) for t in study.trials}
