"""Benchmark YAML: profiles, overrides, run expansion and run keys."""

import pytest

from harness.errors import UserError
from harness.spec import deep_merge, load


def test_profiles_merge_over_the_base():
    quick = load("aurl", profile="quick")
    default = load("aurl")
    assert len(quick.runs) == 8 and len(default.runs) == 24
    assert quick.runs[0].trainer["max_epochs"] == 2
    assert quick.runs[0].dataset_params["synthetic"]["n_users"] == 300
    assert default.runs[0].dataset_params["k_core"] == 5


def test_seed_override_and_row_parameters():
    bench = load("aurl", seeds=2)
    assert sorted({r.seed for r in bench.runs}) == [0, 1]
    directau = [r for r in bench.runs if r.label == "lightgcn+directau"][0]
    assert directau.method == "directau" and directau.params["backbone"] == "lightgcn"
    assert directau.dataset_params["batch_size"] == 512  # data_params merged per row


def test_run_key_changes_with_what_determines_the_result():
    runs = load("aurl").runs
    a, b = runs[0], runs[1]  # same row, next seed
    assert a.key("fp") == a.key("fp")
    assert a.key("fp") != b.key("fp")
    assert a.key("fp") != a.key("other-data")
    assert a.key("fp") != a.key("fp", method_version="2")


def test_real_data_replaces_datasets(tmp_path):
    bench = load("aurl", profile="quick", data_dir=str(tmp_path), dataset="Books")
    assert bench.datasets == ["Books"]
    params = bench.runs[0].dataset_params
    assert params["category"] == "Books" and "synthetic" not in params


def test_errors():
    with pytest.raises(UserError, match="DATASET"):
        load("aurl", data_dir="/tmp")
    with pytest.raises(UserError, match="unknown profile"):
        load("aurl", profile="fast")


def test_deep_merge_does_not_mutate():
    base = {"a": {"b": 1, "c": 2}}
    out = deep_merge(base, {"a": {"b": 3}})
    assert out == {"a": {"b": 3, "c": 2}} and base == {"a": {"b": 1, "c": 2}}


def _tuned(workdir, name: str, rows: dict) -> None:
    import yaml

    path = workdir / "benchmarks" / "tuned" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(rows))


def _cli_load(argv):
    from harness.cli import _load, build_parser

    return _load(build_parser().parse_args(argv))


def test_tuned_with_the_paper_profile_and_real_data(workdir):
    """`PROFILE=paper TUNED=1 DATA=... DATASET=Books` used to fail with "pass DATA=" (the
    tuned lookup loaded the benchmark again without DATA)."""
    _tuned(workdir, "aurl-Books", {"mf+aurl": {"lr": 0.0042}})
    bench = _cli_load(["bench", "aurl", "--profile", "paper", "--tuned", "--data", str(workdir),
                       "--dataset", "Books"])
    run = next(r for r in bench.runs if r.label == "mf+aurl")
    assert run.dataset_label == "Books" and run.params["lr"] == 0.0042
    assert next(r for r in bench.runs if r.label == "mf").params["lr"] == 0.001  # not tuned


def test_tuned_is_read_under_the_real_dataset_label(workdir):
    """With DATA + DATASET the tuned parameters are those of the real category's label, not
    of the synthetic dataset's (used to be looked up under the synthetic label, then dropped)."""
    _tuned(workdir, "aurl-amazon-synthetic", {"mf+aurl": {"lr": 0.5}})
    _tuned(workdir, "aurl-Books", {"mf+aurl": {"lr": 0.0042}})
    bench = _cli_load(["bench", "aurl", "--tuned", "--data", str(workdir), "--dataset", "Books"])
    assert {r.params["lr"] for r in bench.runs if r.label == "mf+aurl"} == {0.0042}
    synthetic = _cli_load(["bench", "aurl", "--tuned"])
    assert {r.params["lr"] for r in synthetic.runs if r.label == "mf+aurl"} == {0.5}
    with pytest.raises(UserError, match="aurl-Music.yaml"):
        _cli_load(["bench", "aurl", "--tuned", "--data", str(workdir), "--dataset", "Music"])


def test_real_data_mapping_is_declared_by_the_dataset(tmp_path):
    """spec knows no parameter names: the dataset class's RealData says what DATA sets."""
    from harness import registry

    cls = registry.load("dataset", "amazon-seq")
    assert cls.real_data.category_param is None and cls.backbone_param == "backbone"
    bench = load("molorec", profile="quick", data_dir=str(tmp_path), dataset="cold")
    assert bench.datasets == ["cold"]
    params = bench.runs[0].dataset_params
    assert params["data_dir"] == str(tmp_path.resolve()) and "synthetic" not in params
    assert params["setting"] == "cold"
    with pytest.raises(UserError, match="takes no backbone"):
        load("aurl", profile="quick", backbone=str(tmp_path))
