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
