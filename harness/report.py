"""Comparison tables from MLflow: mean +- std over seeds, best in bold, paired tests.

Writes ``reports/<benchmark>.md``, ``.tex``, ``.csv`` (columns exactly
``benchmark,dataset,method,metric,mean,std,n``) and a bar chart per dataset, and
logs them as artifacts of the given MLflow run; where the benchmark declares ``claims:``,
also ``reports/<benchmark>-claims.md`` and ``.csv`` with each claim's verdict
(:mod:`harness.claims`), logged as a table artifact and ``claim/<id>`` tags.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from harness import claims as claims_mod
from harness import registry, tracking
from harness.errors import UserError
from harness.runner import resolve_keys
from harness.spec import Benchmark

CSV_COLUMNS = ["benchmark", "dataset", "method", "metric", "mean", "std", "n"]


@dataclass
class Cell:
    values: dict[int, float]  # seed -> value

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.values.values()))) if self.values else math.nan

    @property
    def std(self) -> float:
        v = list(self.values.values())
        return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def _complete_records(bench: Benchmark, uri: str | None, mlf: Any = None) -> list[tuple[Any, Any]]:
    """(run spec, MLflow run) of each of the benchmark's runs that has a complete MLflow run."""
    mlf = mlf if mlf is not None else tracking.connect(tracking.tracking_uri(uri))
    exp = mlf.get_experiment_by_name(bench.name)
    if exp is None:
        return []
    out = []
    for spec, key in resolve_keys(bench):
        runs = [r for r in tracking.runs_with_key(mlf, exp.experiment_id, key)
                if tracking.is_complete(r)]
        if runs:
            out.append((spec, runs[0]))
    return out


def _complete_runs(bench: Benchmark, uri: str | None, mlf: Any = None
                   ) -> list[tuple[Any, dict[str, float]]]:
    """(run spec, metrics) of each of the benchmark's runs that has a complete MLflow run."""
    return [(spec, run.data.metrics) for spec, run in _complete_records(bench, uri, mlf)]


def collect(bench: Benchmark, uri: str | None = None,
            runs: list[tuple[Any, dict[str, float]]] | None = None) -> dict[tuple[str, str, str], Cell]:
    """(dataset, method row, metric) -> per-seed test values of the benchmark's complete runs,
    for the table's metrics (:func:`collect_all` keeps every test metric)."""
    table = set(bench.table)
    cells = collect_all(_complete_runs(bench, uri) if runs is None else runs)
    return {key: cell for key, cell in cells.items() if key[2] in table}


def collect_all(runs: list[tuple[Any, dict[str, float]]]) -> dict[tuple[str, str, str], Cell]:
    """(dataset, method row, metric) -> per-seed values of every test metric the runs logged
    (``test/wc/acc`` as ``wc/acc``): what claims are judged from, table or not."""
    cells: dict[tuple[str, str, str], Cell] = {}
    for spec, metrics in runs:
        for k, v in metrics.items():
            if k.startswith("test/"):
                cells.setdefault((spec.dataset_label, spec.label, k[5:]), Cell({})).values[
                    spec.seed] = v
    return cells


def provenance(records: list[tuple[Any, Any]]) -> dict[str, Any]:
    """What a report rests on, from the runs' tags: their number and seeds, the commits they
    were made at (``(dirty)`` when the tree had changes) and each dataset's data fingerprints."""
    fps: dict[str, set[str]] = {}
    commits: set[str] = set()
    for spec, run in records:
        tags = run.data.tags
        fps.setdefault(spec.dataset_label, set()).add(tags.get("data_fingerprint", "?"))
        commit = tags.get("git_commit", "unknown")[:12]
        commits.add(commit + (" (dirty)" if tags.get("git_dirty") == "true" else ""))
    return {"runs": len(records), "seeds": sorted({s.seed for s, _ in records}),
            "commits": sorted(commits), "fingerprints": {d: sorted(v) for d, v in fps.items()}}


def _curve_regex(pattern: str) -> re.Pattern[str]:
    head, _, tail = pattern.partition("{x}")
    return re.compile(rf"test/{re.escape(head)}(\d+(?:\.\d+)?){re.escape(tail)}")


