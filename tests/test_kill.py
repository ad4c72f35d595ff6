"""Kills at every moment of a benchmark, then reruns: nothing lost, duplicated or left RUNNING.

A tiny plugin method (registered through entry points, like a third-party package) makes the
timing controllable: each training step sleeps a little and the test sleeps, so a signal can
be sent while a stage trains, between training and test, or while the report is written.
Each scenario runs the real console script in a subprocess, kills it with SIGKILL, SIGTERM or
SIGINT at four moments in turn (start-up, mid-stage, between training and test, report),
reruns it to the end, and compares the records with an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness import checkpoints, tracking
from harness.cli import main

HARNESS = Path(sys.executable).parent / "harness"  # the console script of the running venv

PLUGIN = '''
import math
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from harness.api import DataModule, Method


class LineData(DataModule):
    """y = 3x + noise, 256 points: four batches an epoch, in a fixed order."""

    def __init__(self, n: int = 256, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(123 + seed)
        self.x = torch.randn(n, 1, generator=g)
        self.y = 3 * self.x + 0.1 * torch.randn(n, 1, generator=g)
        self.info = {"in_features": 1}

    def fingerprint(self) -> str:
        return "killline-v1"

    def _loader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=64)

    def train_dataloader(self):
        return self._loader()

    def val_dataloader(self):
        return self._loader()

    def test_dataloader(self):
        return self._loader()


class SlowFit(Method):
    """Least squares by SGD, slowed down on purpose. ``val/peak`` is best at epoch 2, so the
    best checkpoint and the last one differ from epoch 3 on."""

    metrics = {"mse": "min", "peak": "max"}

    def __init__(self, info, lr: float = 0.05, step_sleep: float = 0.0, test_sleep: float = 0.0,
                 nan_test: bool = False):
        super().__init__()
        self.save_hyperparameters(ignore=["info"])
        self.lin = torch.nn.Linear(info["in_features"], 1)

    def training_step(self, batch, i):
        time.sleep(self.hparams.step_sleep)
        x, y = batch
        return torch.nn.functional.mse_loss(self.lin(x), y)

    def validation_step(self, batch, i):
        x, y = batch
        self.log("val/mse", torch.nn.functional.mse_loss(self.lin(x), y))
        self.log("val/peak", 1.0 / (1.0 + abs(self.current_epoch - 2)))

    def test_step(self, batch, i):
        time.sleep(self.hparams.test_sleep / 4)
        x, y = batch
        mse = torch.nn.functional.mse_loss(self.lin(x), y)
        self.log("test/mse", mse * math.nan if self.hparams.nan_test else mse)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
'''

EPOCHS = 10


def bench_yaml(step_sleep: float = 0.05, test_sleep: float = 2.0, seeds: int = 2,
               nan_test: bool = False, name: str = "kill") -> str:
    return textwrap.dedent(f"""
        name: {name}
        methods:
          slow: {{method: kill-slowfit, params: {{step_sleep: {step_sleep}, test_sleep: {test_sleep},
                  nan_test: {str(nan_test).lower()}}}}}
        datasets:
          line: {{dataset: kill-line}}
        seeds: {seeds}
        monitor: {{metric: val/peak, mode: max}}
        early_stopping: {{patience: 20}}
        table: [mse]
        trainer: {{max_epochs: {EPOCHS}, accelerator: cpu, devices: 1, log_every_n_steps: 1}}
        """)


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    (site / "killplug").mkdir()
    (site / "killplug" / "__init__.py").write_text(PLUGIN)
    dist = site / "killplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: killplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[harness.methods]\nkill-slowfit = killplug:SlowFit\n\n"
        "[harness.datasets]\nkill-line = killplug:LineData\n")
    return site


class Bench:
    """One benchmark directory driven through the real ``harness`` console script."""

    def __init__(self, root: Path, site: Path, yaml_text: str, name: str = "kill"):
        self.root, self.name = root, name
        root.mkdir(parents=True, exist_ok=True)
        (root / f"{name}.yaml").write_text(yaml_text)
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.env = {**os.environ, "PYTHONPATH": str(site), "MLFLOW_TRACKING_URI": self.uri,
                    "PYTHONWARNINGS": "ignore"}

    def start(self) -> subprocess.Popen:
        return subprocess.Popen([str(HARNESS), "bench", str(self.root / f"{self.name}.yaml"),
                                 "--no-progress"], cwd=self.root, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1)

    def run(self) -> tuple[int, str]:
        proc = self.start()
        out = proc.communicate(timeout=600)[0]
        return proc.returncode, out

    def run_here(self, capsys=None) -> tuple[int, str]:
        """The same command in this process (no interpreter start-up: seconds saved)."""
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(self.root)
            mp.setenv("MLFLOW_TRACKING_URI", self.uri)
            mp.syspath_prepend(self.env["PYTHONPATH"])
            code = main(["bench", str(self.root / f"{self.name}.yaml"), "--no-progress"])
        if capsys is None:
            return code, ""
        out = capsys.readouterr()
        return code, out.out + out.err

    def runs(self, kind: str = "run") -> list:
        mlf = tracking.client(self.uri)
        exp = mlf.get_experiment_by_name(self.name)
        if exp is None:
            return []
        return mlf.search_runs([exp.experiment_id], filter_string=f"tags.`harness.kind` = '{kind}'")

    def stage_dirs(self) -> list[Path]:
        return sorted((self.root / "runs" / self.name).glob("*/fit"))


def _wait(proc: subprocess.Popen, cond, timeout: float = 240) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if cond():
            return True
        time.sleep(0.05)
    return False


def _last_epoch(stage: Path) -> int:
    last = stage / "last.ckpt"
    try:
        return checkpoints.load(last)["epoch"] if last.exists() else -1
    except checkpoints.CorruptCheckpoint:  # mid-rename on a slow disk: ask again
        return -1


def _kill(b: Bench, sig: int, moment: str) -> tuple[int | None, str]:
    """Start the bench, send ``sig`` at ``moment``, return (exit code, output)."""
    proc = b.start()
    lines: list[str] = []
    if moment == "startup":
        time.sleep(0.7)  # importing torch, Lightning and MLflow
        assert proc.poll() is None
    elif moment == "mid-stage":
        # a stage that has finished at least 3 epochs but is not done
        assert _wait(proc, lambda: any(_last_epoch(s) >= 3 and not (s / "done").exists()
                                       for s in b.stage_dirs())), "no stage got to epoch 4"
    elif moment == "before-test":
        done = {s for s in b.stage_dirs() if (s / "done").exists()}
        assert _wait(proc, lambda: any((s / "done").exists() for s in set(b.stage_dirs()) - done)), \
            "no stage finished"
        time.sleep(0.3)  # inside the 2 s test
    elif moment == "report":
        for line in proc.stdout:  # the table is written after this line
            lines.append(line)
            if line.startswith("runs: "):
                break
        else:
            pytest.fail("the bench ended without a summary line:\n" + "".join(lines))
    proc.send_signal(sig)
    out = "".join(lines) + proc.communicate(timeout=300)[0]
    return proc.returncode, out


def _test_metrics(b: Bench) -> dict[int, float]:
    return {int(r.data.tags["seed"]): r.data.metrics["test/mse"] for r in b.runs()}


@pytest.fixture(scope="module")
def reference(plugin_site, tmp_path_factory) -> dict[int, float]:
    """Test metrics of an uninterrupted run."""
    b = Bench(tmp_path_factory.mktemp("reference"), plugin_site, bench_yaml(0.0, 0.0))
    code, out = b.run_here()
    assert code == 0, out
    return _test_metrics(b)


KILL, TERM, INT = signal.SIGKILL, signal.SIGTERM, signal.SIGINT
# Two benchmarks of two runs each, killed in turn (start-up kills are cheap, so there are more).
# SIGKILL leaves its runs RUNNING: the next invocation must close them. With the JOBS=2 test
# below, SIGINT and SIGTERM land at every moment, SIGKILL at all but the report (which
# records nothing a kill could leave half-done).
SCENARIOS = {
    "A": [("startup", KILL), ("startup", INT), ("mid-stage", KILL), ("before-test", INT),
          ("report", TERM)],
    "B": [("startup", TERM), ("mid-stage", INT), ("before-test", KILL), ("before-test", TERM),
          ("report", INT)],
}


def _running(b: Bench) -> list[str]:
    return [r.info.run_id for r in b.runs("run") + b.runs("bench") if r.info.status == "RUNNING"]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_kill_at_every_moment_then_rerun(plugin_site, tmp_path, reference, scenario, capsys):
    b = Bench(tmp_path / "b", plugin_site, bench_yaml())
    stale = 0  # runs a SIGKILL left RUNNING, for the next invocation to close
    for moment, sig in SCENARIOS[scenario]:
        code, out = _kill(b, sig, moment)
        if stale and moment != "startup":  # killed at start-up, it never got to close them
            assert f"closed {stale} run(s) left RUNNING by a killed process" in out, out
            stale = 0
        if sig == signal.SIGKILL:
            assert code == -signal.SIGKILL, (moment, out)
            stale = stale or len(_running(b))
        else:  # a clean stop: the exit status of the signal and the line saying what to do
            assert code == 128 + sig, (moment, code, out)
            assert out.strip().splitlines()[-1] == \
                f"interrupted ({signal.Signals(sig).name}); rerun the same command to resume", out
            assert "Traceback" not in out, out
            assert not _running(b), (moment, _running(b))
        if moment == "mid-stage":  # a stage killed mid-way left its last epoch, not its best
            (stage,) = [s for s in b.stage_dirs() if not (s / "done").exists()]
            assert _last_epoch(stage) >= 3
            assert checkpoints.load(stage / "best.ckpt")["epoch"] == 2
            if sig != signal.SIGKILL:  # SIGKILL may land mid-write: the next start removes it
                assert not list(stage.glob("*.tmp"))

    code, out = b.run_here(capsys)
    assert code == 0, out
    assert "0 failed" in out
    runs = b.runs()
    assert len(runs) == 2, "a run was lost or duplicated"
    assert all(tracking.is_complete(r) and r.info.status == "FINISHED" for r in runs)
    parents = b.runs("bench")
    assert all(p.info.status != "RUNNING" for p in parents), [p.info.status for p in parents]
    latest = max(parents, key=lambda p: p.info.start_time)
    assert all(r.data.tags["mlflow.parentRunId"] == latest.info.run_id for r in runs)
    mlf = tracking.client(b.uri)
    for r in runs:  # every epoch's validation logged exactly once across the processes
        steps = [m.step for m in mlf.get_metric_history(r.info.run_id, "val/mse")]
        assert len(steps) == EPOCHS and len(set(steps)) == EPOCHS, steps
    assert _test_metrics(b) == reference  # bitwise those of an uninterrupted run


def _resumable(b: Bench) -> Path:
    """Mark the bench's single finished run incomplete and its stage unfinished, as after a
    kill; return its stage directory."""
    (run,) = b.runs()
    tracking.client(b.uri).set_tag(run.info.run_id, tracking.TAG_COMPLETE, "0")
    (stage,) = b.stage_dirs()
    (stage / "done").unlink()
    return stage


class Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_planted_checkpoint_with_code_is_refused(plugin_site, tmp_path, capsys):
    import torch

    b = Bench(tmp_path / "b", plugin_site, bench_yaml(0.0, 0.0, seeds=1))
    assert b.run_here(capsys)[0] == 0
    stage = _resumable(b)
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "epoch": 3, "x": Payload(str(marker))}, stage / "last.ckpt")
    code, out = b.run_here(capsys)
    assert code == 0, out
    assert not marker.exists(), "the planted checkpoint ran its payload"
    assert "set aside as last.ckpt.corrupt-" in out and "could run code" in out, out
    assert f"{stage.relative_to(b.root)}/last.ckpt" in out, out
    assert list(stage.glob("last.ckpt.corrupt-*")) and (stage / "done").exists()
    (run,) = b.runs()
    assert tracking.is_complete(run) and "harness.checkpoint_set_aside" in run.data.tags


def test_truncated_checkpoint_is_set_aside_and_the_stage_restarts(plugin_site, tmp_path, capsys):
    b = Bench(tmp_path / "b", plugin_site, bench_yaml(0.0, 0.0, seeds=1))
    assert b.run_here(capsys)[0] == 0
    before = _test_metrics(b)
    stage = _resumable(b)
    data = (stage / "last.ckpt").read_bytes()
    (stage / "last.ckpt").write_bytes(data[: len(data) // 2])
    code, out = b.run_here(capsys)
    assert code == 0, out
    assert f"checkpoint {stage.relative_to(b.root)}/last.ckpt: unreadable" in out, out
    assert "restarts from its first epoch" in out, out
    assert _test_metrics(b) == before  # retrained from scratch, deterministically


def test_nonfinite_table_metric_fails_the_run(plugin_site, tmp_path, capsys):
    b = Bench(tmp_path / "b", plugin_site, bench_yaml(0.0, 0.0, seeds=1, nan_test=True))
    code, out = b.run_here(capsys)
    assert code == 1, out
    assert "test/mse = nan" in out and "kill-line" in out, out
    (run,) = b.runs()
    assert run.info.status == "FAILED" and not tracking.is_complete(run)
    code, out = b.run_here(capsys)  # not skipped: tried again
    assert code == 1 and "0 skipped, 1 failed" in out, out


def test_fresh_tracking_store_does_not_adopt_old_checkpoints(plugin_site, tmp_path, capsys):
    b = Bench(tmp_path / "b", plugin_site, bench_yaml(0.0, 0.0, seeds=1))
    assert b.run_here(capsys)[0] == 0
    b.uri = f"sqlite:///{b.root / 'fresh.db'}"  # a new MLFLOW_TRACKING_URI, the same runs/
    code, out = b.run_here(capsys)
    assert code == 0, out
    assert "held checkpoints of another MLflow run" in out, out
    assert list((b.root / "runs" / "kill").glob("*.orphaned-*"))
    (run,) = b.runs()
    steps = [m.step for m in tracking.client(b.uri).get_metric_history(run.info.run_id, "val/mse")]
    assert len(steps) == EPOCHS  # the full curve, in this store


def test_sigterm_stops_parallel_workers_and_closes_their_runs(plugin_site, tmp_path):
    """With JOBS=2, SIGTERM reaches the main process only: it passes the signal on and each
    worker closes its run as KILLED."""
    b = Bench(tmp_path / "b", plugin_site, bench_yaml(step_sleep=0.1))
    b.env["JOBS"] = "2"
    code, out = _kill(b, signal.SIGTERM, "mid-stage")
    assert code == 128 + signal.SIGTERM, out
    assert out.strip().splitlines()[-1].startswith("interrupted (SIGTERM)"), out
    statuses = {r.info.run_id: r.info.status for r in b.runs("run") + b.runs("bench")}
    assert "RUNNING" not in statuses.values(), statuses
    assert "KILLED" in statuses.values()
