"""Two CPU processes (ddp_spawn) give the one-process run's metrics; only rank 0 logs."""

import pytest

from harness import tracking
from harness.cli import main

BENCH = """
name: ddp
methods:
  lightgcn: {method: bpr, params: {backbone: lightgcn, lr: 0.01}}
datasets:
  synth: {dataset: amazon, params: {batch_size: 512, synthetic: {n_users: 400, n_items: 250, n_topics: 5}}}
seeds: 1
monitor: {metric: val/recall_20, mode: max}
table: [recall_20, ndcg_20]
trainer: {max_epochs: 3, accelerator: cpu, devices: 1}
"""
TOLERANCE = 1e-4  # absolute, on every test metric (observed: at most 6e-8)


def test_ddp_spawn_matches_single_process(workdir):
    (workdir / "ddp.yaml").write_text(BENCH)
    base = ["bench", str(workdir / "ddp.yaml"), "--no-progress", "--no-report"]
    assert main(base) == 0
    assert main(base + ["--devices", "2", "--strategy", "ddp_spawn"]) == 0

    mlf = tracking.client(tracking.tracking_uri())
    exp = mlf.get_experiment_by_name("ddp")
    runs = mlf.search_runs([exp.experiment_id], filter_string="tags.`harness.kind` = 'run'")
    assert len(runs) == 2  # one MLflow run per configuration, none from rank 1
    one = next(r for r in runs if r.data.params["trainer.devices"] == "1")
    two = next(r for r in runs if r.data.params["trainer.devices"] == "2")
    test_keys = [k for k in one.data.metrics if k.startswith("test/")]
    assert len(test_keys) >= 8
    for k in test_keys:
        assert two.data.metrics[k] == pytest.approx(one.data.metrics[k], abs=TOLERANCE), k
    for run in (one, two):  # each epoch's validation logged exactly once
        history = mlf.get_metric_history(run.info.run_id, "val/recall_20")
        assert len(history) == 3 and len({m.step for m in history}) == 3


def test_torchrun_two_ranks_write_one_run(workdir):
    """Every rank runs the whole command under torchrun; only rank 0 creates runs and logs."""
    import os
    import shutil
    import subprocess
    import sys

    (workdir / "ddp.yaml").write_text(BENCH)
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "harness.cli", "bench",
           "ddp.yaml", "--no-progress", "--devices", "2", "--strategy", "ddp", "--accelerator",
           "cpu"]
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    mlf = tracking.client(tracking.tracking_uri())
    exp = mlf.get_experiment_by_name("ddp")
    runs = mlf.search_runs([exp.experiment_id], filter_string="tags.`harness.kind` = 'run'")
    parents = mlf.search_runs([exp.experiment_id], filter_string="tags.`harness.kind` = 'bench'")
    assert len(runs) == 1 and len(parents) == 1
    assert len(mlf.get_metric_history(runs[0].info.run_id, "val/recall_20")) == 3
    assert "| lightgcn | **" in (workdir / "reports" / "ddp.md").read_text()


ROBUST = """
name: ddprobust
methods:
  groupdro: {method: groupdro, params: {hidden_size: 16, layers: 1, heads: 2, dropout: 0.0, eta: 0.1}}
datasets:
  text: {dataset: robust-text, params: {batch_size: 32, eval_batch_size: 50,
         synthetic: {n_train: 250, n_val: 101, n_test: 101, n_hans: 99}}}
seeds: 1
monitor: {metric: val/worst_group_acc, mode: max}
table: [acc, worst_group_acc, acc_all_broken, ece]
trainer: {max_epochs: 2, accelerator: cpu, devices: 1}
"""


def test_robust_ddp_spawn_matches_single_process(workdir):
    """The robustness loaders shard every global batch across ranks and the methods gather
    the predictions: two processes give the one-process metrics, GroupDRO's q (summed
    over ranks) included, on odd split sizes (the ranks' shares differ in length). (Each
    ddp_spawn Trainer costs a process start: one fit and one test, no second criterion.)"""
    (workdir / "ddprobust.yaml").write_text(ROBUST)
    base = ["bench", str(workdir / "ddprobust.yaml"), "--no-progress", "--no-report"]
    assert main(base) == 0
    assert main(base + ["--devices", "2", "--strategy", "ddp_spawn"]) == 0

    mlf = tracking.client(tracking.tracking_uri())
    exp = mlf.get_experiment_by_name("ddprobust")
    runs = mlf.search_runs([exp.experiment_id], filter_string="tags.`harness.kind` = 'run'")
    assert len(runs) == 2
    one, two = (next(r for r in runs if r.data.params["trainer.devices"] == d) for d in ("1", "2"))
    test_keys = [k for k in one.data.metrics if k.startswith("test/")]
    assert len(test_keys) >= 15
    for k in test_keys:
        assert two.data.metrics[k] == pytest.approx(one.data.metrics[k], abs=1e-4), k