def collect_curves(bench: Benchmark, runs: list[tuple[Any, dict[str, float]]]
                   ) -> dict[tuple[str, str, str], dict[float, Cell]]:
    """(dataset, method row, curve) -> x -> per-seed values, for the benchmark's ``curves``.

    A curve's ``metric`` is a test-metric key with ``{x}`` where a number stands, e.g.
    ``rmse_thetao_d{x}`` collects ``test/rmse_thetao_d1``, ``..._d2``, ... against lead day.
    """
    out: dict[tuple[str, str, str], dict[float, Cell]] = {}
    for name, cfg in bench.curves.items():
        rx = _curve_regex(cfg["metric"])
        for spec, metrics in runs:
            for k, v in metrics.items():
                hit = rx.fullmatch(k)
                if hit:
                    cell = out.setdefault((spec.dataset_label, spec.label, name), {}).setdefault(
                        float(hit.group(1)), Cell({}))
                    cell.values[spec.seed] = v
    return out


def curve_chart(bench: Benchmark, curves: dict, path: Path) -> list[Path]:
    """One PNG per dataset: a panel per curve, a line per method (mean over seeds, std band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    names = list(bench.curves)
    for ds in bench.datasets:
        cols = min(3, len(names))
        rows = math.ceil(len(names) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
        for ax, name in zip(axes.flat, names, strict=False):
            cfg = bench.curves[name]
            for label in bench.methods:
                pts = curves.get((ds, label, name))
                if not pts:
                    continue
                xs = sorted(pts)
                mu = np.array([pts[x].mean for x in xs])
                sd = np.array([pts[x].std for x in xs])
                proposed = label in bench.proposed
                line, = ax.plot(xs, mu, marker=".", lw=2.2 if proposed else 1.2, label=label)
                ax.fill_between(xs, mu - sd, mu + sd, color=line.get_color(), alpha=0.15)
            if cfg.get("log"):
                ax.set_yscale("log")
            ax.set_title(name, fontsize=9)
            ax.set_xlabel(cfg.get("xlabel", "x"), fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(names):]:
            ax.axis("off")
        paths.append(_save_chart(fig, bench, ds, path))
    return paths


def directions(bench: Benchmark) -> dict[str, str]:
    """metric -> max|min, from the methods' ``metrics`` declarations, then their
    ``metric_prefixes`` (e.g. ``{"rmse_": "min"}`` for per-lead keys); default max."""
    out: dict[str, str] = {}
    prefixes: dict[str, str] = {}
    for row in bench.methods.values():
        cls = registry.load("method", row["method"])
        out.update(cls.metrics)
        prefixes.update(cls.metric_prefixes)
    for m in bench.table:
        head, _, rest = m.partition("/")
        base = rest if rest and head in bench.selection else m  # wc/ece: the direction of ece
        if base in out:
            out[m] = out[base]
        else:
            hit = [p for p in prefixes if base.startswith(p)]
            if hit:
                out[m] = prefixes[max(hit, key=len)]
    return out


def paired_tests(bench: Benchmark, cells: dict[tuple[str, str, str], Cell]
                 ) -> list[dict[str, Any]]:
    """Paired t-test over common seeds of each proposed row against the baselines of its group."""
    rows = []
    groups = {label: m.get("group", label) for label, m in bench.methods.items()}
    for ds in bench.datasets:
        for prop in bench.proposed:
            for base, g in groups.items():
                if base == prop or g != groups.get(prop):
                    continue
                for m in bench.table:
                    a, b = cells.get((ds, prop, m)), cells.get((ds, base, m))
                    if not a or not b:
                        continue
                    seeds = sorted(set(a.values) & set(b.values))
                    x = np.array([a.values[s] for s in seeds])
                    y = np.array([b.values[s] for s in seeds])
                    p = math.nan
                    if len(seeds) > 1 and np.any(x - y != 0):
                        p = float(stats.ttest_rel(x, y).pvalue)
                    rows.append({"dataset": ds, "method": prop, "baseline": base, "metric": m,
                                 "delta": float((x - y).mean()) if len(seeds) else math.nan,
                                 "p": p, "n": len(seeds)})
    return rows


def _best(cells: dict, ds: str, m: str, direction: str) -> set[str]:
    """Rows holding the best mean (all of them when tied)."""
    cand = {label: round(c.mean, 10) for (d, label, mm), c in cells.items()
            if d == ds and mm == m and not math.isnan(c.mean)}
    if not cand:
        return set()
    top = (max if direction == "max" else min)(cand.values())
    return {label for label, v in cand.items() if v == top}


def _fmt(x: float, like: float | None = None) -> str:
    """4 decimals, or 1 for magnitudes of 100 and more (decided by ``like`` when given)."""
    ref = x if like is None else like
    if math.isnan(x):
        return "nan"
    if 0 < abs(ref) < 1e-3:  # e.g. a conservation error at round-off level
        return f"{x:.1e}"
    return f"{x:.4f}" if abs(ref) < 100 else f"{x:.1f}"


def markdown(bench: Benchmark, cells: dict, tests: list[dict[str, Any]]) -> str:
    dirs = directions(bench)
    out = [f"# {bench.name} ({bench.profile} profile)", ""]
    if bench.selection:
        mon = bench.config["monitor"]
        out += ["Model selection (validation data only): a metric without a prefix is the test "
                f"score of the epoch best on `{mon['metric']}`"
                + (f" ({mon['label']})" if mon.get("label") else "")
                + "; " + "; ".join(f"`{name}/<metric>` of the epoch best on `{c['metric']}`"
                                   + (f" ({c['label']})" if c.get("label") else "")
                                   for name, c in bench.selection.items()) + ".", ""]
    for ds in bench.datasets:
        seeds = {c.n for (d, _, _), c in cells.items() if d == ds}
        out += [f"## {ds}", "",
                f"Test metrics, mean ± std over {'/'.join(map(str, sorted(seeds))) or 0} seeds; "
                "best in bold (↑ higher is better, ↓ lower).", ""]
        head = ["method"] + [f"{m} {'↓' if dirs.get(m) == 'min' else '↑'}" for m in bench.table]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        best = {m: _best(cells, ds, m, dirs.get(m, "max")) for m in bench.table}
        for label in bench.methods:
            row = [f"{label} (ref.)" if bench.methods[label].get("reference") else label]
            for m in bench.table:
                c = cells.get((ds, label, m))
                s = f"{_fmt(c.mean)} ± {_fmt(c.std, c.mean)}" if c else "–"
                row.append(f"**{s}**" if c and label in best[m] else s)
            out.append("| " + " | ".join(row) + " |")
        refs = [f"{label}: {m['reference']}" for label, m in bench.methods.items() if m.get("reference")]
        if refs:
            out += ["", "(ref.): an upper reference, not a fair competitor: " + "; ".join(refs) + "."]
        ds_tests = [t for t in tests if t["dataset"] == ds]
        if ds_tests:
            out += ["", "Paired t-test over seeds (proposed − baseline; p two-sided):", "",
                    "| proposed | baseline | " + " | ".join(bench.table) + " |",
                    "|---|---|" + "---|" * len(bench.table)]
            pairs = sorted({(t["method"], t["baseline"]) for t in ds_tests},
                           key=lambda p: (list(bench.methods).index(p[0]),
                                          list(bench.methods).index(p[1])))
            for prop, base in pairs:
                row = [prop, base]
                for m in bench.table:
                    t = next((t for t in ds_tests if (t["method"], t["baseline"], t["metric"])
                              == (prop, base, m)), None)
                    row.append("–" if t is None else
                               f"{t['delta']:+.4f} (p={t['p']:.3f})" if not math.isnan(t["p"])
                               else f"{t['delta']:+.4f}")
                out.append("| " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out)


def latex(bench: Benchmark, cells: dict) -> str:
    dirs = directions(bench)
    out = []
    esc = {"_": r"\_", "+": "+", "%": r"\%"}

    def tex(s: str) -> str:
        return "".join(esc.get(ch, ch) for ch in s)

    for ds in bench.datasets:
        out += [r"\begin{table}[t]", r"\centering", rf"\caption{{{tex(bench.name)}: {tex(ds)}}}",
                r"\begin{tabular}{l" + "c" * len(bench.table) + "}", r"\toprule",
                "method & " + " & ".join(tex(m) for m in bench.table) + r" \\", r"\midrule"]
        best = {m: _best(cells, ds, m, dirs.get(m, "max")) for m in bench.table}
        for label in bench.methods:
            row = [tex(label)]
            for m in bench.table:
                c = cells.get((ds, label, m))
                s = f"{_fmt(c.mean)} $\\pm$ {_fmt(c.std, c.mean)}" if c else "--"
                row.append(rf"\textbf{{{s}}}" if c and label in best[m] else s)
            out.append(" & ".join(row) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)


def _save_chart(fig: Any, bench: Benchmark, ds: str, path: Path) -> Path:
    """Title, save (one file per dataset when there are several) and close a report figure."""
    import matplotlib.pyplot as plt

    fig.suptitle(f"{bench.name} — {ds} (mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    out = path if len(bench.datasets) == 1 else path.with_name(f"{path.stem}-{ds}.png")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def bar_chart(bench: Benchmark, cells: dict, path: Path) -> list[Path]:
    """One PNG per dataset: a panel per table metric, a bar per method with std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    labels = list(bench.methods)
    for ds in bench.datasets:
        n = len(bench.table)
        cols = min(4, n)
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False)
        for ax, m in zip(axes.flat, bench.table, strict=False):
            means = [cells[(ds, lab, m)].mean if (ds, lab, m) in cells else 0 for lab in labels]
            stds = [cells[(ds, lab, m)].std if (ds, lab, m) in cells else 0 for lab in labels]
            colors = ["tab:red" if lab in bench.proposed else "tab:gray" for lab in labels]
            ax.bar(range(len(labels)), means, yerr=stds, color=colors, capsize=2)
            ax.set_title(m, fontsize=9)
            ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
            ax.tick_params(axis="y", labelsize=7)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        paths.append(_save_chart(fig, bench, ds, path))
    return paths


