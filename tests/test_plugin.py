"""A third-party package adds a method and a dataset through entry points alone, written only
against the contract (harness.api), and runs through `make bench`; one that breaks the contract
is named by `harness list` and refused with one line."""

import os
import subprocess
import textwrap

import pytest

from harness import registry, tracking
from harness.cli import main
from harness.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PLUGIN = '''
import torch
from torch.utils.data import DataLoader, TensorDataset

from harness.api import DataModule, Method


class LineData(DataModule):
    """y = 3x + noise."""

    def __init__(self, n: int = 256, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 1, generator=g)
        self.y = 3 * self.x + 0.01 * torch.randn(n, 1, generator=g)
        self.info = {"in_features": 1}

    def fingerprint(self) -> str:
        return "line-v1"

    def _loader(self, shuffle=False):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=64, shuffle=shuffle)

    def train_dataloader(self):
        return self._loader(True)

    def val_dataloader(self):
        return self._loader()

    def test_dataloader(self):
        return self._loader()


class LineFit(Method):
    """Least squares by gradient descent."""

    metrics = {"mse": "min"}

    def __init__(self, info, lr: float = 0.1):
        super().__init__()
        self.save_hyperparameters(ignore=["info"])
        self.lin = torch.nn.Linear(info["in_features"], 1)

    def training_step(self, batch, i):
        x, y = batch
        return torch.nn.functional.mse_loss(self.lin(x), y)

    def validation_step(self, batch, i):
        x, y = batch
        self.log("val/mse", torch.nn.functional.mse_loss(self.lin(x), y))

    def test_step(self, batch, i):
        x, y = batch
        self.log("test/mse", torch.nn.functional.mse_loss(self.lin(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class NotAMethod(torch.nn.Module):
    """Forgot to subclass harness.api.Method."""

    def __init__(self, info, lr: float = 0.1):
        super().__init__()


class HidesParams(LineFit):
    """Takes a hyperparameter it does not save."""

    def __init__(self, info, lr: float = 0.1, width: int = 3):
        Method.__init__(self)
        self.save_hyperparameters({"lr": lr})
        self.lin = torch.nn.Linear(info["in_features"], 1)
'''

BENCH = """
name: plugin
methods:
  fit: {method: fake-linefit, params: {lr: 0.1}}
datasets:
  line: {dataset: fake-line}
seeds: 2
monitor: {metric: val/mse, mode: min}
table: [mse]
trainer: {max_epochs: 15, accelerator: cpu, devices: 1}
"""


def _install(workdir, monkeypatch, methods: dict[str, str]) -> str:
    site = workdir / "site"
    (site / "fakeplug").mkdir(parents=True)
    (site / "fakeplug" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    dist = site / "fakeplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 0.1\n")
    lines = "".join(f"{k} = fakeplug:{v}\n" for k, v in methods.items())
    (dist / "entry_points.txt").write_text(
        f"[harness.methods]\n{lines}\n[harness.datasets]\nfake-line = fakeplug:LineData\n")
    monkeypatch.syspath_prepend(str(site))
    return str(site)


def test_contract_plugin_runs_through_make_bench(workdir, monkeypatch):
    site = _install(workdir, monkeypatch, {"fake-linefit": "LineFit"})
    assert "fake-linefit" in registry.names("method")
    assert "fake-line" in registry.names("dataset")
    (workdir / "plugin.yaml").write_text(BENCH)
    env = {**os.environ, "PYTHONPATH": site, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'm.db'}"}
    out = subprocess.run(["make", "-f", os.path.join(REPO, "Makefile"), "bench",
                          f"METHOD={workdir / 'plugin.yaml'}", "PROFILE=default"],
                         cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "runs: 2 done, 0 skipped, 0 failed" in out.stdout
    assert (workdir / "reports" / "plugin.csv").exists()
    mlf = tracking.client(env["MLFLOW_TRACKING_URI"])
    exp = mlf.get_experiment_by_name("plugin")
    runs = [r for r in mlf.search_runs([exp.experiment_id]) if r.data.tags.get("method") == "fit"]
    assert len(runs) == 2
    for run in runs:
        assert run.data.metrics["test/mse"] < 0.05  # it learned y = 3x
        assert run.data.tags["data_fingerprint"] == "line-v1"
        assert run.data.params["hparams.lr"] == "0.1"  # the model's saved hyperparameters


def test_contract_breaking_plugins_are_named(workdir, monkeypatch, capsys):
    _install(workdir, monkeypatch, {"fake-bad": "NotAMethod", "fake-hides": "HidesParams"})
    with pytest.raises(UserError, match="not a harness.api.Method"):
        registry.load("method", "fake-bad")
    assert main(["list", "--check"]) == 1
    out = capsys.readouterr()
    assert "BROKEN" in out.out and "fake-bad" in out.out and "aurl" in out.out
    assert main(["list"]) == 0  # read from the sources: listed, nothing imported or checked
    out = capsys.readouterr()
    assert "fake-bad" in out.out and "BROKEN" not in out.out
    bench = BENCH.replace("fake-linefit", "fake-hides").replace("seeds: 2", "seeds: 1")
    (workdir / "hides.yaml").write_text(bench)
    assert main(["bench", str(workdir / "hides.yaml"), "--no-progress", "--no-report"]) == 2
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if "mlflow.store.db" not in ln]
    assert len(err) == 1 and "does not save hyperparameters ['width']" in err[0], err
    bench = BENCH.replace("fake-linefit", "fake-bad")
    (workdir / "bad.yaml").write_text(bench)
    assert main(["bench", str(workdir / "bad.yaml"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a harness.api.Method" in err[0]
