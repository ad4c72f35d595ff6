"""Small shared pieces for tests: a tiny multi-domain benchmark and running one bench."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from harness import tracking
from harness.cli import main


def tiny_seq_bench(name: str, row: str, method: str, lr: float, table: str) -> str:
    """A one-row, one-seed, one-epoch benchmark on two tiny synthetic domains (target Toys)."""
    return f"""
name: {name}
methods:
  {row}: {{method: {method}, params: {{lr: {lr}}}}}
datasets:
  tiny: {{dataset: amazon-seq, params: {{domains: [Beauty, Toys], target: Toys, n_candidates: 10,
         synthetic: {{n_users: 60, n_items: 50}}, pretrain: {{steps: 20}}}}}}
seeds: 1
monitor: {{metric: val/ndcg_3, mode: max}}
table: {table}
trainer: {{max_epochs: 1, accelerator: cpu, devices: 1}}
"""


def run_bench(workdir: Path, text: str, name: str) -> Any:
    """Write the YAML, run it through the CLI, return its single complete MLflow run."""
    path = workdir / f"{name}.yaml"
    path.write_text(text)
    assert main(["bench", str(path), "--no-progress", "--no-report"]) == 0
    mlf = tracking.client(tracking.tracking_uri())
    exp = mlf.get_experiment_by_name(name)
    (run,) = mlf.search_runs([exp.experiment_id], filter_string="tags.`harness.complete` = '1'")
    return run


def user_error(argv: list[str], capsys: Any, needle: str | None = None) -> str:
    """Run ``harness <argv>`` in-process and assert a user error: exit code 2 and exactly one
    line on stderr, starting ``error:`` and holding no traceback. Returns that line."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2, (code, err)
    assert len(err) == 1, err
    assert err[0].startswith("error:") and "Traceback" not in err[0], err
    if needle is not None:
        assert needle in err[0], (needle, err[0])
    return err[0]


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    """A CSV file (parent folders created) with ``header`` and ``rows``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path
