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
