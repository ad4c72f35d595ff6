"""A third-party package adds a method and a dataset through entry points alone."""

import textwrap

from harness import registry, tracking
from harness.runner import Runner
from harness.spec import load

PLUGIN = '''
import lightning.pytorch as L
import torch
from torch.utils.data import DataLoader, TensorDataset


class LineData(L.LightningDataModule):
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


class LineFit(L.LightningModule):
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


def test_entry_point_plugin_runs_through_the_runner(workdir, monkeypatch):
    site = workdir / "site"
    (site / "fakeplug").mkdir(parents=True)
    (site / "fakeplug" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    dist = site / "fakeplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[harness.methods]\nfake-linefit = fakeplug:LineFit\n\n"
        "[harness.datasets]\nfake-line = fakeplug:LineData\n")
    monkeypatch.syspath_prepend(str(site))

    assert "fake-linefit" in registry.names("method")
    assert "fake-line" in registry.names("dataset")

    (workdir / "plugin.yaml").write_text(BENCH)
    bench = load(str(workdir / "plugin.yaml"))
    runner = Runner(bench, progress=False)
    _, results = runner.run_all()
    assert [r.status for r in results] == ["done", "done"]
    mlf = tracking.client(runner.uri)
    for r in results:
        run = mlf.get_run(r.run_id)
        assert run.data.metrics["test/mse"] < 0.05  # it learned y = 3x
        assert run.data.tags["method"] == "fit" and run.data.tags["data_fingerprint"] == "line-v1"
