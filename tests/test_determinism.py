"""Same seed, same device count, CPU: the same metrics, bit for bit."""

from harness import tracking
from harness.cli import main

BENCH = """
name: det
methods:
  lightgcn+aurl: {method: aurl, params: {backbone: lightgcn, lr: 0.01}}
datasets:
  synth: {dataset: amazon, params: {synthetic: {n_users: 300, n_items: 200, n_topics: 5}}}
seeds: 1
monitor: {metric: val/recall_20, mode: max}
table: [recall_20]
trainer: {max_epochs: 2, accelerator: cpu, devices: 1}
"""


def _run_twice(workdir, text: str, name: str) -> list[dict[str, float]]:
    """Run a one-run benchmark twice, each time with its own MLflow store and run directory
    (the data and model caches are shared); return both runs' val/test metrics."""
    (workdir / f"{name}.yaml").write_text(text)
    metrics = []
    for db in ("a.db", "b.db"):
        uri = f"sqlite:///{workdir / db}"
        argv = ["bench", str(workdir / f"{name}.yaml"), "--no-progress", "--no-report",
                "--tracking-uri", uri, "--run-dir", f"runs-{db}"]
        assert main(argv) == 0
        mlf = tracking.client(uri)
        exp = mlf.get_experiment_by_name(name)
        (run,) = mlf.search_runs([exp.experiment_id], filter_string="tags.`harness.kind` = 'run'")
        metrics.append({k: v for k, v in run.data.metrics.items() if k.startswith(("test/", "val/"))})
    return metrics


def test_rerun_from_scratch_is_identical(workdir):
    metrics = _run_twice(workdir, BENCH, "det")
    assert metrics[0] and metrics[0] == metrics[1]


def test_llm_rerun_with_a_cached_backbone_is_identical(workdir):
    """The first run pretrains the small LM, the second finds it cached: same metrics (the
    pretraining must not move the run's random stream)."""
    from helpers import tiny_seq_bench

    metrics = _run_twice(workdir, tiny_seq_bench("detllm", "target-lora", "lora-rec", 0.003,
                                                 "[ndcg_3]"), "detllm")
    assert metrics[0] and metrics[0] == metrics[1]
