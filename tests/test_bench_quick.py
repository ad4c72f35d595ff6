"""The aurl benchmark's quick profile end to end: runs, MLflow records, reports, skipping."""

import csv

from harness import claims, tracking
from harness.cli import main
from harness.datasets.amazon import SyntheticConfig, write_synthetic

ROWS = ["mf", "mf+ips", "mf+directau", "mf+aurl", "lightgcn", "lightgcn+ips",
        "lightgcn+directau", "lightgcn+aurl"]
METRICS = ["recall_20", "ndcg_20", "recall_20_tail", "ndcg_20_tail", "recall_20_inactive",
           "ndcg_20_inactive", "avg_pop_20", "coverage_20"]


def child_runs(mlf, exp_id):
    return mlf.search_runs([exp_id], filter_string=f"tags.`{tracking.TAG_KIND}` = 'run'")


def test_quick_bench_records_reports_and_skips(workdir, capsys):
    assert main(["bench", "aurl", "--profile", "quick", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| lightgcn+aurl |" in out

    with open(workdir / "reports" / "aurl.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["benchmark", "dataset", "method", "metric", "mean", "std", "n"]
    assert {(r[2], r[3]) for r in rows[1:]} == {(m, k) for m in ROWS for k in METRICS}
    assert all(r[6] == "1" for r in rows[1:])
    for ext in ("md", "tex", "png"):
        assert (workdir / "reports" / f"aurl.{ext}").stat().st_size > 0

    mlf = tracking.client(tracking.tracking_uri())
    exp = mlf.get_experiment_by_name("aurl")
    parents = mlf.search_runs([exp.experiment_id], filter_string="tags.`harness.kind` = 'bench'")
    children = child_runs(mlf, exp.experiment_id)
    assert len(parents) == 1 and len(children) == 8
    parent_id = parents[0].info.run_id
    for run in children:
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == parent_id
        for tag in ("git_commit", "git_dirty", "data_fingerprint", tracking.TAG_KEY, "method",
                    "dataset", "seed"):
            assert tags.get(tag), tag
        assert tags[tracking.TAG_COMPLETE] == "1"
        assert run.data.params["method.backbone"] in ("mf", "lightgcn")
        history = mlf.get_metric_history(run.info.run_id, "val/recall_20")
        assert len(history) == 2  # quick profile: 2 epochs, one validation each
        m = run.data.metrics  # the time in the loops, and the rest of the run as a share
        assert 0 < m["steps_seconds"] < m["run_seconds"]
        assert m["overhead_share"] == 1 - m["steps_seconds"] / m["run_seconds"]
    artifacts = {a.path for a in mlf.list_artifacts(parent_id, "report")}
    assert {"report/aurl.md", "report/aurl.csv", "report/aurl.tex", "report/aurl.png"} <= artifacts
    # the claims (harness/claims.py): files, a table artifact and tags on the parent run
    assert {"report/aurl-claims.md", "report/aurl-claims.csv"} <= artifacts
    assert [a.path for a in mlf.list_artifacts(parent_id, "claims")] == ["claims/aurl-claims.json"]
    tags = parents[0].data.tags
    verdicts = {k: v for k, v in tags.items() if k.startswith("claim/")}
    assert len(verdicts) == 10 and set(verdicts.values()) <= set(claims.VERDICTS)
    # one seed: no claim can hold significantly, and no p-value is printed
    assert tags["claims.holds"] == "0" and sum(int(tags[t]) for t in claims.COUNT_TAGS.values()) == 10
    with open(workdir / "reports" / "aurl-claims.csv") as f:
        assert {r["p"] for r in csv.DictReader(f)} == {""}

    # same command again: every run key already has a finished run
    assert main(["bench", "aurl", "--profile", "quick", "--no-progress", "--no-report"]) == 0
    assert "0 done, 8 skipped" in capsys.readouterr().out
    assert len(child_runs(mlf, exp.experiment_id)) == 8

    # the report rebuilds from MLflow alone
    (workdir / "reports" / "aurl.csv").unlink()
    assert main(["report", "aurl", "--profile", "quick"]) == 0
    assert (workdir / "reports" / "aurl.csv").exists()


def test_bench_on_a_real_format_directory(workdir, capsys):
    data = workdir / "amazon"
    write_synthetic(data, SyntheticConfig(n_users=250, n_items=150, n_topics=4), "Beauty")
    argv = ["bench", "aurl", "--profile", "quick", "--no-progress", "--data", str(data),
            "--dataset", "Beauty"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "## Beauty" in out and "8 done" in out


def test_missing_real_files_end_with_one_clear_line(workdir, capsys):
    (workdir / "empty").mkdir()
    argv = ["bench", "aurl", "--profile", "quick", "--no-progress", "--data",
            str(workdir / "empty"), "--dataset", "Books"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "Books_5.json.gz" in err[0]


def test_progress_bar_redraws_at_most_every_interval(monkeypatch):
    from harness import runner

    bar = runner.ThrottledProgressBar(interval=0.2)
    now = [100.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: now[0])
    drawn = []
    for step in range(1, 11):
        now[0] += 0.06  # a 60 ms step
        drawn.append(bar._should_update(step, 10))
    assert drawn == [True, False, False, False, True, False, False, False, True, True]
