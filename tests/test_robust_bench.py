"""The mimu benchmark's quick profile end to end, and the engine pieces it added: two model
selection criteria (test/<criterion>/... metrics from the criterion's own best checkpoint),
stages kept at their last epoch, a shared source stage, reference rows, group sizes as tags,
and bad real data refused in one line."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from helpers import user_error

from harness import tracking
from harness.cli import main
from harness.datasets import robust_images as ri

ROWS = ["erm", "source", "jtt", "groupdro", "mimu", "mimu-nomask"]


def test_quick_mimu_bench_records_both_criteria(workdir, capsys):
    assert main(["bench", "mimu", "--profile", "quick", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| groupdro (ref.) |" in out and "Model selection (validation data only)" in out

    with open(workdir / "reports" / "mimu.csv") as f:
        rows = list(csv.DictReader(f))
    cells = {(r["dataset"], r["method"], r["metric"]) for r in rows}
    for ds in ("images", "text"):
        for row in ROWS:
            for metric in ("acc", "worst_group_acc", "acc_all_broken", "ece", "wc/acc", "wc/ece"):
                assert (ds, row, metric) in cells, (ds, row, metric)
    for ds, shortcut in [("images", "place"), ("images", "mark"), ("text", "overlap"), ("text", "negation")]:
        assert (ds, "mimu", f"acc_broken_{shortcut}") in cells

    mlf = tracking.client(tracking.tracking_uri())
    exp = mlf.get_experiment_by_name("mimu")
    runs = mlf.search_runs([exp.experiment_id], filter_string="tags.`harness.complete` = '1'")
    assert len(runs) == 12
    for run in runs:
        m, tags = run.data.metrics, run.data.tags
        assert "test/wc/acc" in m and "test/acc" in m  # both criteria tested
        assert any(k.startswith("data.groups.train.") for k in tags)  # group sizes per split
    by = {(r.data.tags["method"], r.data.tags["dataset"]): r for r in runs}
    for ds in ("images", "text"):  # mimu and mimu-nomask train one source model per dataset
        shared = {by[(row, ds)].data.tags.get("harness.stage.source") for row in ("mimu", "mimu-nomask")}
        assert len(shared) == 1 and None not in shared
        assert "upweight/error_set_size" in by[("jtt", ds)].data.metrics

    # the selection checkpoints exist beside the last stage's best
    run_dir = workdir / "runs" / "mimu"
    assert list(run_dir.glob("*/target/best-wc.ckpt")) and list(run_dir.glob("*/upweight/best-wc.ckpt"))
    assert not list(run_dir.glob("stages/*/source/best-wc.ckpt"))  # only the final stage has them


def _waterbirds(root: Path, n: int = 6) -> Path:
    folder = root / "waterbird_complete95_forest2water2"
    ri.write_synthetic_waterbirds(root, ri.SyntheticImages(n_train=n, n_val=n, n_test=8, size=16))
    return folder


@pytest.mark.parametrize("breakage,needle", [
    ("no-metadata", "metadata.csv"),
    ("missing-column", "place"),
    ("missing-image", "missing"),
])
def test_bad_waterbirds_is_one_line(workdir, capsys, tmp_path, breakage, needle):
    folder = _waterbirds(tmp_path / "data")
    meta = folder / "metadata.csv"
    if breakage == "no-metadata":
        meta.unlink()
    elif breakage == "missing-column":
        lines = meta.read_text().splitlines()
        head = lines[0].split(",")
        k = head.index("place")
        meta.write_text("\n".join(",".join(c for j, c in enumerate(ln.split(",")) if j != k)
                                  for ln in lines) + "\n")
    else:
        next(folder.rglob("*.jpg")).unlink()
    user_error(["bench", "mimu", "--profile", "quick", "--no-progress", "--data", str(tmp_path / "data"),
                "--dataset", "images"], capsys, needle)


def test_unknown_layout_and_paper_profile_without_data(workdir, capsys, tmp_path):
    bad = workdir / "bad.yaml"
    text = (Path(__file__).resolve().parents[1] / "benchmarks" / "mimu.yaml").read_text()
    bad.write_text(text.replace("dataset: robust-images\n    params: {",
                                "dataset: robust-images\n    params: {layout: mnist, "))
    user_error(["bench", str(bad), "--profile", "quick", "--no-progress"], capsys, "layout")
    user_error(["bench", "mimu", "--profile", "paper", "--no-progress"], capsys, "DATA")


MIMU_YAML = (Path(__file__).resolve().parents[1] / "benchmarks" / "mimu.yaml").read_text()


@pytest.mark.parametrize("old,new,needle", [
    ("metric: val/worst_class_acc", "metric: val/nope", "val/nope"),
    ("wc/acc, wc/worst_group_acc", "wc/nope, wc/worst_group_acc", "wc/nope"),
    ("reference: uses the training group labels", "reference: 3", "reference"),
    ("method_params: {lr: 0.0001}", "method_params: {lrr: 0.0001}", "lrr"),
    ("  wc: {metric", "  Wc: {metric", "criterion name"),
    ("metric: val/worst_class_acc", "metric: val/worst_group_acc", "already selects"),
])
def test_new_yaml_keys_are_validated(workdir, capsys, old, new, needle):
    assert old in MIMU_YAML
    bad = workdir / "bad.yaml"
    bad.write_text(MIMU_YAML.replace(old, new, 1))
    user_error(["bench", str(bad), "--profile", "quick", "--no-progress"], capsys, needle)


def test_dataset_method_params_and_profile_nulls(tmp_path):
    from harness import spec

    bench = spec.load("mimu")
    params = {(r.label, r.dataset_label): r.params for r in bench.runs}
    assert params[("erm", "images")]["lr"] == 0.0001 and params[("erm", "text")]["lr"] == 0.002
    assert params[("mimu-nomask", "text")] == {"lr": 0.002, "layers": 2, "mask_ratio": 0.0}
    assert {r.selection for r in bench.runs} == {(("wc", "val/worst_class_acc", "max"),)}
    backbone = tmp_path / "vit"
    backbone.mkdir()
    (backbone / "config.json").write_text("{}")
    paper = spec.load("mimu", profile="paper", data_dir=str(tmp_path), dataset="waterbirds",
                      backbone=str(backbone))
    assert {r.dataset_label for r in paper.runs} == {"waterbirds"}  # images / text: null removes them
    assert all(r.params["optimizer"] == "sgd" for r in paper.runs)


def test_extra_callbacks_join_the_last_stage_only(workdir):
    """A sweep's pruner scores the monitored (last) stage: ``run_one(callbacks=...)`` must not
    see JTT's identification epochs (they restart at epoch 0 and would be reported twice)."""
    from lightning.pytorch.callbacks import Callback

    from harness import spec as hspec
    from harness.runner import Runner

    class Stages(Callback):
        seen: list[str] = []

        def on_validation_end(self, trainer, module):
            self.seen.append(module.stage)

    bench = hspec.load("mimu", profile="quick", dataset="text")
    run = next(r for r in bench.runs if r.label == "jtt")
    recorder = Stages()
    result = Runner(bench, uri=tracking.tracking_uri()).run_one(run, callbacks=[recorder])
    assert result.status == "done"
    assert recorder.seen and set(recorder.seen) == {"upweight"}