@dataclass
class Written:
    """What :func:`write_full` wrote: the table (path and text) and the claims' verdicts."""

    path: Path
    md: str
    claims: list[claims_mod.Result]
    files: list[Path]
    provenance: dict[str, Any]


def write(bench: Benchmark, uri: str | None = None, out_dir: str | Path = "reports",
          run_id: str | None = None, require_runs: bool = False) -> tuple[Path, str]:
    """Build every report file; log them to ``run_id`` (or a new report run). Returns (md path, md).

    The store is asked first (:func:`harness.tracking.connect`): one line within seconds if it
    cannot answer. ``require_runs``: refuse, leaving existing reports alone, when the store
    holds no finished run of the benchmark (``harness report`` before any ``harness bench``).
    """
    out = write_full(bench, uri, out_dir, run_id, require_runs)
    return out.path, out.md


def write_full(bench: Benchmark, uri: str | None = None, out_dir: str | Path = "reports",
               run_id: str | None = None, require_runs: bool = False) -> Written:
    """:func:`write`, returning also the claims' verdicts (``reports/<benchmark>-claims.md`` and
    ``.csv``, a table artifact and ``claim/<id>`` tags on the run, when the benchmark declares
    claims) and the provenance of the runs."""
    uri = tracking.tracking_uri(uri)
    mlf = tracking.connect(uri)
    records = _complete_records(bench, uri, mlf)
    runs = [(spec, run.data.metrics) for spec, run in records]
    if require_runs and not runs:
        raise UserError(
            f"no finished runs of benchmark {bench.name} (profile {bench.profile}) in "
            f"{tracking.redact(uri)}: nothing to report; run `make bench METHOD={bench.name} "
            f"PROFILE={bench.profile}` first, or point MLFLOW_TRACKING_URI / --tracking-uri at "
            "the store that holds them"
        )
    cells = collect(bench, uri, runs)
    tests = paired_tests(bench, cells)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(bench, cells, tests)
    files = [out / f"{bench.name}.md", out / f"{bench.name}.tex", out / f"{bench.name}.csv"]
    files[0].write_text(md)
    files[1].write_text(latex(bench, cells))
    with open(files[2], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for label in bench.methods:
            for ds in bench.datasets:
                for m in bench.table:
                    c = cells.get((ds, label, m))
                    if c:
                        w.writerow([bench.name, ds, label, m, f"{c.mean:.6g}", f"{c.std:.6g}", c.n])
    if cells:
        files += bar_chart(bench, cells, out / f"{bench.name}.png")
    curves = collect_curves(bench, runs) if bench.curves else {}
    if curves:
        files += curve_chart(bench, curves, out / f"{bench.name}-curves.png")
    prov = provenance(records)
    results = claims_mod.evaluate_all(bench, collect_all(runs)) if bench.claims else []
    claim_files = claims_mod.write(bench, results, out, prov) if results else []
    files += claim_files
    if run_id is None:
        exp_id = tracking.ensure_experiment(mlf, bench.name, uri)
        run = mlf.create_run(exp_id, run_name=f"{bench.name}-report",
                             tags={tracking.TAG_KIND: "report", "profile": bench.profile})
        run_id = run.info.run_id
        mlf.set_terminated(run_id, "FINISHED")
    for f in files:
        mlf.log_artifact(run_id, str(f), "report")
    if results:
        claims_mod.log(mlf, run_id, bench, results)
    return Written(files[0], md, results, claim_files, prov)
