"""The weaverec benchmark's quick profile end to end (integration)."""

import csv

from harness.cli import main


def test_weaverec_quick_profile(workdir):
    assert main(["bench", "weaverec", "--profile", "quick", "--no-progress"]) == 0
    with open(workdir / "reports" / "weaverec.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == {"target-lora", "joint-lora", "merge-linear",
                                           "merge-ties", "weaverec"}
    assert {r["dataset"] for r in rows} == {"single-source", "two-source"}
