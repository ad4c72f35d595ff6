"""Optuna sweeps: trials as MLflow runs, pruning, continuation, export, TUNED benches."""

import pytest
import yaml

from harness import tracking
from harness.cli import main
from harness.errors import UserError
from harness.sweep import validate_space


def test_sweep_prunes_exports_continues_and_feeds_bench(workdir, capsys):
    import optuna

    from harness.sweep import open_study

    # Seed the study with three sound trials and then one whose learning rate is too small to
    # learn anything: it must be pruned once the median of the first three is known. (The
    # sampler's own draws are random and may or may not be pruned.)
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    seeded = open_study("aurl-amazon-synthetic-mf+aurl", storage, "maximize")
    for lr in (0.01, 0.009, 0.008, 1e-5):
        seeded.enqueue_trial({"lr": lr, "lambda_ga": 1.0, "lambda_gu": 0.1})
    argv = ["sweep", "aurl", "--profile", "quick", "--trials", "8", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "study aurl-amazon-synthetic-mf+aurl" in out

    study = optuna.load_study(study_name="aurl-amazon-synthetic-mf+aurl", storage=storage)
    states = [t.state for t in study.trials]
    assert len(states) == 8
    assert states[:4] == [optuna.trial.TrialState.COMPLETE] * 3 + [optuna.trial.TrialState.PRUNED]
    assert states.count(optuna.trial.TrialState.COMPLETE) >= 1

    mlf = tracking.client(tracking.tracking_uri())
    exp = mlf.get_experiment_by_name("aurl")
    sweeps = mlf.search_runs([exp.experiment_id], filter_string="tags.`harness.kind` = 'sweep'")
    trials = mlf.search_runs([exp.experiment_id], filter_string="tags.`optuna.study` != ''")
    assert len(sweeps) == 1 and len(trials) == 8
    assert all(t.data.tags["mlflow.parentRunId"] == sweeps[0].info.run_id for t in trials)
    by_state = {}
    for t in trials:
        by_state.setdefault(t.data.tags["optuna.state"], []).append(t)
    assert set(by_state) == {"complete", "pruned"}
    assert len(by_state["pruned"]) == states.count(optuna.trial.TrialState.PRUNED)
    for t in trials:  # per-epoch metrics and the trial's parameters are in MLflow
        assert mlf.get_metric_history(t.info.run_id, "val/recall_20")
        assert "method.lambda_ga" in t.data.params

    tuned = yaml.safe_load((workdir / "benchmarks" / "tuned" /
                            "aurl-amazon-synthetic.yaml").read_text())
    assert tuned["mf+aurl"] == pytest.approx(study.best_params)

    # the same command with more trials continues the same study
    assert main(argv[:5] + ["10", "--no-progress"]) == 0
    capsys.readouterr()
    study = optuna.load_study(study_name="aurl-amazon-synthetic-mf+aurl",
                              storage=f"sqlite:///{workdir / 'optuna.db'}")
    assert len(study.trials) == 10

    # a bench with TUNED uses the exported parameters
    assert main(["bench", "aurl", "--profile", "quick", "--tuned", "--no-progress",
                 "--no-report"]) == 0
    runs = mlf.search_runs([exp.experiment_id],
                           filter_string="tags.method = 'mf+aurl' and tags.`harness.complete` = '1'")
    lambdas = {float(r.data.params["method.lambda_ga"]) for r in runs}
    assert study.best_params["lambda_ga"] in lambdas or any(
        abs(v - study.best_params["lambda_ga"]) < 1e-9 for v in lambdas)


@pytest.mark.parametrize("space, needle", [
    ({"lr": ("log", 0.0, 1.0)}, "log range needs low > 0"),
    ({"lr": ("float", 1.0, 0.5)}, "must be below high"),
    ({"lr": ("normal", 0, 1)}, "kind must be one of"),
    ({"act": ("cat", [])}, "use ('cat'"),
    ({}, "declares no search_space"),
])
def test_invalid_search_spaces_are_refused(space, needle):
    with pytest.raises(UserError, match=None) as err:
        validate_space(space, "m")
    assert needle in str(err.value)


def test_unreachable_storage_is_one_line(workdir, capsys):
    pytest.importorskip("psycopg2")
    argv = ["sweep", "aurl", "--profile", "quick", "--trials", "2", "--no-progress",
            "--storage", "postgresql+psycopg2://nobody:secret@127.0.0.1:1/none"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot open Optuna storage" in err[0], err
    assert "nobody:***@127.0.0.1" in err[0] and "secret" not in err[0]


def test_sweep_on_real_data_writes_the_file_the_tuned_bench_reads(workdir, capsys):
    """`make sweep DATA=... DATASET=Books` used to write a file `TUNED=1` never read."""
    from harness.cli import _load, build_parser
    from harness.datasets.amazon import SyntheticConfig, write_synthetic

    data = workdir / "amazon"
    write_synthetic(data, SyntheticConfig(n_users=120, n_items=80, n_topics=4), "Books")
    real = ["--profile", "quick", "--data", str(data), "--dataset", "Books", "--no-progress"]
    assert main(["sweep", "aurl", "--trials", "1", *real]) == 0
    assert "aurl-Books.yaml" in capsys.readouterr().out
    written = yaml.safe_load((workdir / "benchmarks" / "tuned" / "aurl-Books.yaml").read_text())
    bench = _load(build_parser().parse_args(["bench", "aurl", "--tuned", *real]))
    run = next(r for r in bench.runs if r.label == "mf+aurl")
    assert run.dataset_label == "Books" and written["mf+aurl"].items() <= run.params.items()


def test_tuned_file_keeps_each_rows_provenance(workdir):
    """Two rows written into one tuned file: each keeps its parameters and its header line; a
    row written again replaces only its own."""
    from harness.sweep import write_tuned

    write_tuned("b", "d", "jtt", {"upweight": 69}, "study b-d-jtt")
    write_tuned("b", "d", "mimu", {"align_weight": 1.0}, "grid pick")
    path = write_tuned("b", "d", "jtt", {"upweight": 20}, "study b-d-jtt, again")
    text = path.read_text()
    assert text.startswith("# mimu: grid pick\n# jtt: study b-d-jtt, again\n")
    assert "# jtt: study b-d-jtt\n" not in text
    assert yaml.safe_load(text) == {"jtt": {"upweight": 20}, "mimu": {"align_weight": 1.0}}
