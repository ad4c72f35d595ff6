"""Paper claims (harness/claims.py): the statistics on hand-made values, evaluation from
hand-made cells, validation of ``claims:`` up front, the files and the MLflow records."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from helpers import user_error
from scipy import stats

from harness import claims, spec
from harness.claims import FAILS, HOLDS, NOT_SIGNIFICANT, UNKNOWN, Claim
from harness.errors import UserError
from harness.report import Cell


def _claim(**kw) -> Claim:
    base = dict(id="c", paper="P", says="s", kind="issue", a="new", b=("old",),
                metrics=("recall_20",), direction=">")
    return Claim(**{**base, **kw})


def _cells(values: dict[tuple[str, str, str], list[float] | dict[int, float]]) -> dict:
    return {k: Cell(dict(enumerate(v)) if isinstance(v, list) else dict(v)) for k, v in values.items()}


# ------------------------------------------------------------------ statistics


def test_a_claim_that_holds():
    a, b = {0: 0.30, 1: 0.32, 2: 0.31}, {0: 0.20, 1: 0.21, 2: 0.22}
    part = claims.paired(a, b, ">")
    d = [0.10, 0.11, 0.09]
    assert part.verdict == HOLDS and part.n == 3
    assert part.diff == pytest.approx(0.10)
    assert part.p == pytest.approx(stats.ttest_rel(list(a.values()), list(b.values()),
                                                    alternative="greater").pvalue)
    half = stats.t.ppf(0.975, 2) * stats.tstd(d) / math.sqrt(3)
    assert part.ci == pytest.approx((0.10 - half, 0.10 + half))
    assert part.mean_a == pytest.approx(0.31) and part.mean_b == pytest.approx(0.21)


def test_a_claim_that_does_not_hold():
    part = claims.paired({0: 0.2, 1: 0.25, 2: 0.21}, {0: 0.3, 1: 0.31, 2: 0.33}, ">")
    assert part.verdict == FAILS and part.diff < 0 and part.p > 0.5
    assert "wrong side" in part.note
    # the same numbers read the other way hold
    assert claims.paired({0: 0.2, 1: 0.25, 2: 0.21}, {0: 0.3, 1: 0.31, 2: 0.33}, "<").verdict == HOLDS


def test_right_direction_but_not_significant():
    part = claims.paired({0: 0.5, 1: 0.2, 2: 0.45}, {0: 0.3, 1: 0.35, 2: 0.4}, ">")
    assert part.diff > 0 and part.p >= 0.05 and part.verdict == NOT_SIGNIFICANT
    assert part.ci[0] < 0 < part.ci[1]
    # a stricter or looser level changes the verdict, not the numbers
    assert claims.paired({0: 0.5, 1: 0.2, 2: 0.45}, {0: 0.3, 1: 0.35, 2: 0.4}, ">",
                         alpha=0.49).verdict == HOLDS


def test_one_seed_has_no_test_and_prints_no_p():
    part = claims.paired({0: 0.4}, {0: 0.3}, ">")
    assert part.verdict == NOT_SIGNIFICANT and part.p is None and part.ci is None
    assert part.note == "1 seed: no test" and part.n == 1
    assert claims.paired({0: 0.2}, {0: 0.3}, ">").verdict == FAILS
    # in the tables and the CSV: no p-value, no nan, no 0 standing in for it
    result = claims.Result(_claim(), [part])
    part.dataset, part.b, part.metric = "d", "old", "recall_20"
    line = claims.parts_table([result])[-1]
    assert "| no test | 1 |" in line and "nan" not in line and "1 seed: no test" in line
    row = dict(zip(claims.CSV_COLUMNS, claims.rows(SimpleNamespace(name="b", profile="quick"),
                                                   [result])[0], strict=True))
    assert row["p"] is None and row["ci_low"] is None and row["note"] == "1 seed: no test"


def test_all_zero_and_constant_differences_do_not_crash():
    same = {0: 0.3, 1: 0.3, 2: 0.3}
    tie = claims.paired(same, dict(same), ">")
    assert tie.verdict == FAILS and tie.p is None and "equal in each of the 3 seeds" in tie.note
    tie = claims.paired(same, dict(same), ">=")
    assert tie.verdict == NOT_SIGNIFICANT and tie.p is None and tie.diff == 0
    # the same difference in every seed (a share fixed by construction): no spread, holds
    share = claims.paired({0: 1 / 3, 1: 1 / 3}, 0.35, "<=")
    assert share.verdict == HOLDS and share.p is None and "no spread" in share.note
    assert claims.paired({0: 0.5, 1: 0.5}, 0.35, "<=").verdict == FAILS
    # float32 round-off is a tie, not a win
    noise = claims.paired({0: 0.3 + 3e-8}, {0: 0.3}, ">")
    assert noise.diff == 0 and noise.verdict == FAILS and "a tie" in noise.note


def test_ratio_margin_and_a_number():
    a, b = {0: 0.96, 1: 0.965, 2: 0.962}, {0: 1.0, 1: 1.0, 2: 1.0}
    assert claims.paired(a, b, ">=").verdict == FAILS  # below the backbone...
    within = claims.paired(a, b, ">=", ratio=0.95)  # ...but within 5% of it
    assert within.verdict == HOLDS and within.diff == pytest.approx(0.9623 - 0.95, abs=1e-4)
    assert claims.paired(a, b, ">", margin=-0.05).diff == pytest.approx(within.diff)
    r2 = claims.paired({0: 0.61, 1: 0.62, 2: 0.615}, 0.6, ">=")
    assert r2.verdict == HOLDS and r2.mean_b == 0.6 and r2.b == 0.6


def test_seeds_not_shared_or_not_numbers():
    part = claims.paired({0: 0.3, 1: 0.4}, {2: 0.1}, ">")
    assert part.verdict == UNKNOWN and "no seed in common (a: 0, 1; b: 2)" in part.note
    part = claims.paired({0: 0.3, 1: math.nan, 2: 0.5}, {0: 0.1, 1: 0.2, 2: 0.1}, ">")
    assert part.n == 2 and "seed 1 not a number" in part.note


# ------------------------------------------------------------------ evaluation from cells


def test_evaluate_expands_globs_and_names_what_is_missing():
    cells = _cells({
        ("d", "tsformer", "rmse_thetao_d10"): [0.09, 0.091, 0.092],
        ("d", "unet", "rmse_thetao_d10"): [0.11, 0.12, 0.115],
        ("d", "tsformer", "rmse_zos_d10"): [0.0036, 0.0035, 0.0037],
        ("d", "unet", "rmse_zos_d10"): [0.0035, 0.0034, 0.0036],
        ("d", "tsformer", "rmse_thetao_d1"): [0.01, 0.01, 0.01],
        ("d", "tsformer", "wc/rmse_x_d10"): [0.0, 0.0, 0.0],  # * never crosses a criterion's /
    })
    res = claims.evaluate(_claim(a="tsformer", b=("unet",), metrics=("rmse_*_d10",), direction="<"),
                          cells, ["d"])
    assert [(p.metric, p.verdict) for p in res.parts] == [("rmse_thetao_d10", HOLDS),
                                                          ("rmse_zos_d10", FAILS)]
    assert res.verdict == FAILS and res.summary == "1 of 2 parts hold; does not hold: 1"

    missing = claims.evaluate(_claim(a="tsformer", b=("persistence", 0.2), metrics=("rmse_*_d30",),
                                     direction="<", datasets=("d", "other")), cells, ["d"])
    notes = [p.note for p in missing.parts]
    assert "no finished runs of persistence on d in the store" in notes[0]
    assert "logged no test metric matching rmse_*_d30" in notes[1]
    assert "dataset other is not in this run of the benchmark" in notes[2]
    assert missing.verdict == UNKNOWN and all(p.verdict == UNKNOWN for p in missing.parts)

    absent = claims.evaluate(_claim(a="tsformer", b=("unet",), metrics=("rmse_thetao_d1",)), cells, ["d"])
    assert absent.verdict == UNKNOWN and "the runs of unet on d logged no test/rmse_thetao_d1" \
        in absent.parts[0].note


def test_the_weakest_part_decides():
    mk = lambda v: claims.Part("d", "b", "m", v)  # noqa: E731
    assert claims.Result(_claim(), [mk(HOLDS), mk(NOT_SIGNIFICANT)]).verdict == NOT_SIGNIFICANT
    assert claims.Result(_claim(), [mk(HOLDS), mk(UNKNOWN), mk(NOT_SIGNIFICANT)]).verdict == UNKNOWN
    assert claims.Result(_claim(), [mk(UNKNOWN), mk(FAILS)]).verdict == FAILS
    assert claims.Result(_claim(), []).verdict == UNKNOWN


# ------------------------------------------------------------------ validation, up front

BENCH = {
    "name": "tiny",
    "methods": {
        "mf": {"method": "bpr", "group": "mf", "params": {"backbone": "mf"}},
        "mf+aurl": {"method": "aurl", "group": "mf", "params": {"backbone": "mf"}},
    },
    "datasets": {"synth": {"dataset": "amazon", "params": {"synthetic": {"n_users": 100}}}},
    "seeds": 1,
    "monitor": {"metric": "val/recall_20", "mode": "max"},
    "table": ["recall_20"],
    "paper": "AURL (arXiv 2511.16414)",
    "claims": {"tail": {"kind": "issue", "says": "better tail recall", "compare": ["mf+aurl", "mf"],
                        "metric": "recall_20_tail", "direction": ">"}},
    "profiles": {"quick": {"trainer": {"max_epochs": 1}}},
}


def _load(tmp_path: Path, edit=None, text: str | None = None) -> spec.Benchmark:
    data = yaml.safe_load(yaml.safe_dump(BENCH))
    if edit:
        edit(data["claims"]["tail"])
    path = tmp_path / "tiny.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(data, sort_keys=False))
    return spec.load(str(path), profile="quick")


def test_valid_claims_load(tmp_path):
    (c,) = _load(tmp_path).claims
    assert (c.a, c.b, c.metrics, c.paper, c.datasets) == ("mf+aurl", ("mf",), ("recall_20_tail",),
                                                          "AURL (arXiv 2511.16414)", None)
    assert c.test == "mf+aurl > mf on recall_20_tail"


@pytest.mark.parametrize("edit, needle", [
    (lambda c: c.update(compare=["mf+aurl", "lightgcn"]),
     "claims.tail.compare[1]: 'lightgcn' is not a method row; name one of mf, mf+aurl"),
    (lambda c: c.update(compare=["mf+aurll", "mf"]),
     "claims.tail.compare[0]: 'mf+aurll' is not a method row"),
    (lambda c: c.update(compare=["mf+aurl", ["mf", "mf+ipss"]]),
     "claims.tail.compare[1][1]: 'mf+ipss' is not a method row"),
    (lambda c: c.update(metric="recal_20_tail"),
     "claims.tail.metric: metric 'recal_20_tail' is not logged by row 'mf+aurl' (AURL); "
     "name one it declares"),
    (lambda c: c.update(metric=["recall_20", "bogus_*"]),
     "claims.tail.metric[1]: metric 'bogus_*' is not logged by row 'mf+aurl'"),
    (lambda c: c.update(metric="test/recall_20_tail"), "write 'recall_20_tail' (claims read test metrics)"),
    (lambda c: c.update(direction="higher"), "claims.tail.direction: 'higher' is not a direction"),
    (lambda c: c.update(direction=""), 'quote it: direction: ">"'),
    (lambda c: c.update(ratio=0), "claims.tail.ratio: 0 is out of range; give a number > 0"),
    (lambda c: c.update(ratio="1e-3"), "YAML reads 1e-3 as text"),
    (lambda c: c.update(margin="small"), "claims.tail.margin: 'small' is a string"),
    (lambda c: c.update(compare=["mf+aurl", 0.1], ratio=0.9), "ratio applies to rows"),
    (lambda c: c.update(datasets=["synthetic"]),
     "claims.tail.datasets[0]: 'synthetic' is not a dataset of this benchmark; name one of synth"),
    (lambda c: c.update(kind="check"), "claims.tail.kind: 'check' is neither issue nor paper"),
    (lambda c: c.pop("says"), "claims.tail: no 'says'"),
    (lambda c: c.update(sayz="x"), "claims.tail.sayz: unknown key; did you mean 'says'?"),
])
def test_bad_claims_are_refused_up_front(tmp_path, edit, needle):
    with pytest.raises(UserError) as err:
        _load(tmp_path, edit)
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'tiny.yaml'}: ") and needle in msg, msg


def test_a_bare_comparison_in_the_yaml_says_to_quote_it(tmp_path):
    text = yaml.safe_dump(BENCH, sort_keys=False).replace("direction: '>'", "direction: >=")
    with pytest.raises(UserError, match='quote it, direction: ">="'):
        _load(tmp_path, text=text)


def test_a_bad_claim_stops_the_bench_before_anything_runs(workdir, capsys):
    data = yaml.safe_load(yaml.safe_dump(BENCH))
    data["claims"]["tail"]["compare"] = ["mf+aurl", "nosuch"]
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(data))
    user_error(["bench", str(workdir / "tiny.yaml"), "--profile", "quick", "--no-progress"], capsys,
               needle="claims.tail.compare[1]: 'nosuch' is not a method row")
    assert not (workdir / "mlflow.db").exists() and not (workdir / "runs").exists()


# ------------------------------------------------------------------ files, MLflow, the page


def _results() -> list[claims.Result]:
    cells = _cells({("d", "new", "recall_20"): [0.3, 0.32, 0.31],
                    ("d", "old", "recall_20"): [0.2, 0.21, 0.22],
                    ("d", "new", "ndcg_20"): {0: 0.5}, ("d", "old", "ndcg_20"): {0: 0.4}})
    return [claims.evaluate(_claim(), cells, ["d"]),
            claims.evaluate(_claim(id="one-seed", kind="paper", metrics=("ndcg_20",)), cells, ["d"]),
            claims.evaluate(_claim(id="absent", metrics=("mrr",)), cells, ["d"])]


def test_claims_files(tmp_path):
    bench = SimpleNamespace(name="tiny", profile="quick", claims_alpha=0.05)
    md, path = claims.write(bench, _results(), tmp_path, {"runs": 6, "seeds": [0, 1, 2],
                                                         "commits": ["abc"], "fingerprints": {"d": ["f1"]}})
    text = md.read_text()
    assert "| c | issue | s | `new > old on recall_20` | **holds** |" in text
    assert "cannot be evaluated (the runs of new and old on d logged no test metric mrr)" in text
    assert "data fingerprint d f1" in text and "nan" not in text
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [r["verdict"] for r in rows] == [HOLDS, NOT_SIGNIFICANT, UNKNOWN]
    assert rows[1]["p"] == "" and rows[1]["note"] == "1 seed: no test" and float(rows[0]["p"]) < 0.05


class _Client:
    """The two MLflow calls claims.log makes, recorded (test_bench_quick.py checks a real store)."""

    def __init__(self):
        self.tables, self.tags = {}, {}

    def log_table(self, run_id, data, artifact_file):
        self.tables[artifact_file] = data

    def log_batch(self, run_id, tags=()):
        self.tags.update({t.key: t.value for t in tags})


def test_claims_logged_as_a_table_and_tags():
    mlf, bench = _Client(), SimpleNamespace(name="tiny", profile="quick", claims_alpha=0.05)
    claims.log(mlf, "run", bench, _results())
    tags = mlf.tags
    assert tags["claim/c"] == HOLDS and tags["claim/one-seed"] == NOT_SIGNIFICANT
    assert tags["claim/absent"] == UNKNOWN and tags["claims.alpha"] == "0.05"
    assert (tags["claims.holds"], tags["claims.not_significant"], tags["claims.fails"],
            tags["claims.not_evaluated"]) == ("1", "1", "0", "1")
    table = mlf.tables["claims/tiny-claims.json"]
    assert list(table.columns) == claims.CSV_COLUMNS and len(table) == 3
    assert table["p"].tolist()[1] is None  # no p-value: null, not nan


def test_reproduction_page_lists_claims_and_failures():
    ok = claims.Reproduced("aurl", "quick", "make reproduce PROFILE=quick METHODS=aurl",
                           papers=["AURL (arXiv 2511.16414)"], runs={"done": 8}, results=_results(),
                           provenance={"runs": 8, "seeds": [0], "commits": ["abc123"],
                                       "fingerprints": {"amazon-synthetic": ["1a2b"]}})
    bad = claims.Reproduced("tardiff", "quick", "make reproduce PROFILE=quick METHODS=tardiff",
                            status="failed", error="profile 'paper' runs on real data: pass DATA=")
    page = claims.reproduction_markdown([ok, bad], "quick", "make reproduce PROFILE=quick",
                                        {"git_commit": "0123456789abcdef", "git_dirty": "true"},
                                        "2026-01-01 00:00 UTC", "sqlite:///m.db")
    assert "commit 0123456789ab (working tree dirty)" in page
    assert ("| AURL (arXiv 2511.16414) | [aurl](#aurl-arxiv-251116414-aurl) | 3 | 1 | 1 | 0 | 1 "
            "| done |") in page
    assert "## AURL (arXiv 2511.16414): `aurl`" in page and "amazon-synthetic 1a2b" in page
    assert "**Failed**: profile 'paper' runs on real data" in page and "| **failed** |" in page


def test_reproduce_reports_a_failed_benchmark_and_exits_nonzero(workdir, capsys):
    from harness.cli import main

    # the paper profile needs DATA: aurl fails at load, before any run, and is on the page
    assert main(["reproduce", "aurl", "--profile", "paper", "--no-progress"]) == 1
    page = (workdir / "reports" / "REPRODUCTION.md").read_text()
    assert "**Failed**: profile 'paper' of aurl runs on real data" in page
    assert "`make reproduce PROFILE=paper METHODS=aurl`" in page
    assert "did not finish cleanly: aurl" in capsys.readouterr().err
    user_error(["reproduce", "nosuch"], capsys, needle="no benchmark 'nosuch'; available: ")
