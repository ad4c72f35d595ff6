"""A sweep killed with SIGKILL mid-trial continues on rerun (benchmarks killed at every moment,
with every signal: tests/test_kill.py)."""

import os
import signal
import subprocess
import sys
import time

from harness import tracking

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
    # the killed sweep's parent (and its trial's run) were closed by the rerun, not left RUNNING
    assert all(r.info.status != "RUNNING" for r in mlf.search_runs([exp.experiment_id]))
