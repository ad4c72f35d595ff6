"""Pick a row of a grid benchmark on validation only, and write the pick as tuned parameters.

A grid benchmark (e.g. ``scripts/mimu_grid.yaml``) runs one method under several parameter
settings, one row each, over several seeds. This reads its finished runs from MLflow, prints
per dataset each row's mean over seeds of the best validation value of the monitor (what
selected its checkpoint) beside its test metrics (shown, never used), picks the row with the
best mean validation value among the rows of the grid's proposed method (the first listed
on a tie; other rows are shown for reference) and, with ``--write``, writes that
row's parameters into ``benchmarks/tuned/<target>-<dataset>.yaml`` for the given rows of the
target benchmark, which ``make bench METHOD=<target> TUNED=1`` reads.

    .venv/bin/python scripts/select_on_validation.py scripts/mimu_grid.yaml \\
        --tracking-uri sqlite:///grid.db [--write mimu:mimu,mimu-nomask --skip mask_ratio]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import yaml

from harness import spec, tracking
from harness.sweep import write_tuned


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("grid", help="the grid benchmark's YAML")
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--write", default=None,
                    help="TARGET:ROW[,ROW]: write the pick into benchmarks/tuned/TARGET-<dataset>.yaml")
    ap.add_argument("--experiment", default=None, help="the MLflow experiment (default: the grid's name)")
    ap.add_argument("--skip", action="append", default=[],
                    help="a parameter not to copy (each target row keeps its own value)")
    args = ap.parse_args(argv)
    bench = spec.load(args.grid)
    cfg = yaml.safe_load(Path(args.grid).read_text())
    mlf = tracking.client(tracking.tracking_uri(args.tracking_uri))
    name = args.experiment or bench.name
    exp = mlf.get_experiment_by_name(name)
    if exp is None:
        print(f"error: no experiment {name!r} at {args.tracking_uri}", file=sys.stderr)
        return 2
    runs = mlf.search_runs([exp.experiment_id],
                           "tags.`harness.kind` = 'run' and attributes.status = 'FINISHED'",
                           max_results=10000)
    monitor = bench.config["monitor"]["metric"]
    sign = 1 if bench.config["monitor"].get("mode", "min") == "max" else -1
    shown = [f"test/{k}" for k in bench.table]
    for ds in bench.datasets:
        print(f"\n{ds}: mean over seeds (n); the pick: best mean of best/{monitor}")
        print("| row | n | best/" + monitor + " | " + " | ".join(shown) + " |")
        print("|---" * (len(shown) + 3) + "|")
        scores = {}
        for row in bench.methods:
            mine = [r for r in runs if r.data.tags.get("method") == row and r.data.tags.get("dataset") == ds]
            if not mine:
                continue
            val = [r.data.metrics[f"best/{monitor}"] for r in mine if f"best/{monitor}" in r.data.metrics]
            scores[row] = statistics.mean(val) if val else float("nan")
            cells = []
            for k in shown:
                v = [r.data.metrics[k] for r in mine if k in r.data.metrics]
                cells.append(f"{statistics.mean(v):.3f}" if v else "–")
            print(f"| {row} | {len(mine)} | {scores[row]:.3f} | " + " | ".join(cells) + " |")
        method = cfg["methods"][bench.proposed[0]]["method"]  # candidates: the proposed method's rows
        valid = {r: s for r, s in scores.items() if s == s and cfg["methods"][r]["method"] == method}
        if not valid:
            continue
        pick = max(valid, key=lambda r: sign * valid[r])  # max keeps the first on a tie
        params = dict(cfg["methods"][pick].get("params") or {})
        print(f"pick: {pick} {params}")
        if args.write:
            target, rows = args.write.split(":", 1)
            for row in rows.split(","):
                kept = {k: v for k, v in params.items() if k not in args.skip}
                note = (f"written by scripts/select_on_validation.py {args.grid}: grid row {pick!r}, "
                        f"best mean over seeds of best/{monitor} ({valid[pick]:.4g}, validation)")
                path = write_tuned(target, ds, row, kept, note)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
