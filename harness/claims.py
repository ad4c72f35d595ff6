"""Paper claims as data: a benchmark's ``claims:``, checked up front and judged over seeds.

Each claim names its paper and sentence, whether it is the issue's check or the paper's wider
claim, and reads ``a <direction> ratio x b + margin`` on one or more test metrics::

    claims:
      tail-gain-lightgcn:
        paper: "AURL (arXiv 2511.16414)"      # or once at the top level: paper: ...
        says: "AURL improves tail-item recall over its backbone"
        kind: issue                           # issue (the issue's check) | paper (the wider claim)
        compare: [lightgcn+aurl, lightgcn]    # a row; a row, a number, or a list of them
        metric: recall_20_tail                # a name, a glob (rmse_*_d10) or a list of them
        direction: ">"                        # > >= < <= (quoted: YAML reads a bare > as text)
        ratio: 0.95                           # optional: a > 0.95 x b
        margin: 0.0                           # optional: a > b + margin
        datasets: [amazon-synthetic]          # optional: default every dataset of the benchmark

Evaluation (:func:`evaluate`), per dataset, baseline and metric (a *part*): over the seeds both
rows finished, ``d = a - (ratio x b + margin)``; a one-sided t-test of mean d in the claimed
direction (paired, as ``scipy.stats.ttest_rel`` on a and ratio x b + margin) and a two-sided
``1 - alpha`` t-interval of mean d. Verdicts: *holds* (mean d on the claimed side and
p < alpha), *holds, not significant* (on the claimed side, p >= alpha, or one seed: no test),
*does not hold* (mean d on the wrong side, or exactly 0 for a strict > / <), *cannot be
evaluated* (no runs, no common seed, the metric not logged: the part says which). A per-seed
difference within 1e-6 of the values compared (float32 round-off) counts as a tie. A glob
matches the test metrics the runs logged (``*`` never crosses the ``/`` of a criterion); a
claim holds only where every part does, so its verdict is its weakest part's (does not hold,
then cannot be evaluated, then not significant, then holds). That intersection needs no
multiple-test correction: each part is tested at alpha.
"""

from __future__ import annotations

import csv
import difflib
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

if TYPE_CHECKING:
    from harness.spec import Benchmark

DIRECTIONS = (">", ">=", "<", "<=")
KINDS = ("issue", "paper")
HOLDS = "holds"
NOT_SIGNIFICANT = "holds, not significant"
FAILS = "does not hold"
UNKNOWN = "cannot be evaluated"
VERDICTS = (HOLDS, NOT_SIGNIFICANT, FAILS, UNKNOWN)
_WORST = {HOLDS: 0, NOT_SIGNIFICANT: 1, UNKNOWN: 2, FAILS: 3}
#: the MLflow tag counting each verdict on the parent run (``claims.holds=3``)
COUNT_TAGS = {HOLDS: "claims.holds", NOT_SIGNIFICANT: "claims.not_significant",
              FAILS: "claims.fails", UNKNOWN: "claims.not_evaluated"}
DEFAULT_ALPHA = 0.05
CLAIM_KEYS = ("paper", "says", "kind", "compare", "metric", "direction", "ratio", "margin",
              "datasets")
CSV_COLUMNS = ["benchmark", "profile", "claim", "kind", "paper", "says", "test", "dataset",
               "compared", "metric", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "p", "n",
               "verdict", "claim_verdict", "note"]
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # names the MLflow tag claim/<id>
_SAYS_MAX = 200
_SHAPE = ('{says: "...", kind: issue|paper, compare: [row, row], metric: <name>, '
          'direction: ">"}')


# ------------------------------------------------------------------ the claim


@dataclass(frozen=True)
class Claim:
    """One claim of a benchmark YAML (validated; see the module docstring)."""

    id: str
    paper: str
    says: str
    kind: str
    a: str
    b: tuple[str | float, ...]
    metrics: tuple[str, ...]
    direction: str
    ratio: float = 1.0
    margin: float = 0.0
    datasets: tuple[str, ...] | None = None

    def rhs(self, b: str | float | None = None) -> str:
        """The right-hand side in words (of one part, given ``b``): ``0.95 × lightgcn``,
        ``cnn + 0.01``, ``erm, source``, ``0.6``."""
        items = self.b if b is None else (b,)
        text = ", ".join(x if isinstance(x, str) else _num_text(x) for x in items)
        if not any(isinstance(x, str) for x in items):
            return text
        if len(items) > 1:
            text = f"each of {text}"
        if self.ratio != 1:
            text = f"{_num_text(self.ratio)} × {text}"
        if self.margin:
            text += f" {'+' if self.margin > 0 else '−'} {_num_text(abs(self.margin))}"
        return text

    @property
    def test(self) -> str:
        """The claim as one line: ``lightgcn+aurl >= 0.95 × lightgcn on recall_20``."""
        return f"{self.a} {self.direction} {self.rhs()} on {', '.join(self.metrics)}"


@dataclass
class Part:
    """One comparison of a claim: a dataset, one right-hand side, one metric."""

    dataset: str
    b: str | float
    metric: str
    verdict: str
    n: int = 0
    mean_a: float | None = None
    mean_b: float | None = None
    diff: float | None = None
    ci: tuple[float, float] | None = None
    p: float | None = None
    note: str = ""


@dataclass
class Result:
    """A claim and its parts; the claim's verdict is its weakest part's."""

    claim: Claim
    parts: list[Part] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if not self.parts:
            return UNKNOWN
        return max((p.verdict for p in self.parts), key=_WORST.__getitem__)

    @property
    def summary(self) -> str:
        """How the parts went, when there are several: ``3 of 4 parts hold; does not hold: 1``;
        else the one part's note."""
        if len(self.parts) <= 1:
            return self.parts[0].note if self.parts else "nothing to compare"
        counts = {v: sum(p.verdict == v for p in self.parts) for v in VERDICTS}
        out = [f"{counts[HOLDS]} of {len(self.parts)} parts hold"]
        out += [f"{v}: {counts[v]}" for v in (NOT_SIGNIFICANT, FAILS, UNKNOWN) if counts[v]]
        return "; ".join(out)


# ------------------------------------------------------------------ statistics


def paired(a: Mapping[int, float], b: Mapping[int, float] | float, direction: str,
           ratio: float = 1.0, margin: float = 0.0, alpha: float = DEFAULT_ALPHA) -> Part:
    """Judge ``a <direction> ratio x b + margin`` over the seeds ``a`` and ``b`` share.

    ``a`` and ``b``: seed -> value (``b`` may be a number: one-sample against it). Returns a
    :class:`Part` with empty dataset and metric (the caller fills them in).
    """
    part = Part(dataset="", b="" if isinstance(b, Mapping) else float(b), metric="", verdict=UNKNOWN)
    if isinstance(b, Mapping):
        seeds = sorted(set(a) & set(b))
        if not seeds:
            part.note = (f"no seed in common (a: {_seeds(a) or 'none'}; b: {_seeds(b) or 'none'})")
            return part
        bad = [s for s in seeds if not (math.isfinite(a[s]) and math.isfinite(b[s]))]
        seeds = [s for s in seeds if s not in bad]
        x = np.array([a[s] for s in seeds], dtype=float)
        y = np.array([b[s] for s in seeds], dtype=float)
    else:
        bad = [s for s in sorted(a) if not math.isfinite(a[s])]
        seeds = [s for s in sorted(a) if s not in bad]
        x = np.array([a[s] for s in seeds], dtype=float)
        y = np.full(len(seeds), float(b))
    notes = [f"seed {', '.join(map(str, bad))} not a number, left out"] if bad else []
    if not seeds:
        part.note = "; ".join(notes) or "no values"
        return part
    rhs = ratio * y + margin
    d = x - rhs
    d[np.abs(d) <= 1e-6 * np.maximum(np.abs(x), np.abs(rhs))] = 0.0  # float32 round-off: a tie
    n = len(d)
    mean = float(d.mean())
    part.n, part.mean_a, part.mean_b, part.diff = n, float(x.mean()), float(y.mean()), mean
    up = direction in (">", ">=")
    strict = direction in (">", "<")
    on_side = (mean > 0 if up else mean < 0) or (mean == 0 and not strict)
    spread = float(d.max() - d.min())
    if n == 1:
        notes.append("1 seed: no test")
        part.verdict = NOT_SIGNIFICANT if on_side else FAILS
    elif spread <= 1e-12 * max(1.0, abs(mean)):
        part.ci = (mean, mean)
        if mean == 0:
            notes.append(f"equal in each of the {n} seeds: no spread, no test")
        else:
            notes.append(f"the same difference in each of the {n} seeds: no spread, no test needed")
        part.verdict = (HOLDS if mean != 0 else NOT_SIGNIFICANT) if on_side else FAILS
    else:
        from scipy import stats

        sd = float(d.std(ddof=1))
        half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * sd / math.sqrt(n)
        part.ci = (mean - half, mean + half)
        part.p = float(stats.ttest_1samp(d, 0.0, alternative="greater" if up else "less").pvalue)
        if not on_side:
            part.verdict = FAILS
        else:
            part.verdict = HOLDS if part.p < alpha else NOT_SIGNIFICANT
    if part.verdict == FAILS:
        notes.append("on the wrong side" if mean != 0 else f"a tie, and the claim is strict ({direction})")
    part.note = "; ".join(notes)
    return part


def _seeds(values: Mapping[int, float]) -> str:
    return ", ".join(map(str, sorted(values)))


# ------------------------------------------------------------------ globs


def is_glob(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def glob_regex(pattern: str) -> re.Pattern[str]:
    """``*`` any run of characters but ``/``, ``?`` one such character; the rest literal."""
    body = "".join("[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile(body)


def expand(pattern: str, names: Collection[str]) -> list[str]:
    """The names a metric pattern stands for, sorted (a plain name: itself, if present)."""
    if not is_glob(pattern):
        return [pattern] if pattern in names else []
    rx = glob_regex(pattern)
    return sorted(n for n in names if rx.fullmatch(n))


# ------------------------------------------------------------------ evaluation


def evaluate(claim: Claim, cells: Mapping[tuple[str, str, str], Any], datasets: list[str],
             alpha: float = DEFAULT_ALPHA) -> Result:
    """Judge one claim from ``cells``: (dataset, row, metric) -> an object with ``.values``
    (seed -> test value), as :func:`harness.report.collect_all` builds them from MLflow.

    ``datasets``: the benchmark's datasets in this invocation (a claim's own list is checked
    against them: one left out by ``DATASET=`` cannot be evaluated)."""
    result = Result(claim)
    logged: dict[tuple[str, str], set[str]] = {}
    for ds, row, metric in cells:
        logged.setdefault((ds, row), set()).add(metric)
    for ds in claim.datasets or datasets:
        for b in claim.b:
            rows = [claim.a, *([b] if isinstance(b, str) else [])]
            if ds not in datasets:
                result.parts.append(Part(ds, b, ", ".join(claim.metrics), UNKNOWN, note=(
                    f"dataset {ds} is not in this run of the benchmark (it has "
                    f"{', '.join(datasets)}; DATA= / DATASET= choose them)")))
                continue
            missing = [r for r in rows if not logged.get((ds, r))]
            if missing:
                result.parts.append(Part(ds, b, ", ".join(claim.metrics), UNKNOWN, note=(
                    f"no finished runs of {' and '.join(missing)} on {ds} in the store")))
                continue
            names = set().union(*(logged[ds, r] for r in rows))
            for pattern in claim.metrics:
                matched = expand(pattern, names)
                if not matched:
                    what = f"matching {pattern}" if is_glob(pattern) else pattern
                    result.parts.append(Part(ds, b, pattern, UNKNOWN, note=(
                        f"the runs of {' and '.join(rows)} on {ds} logged no test metric {what}")))
                    continue
                for metric in matched:
                    result.parts.append(_compare(claim, cells, ds, b, metric, alpha))
    return result


def _compare(claim: Claim, cells: Mapping[tuple[str, str, str], Any], ds: str, b: str | float,
             metric: str, alpha: float) -> Part:
    ca = cells.get((ds, claim.a, metric))
    cb = cells.get((ds, b, metric)) if isinstance(b, str) else None
    lacking = [r for r, c in ((claim.a, ca), (b, cb)) if isinstance(r, str) and c is None]
    if lacking:
        return Part(ds, b, metric, UNKNOWN, note=(
            f"the runs of {' and '.join(lacking)} on {ds} logged no test/{metric}"))
    ratio, margin = (claim.ratio, claim.margin) if isinstance(b, str) else (1.0, 0.0)
    part = paired(ca.values, cb.values if cb is not None else float(b), claim.direction,
                  ratio, margin, alpha)
    part.dataset, part.b, part.metric = ds, b, metric
    return part


def evaluate_all(bench: Benchmark, cells: Mapping[tuple[str, str, str], Any]) -> list[Result]:
    """Every claim of ``bench`` judged from ``cells`` at the benchmark's ``claims_alpha``."""
    return [evaluate(c, cells, bench.datasets, bench.claims_alpha) for c in bench.claims]


def counts(results: list[Result]) -> dict[str, int]:
    """verdict -> number of claims with it."""
    return {v: sum(r.verdict == v for r in results) for v in VERDICTS}


# ------------------------------------------------------------------ output


def _num_text(x: float) -> str:
    return f"{x:g}"


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:{'+' if signed else ''}.4g}"  # 4 significant digits: RMSEs of 1e-5 and recalls alike


def _p_text(part: Part) -> str:
    if part.p is not None:
        return f"{part.p:.3f}" if part.p >= 0.001 else f"{part.p:.1e}"
    if part.verdict == UNKNOWN:
        return "–"
    return "no test"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _verdict_md(verdict: str) -> str:
    return f"**{verdict}**" if verdict in (HOLDS, FAILS) else verdict


def legend(alpha: float) -> str:
    """What the tables' columns and verdicts mean."""
    level = f"{100 * (1 - alpha):g}%"
    return (
        "Each claim reads `a <direction> ratio × b + margin`. Per seed d = a − (ratio × b + "
        "margin), over the seeds both rows finished; p: one-sided paired t-test of mean d in "
        f"the claimed direction; [..]: two-sided {level} t-interval of mean d. **holds**: mean d "
        f"on the claimed side and p < {alpha:g}; holds, not significant: on the claimed side, "
        f"p ≥ {alpha:g} or a single seed (no test); **does not hold**: mean d on the wrong side "
        "(or a tie, within float32 round-off, for a strict > / <); cannot be evaluated: the "
        "runs or the metric are "
        "missing (the note says which). A claim over several datasets, rows or metrics holds "
        "only where every part does: its verdict is its weakest part's."
    )


def summary_table(results: list[Result]) -> list[str]:
    """Markdown: one line per claim with its verdict."""
    out = ["| claim | kind | says | test | verdict | parts |", "|---|---|---|---|---|---|"]
    for r in results:
        c = r.claim
        out.append(f"| {c.id} | {c.kind} | {_cell(c.says)} | `{_cell(c.test)}` | "
                   f"{_verdict_md(r.verdict)} | {_cell(r.summary)} |")
    return out


def parts_table(results: list[Result]) -> list[str]:
    """Markdown: one line per part (dataset x right-hand side x metric) with the numbers."""
    out = ["| claim | dataset | compared | metric | mean a | mean b | d [CI] | p | n | verdict |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for part in r.parts:
            if part.diff is None:
                nums = "– | – | – | – | –"
            else:
                ci = "" if part.ci is None or part.ci[0] == part.ci[1] else \
                    f" [{_fmt(part.ci[0], True)}, {_fmt(part.ci[1], True)}]"
                nums = (f"{_fmt(part.mean_a)} | {_fmt(part.mean_b)} | {_fmt(part.diff, True)}{ci} | "
                        f"{_p_text(part)} | {part.n}")
            note = f" ({part.note})" if part.note else ""
            out.append(f"| {r.claim.id} | {part.dataset} | {r.claim.a} vs {r.claim.rhs(part.b)} | "
                       f"{part.metric} | {nums} | {_cell(part.verdict + note)} |")
    return out


def tables(results: list[Result]) -> list[str]:
    """:func:`summary_table`, a blank line, :func:`parts_table`."""
    return [*summary_table(results), "", *parts_table(results)]


def count_line(results: list[Result]) -> str:
    """``holds: 2; holds, not significant: 1; does not hold: 1; cannot be evaluated: 0``."""
    tally = counts(results)
    return "; ".join(f"{v}: {tally[v]}" for v in VERDICTS)


def provenance_line(prov: Mapping[str, Any]) -> str:
    """Runs, seeds, commits and data fingerprints behind a report, in one sentence."""
    fps = "; ".join(f"{ds} {', '.join(v) or '?'}" for ds, v in (prov.get("fingerprints") or {}).items())
    commits = ", ".join(prov.get("commits") or []) or "?"
    seeds = ", ".join(map(str, prov.get("seeds") or [])) or "none"
    return (f"{prov.get('runs', 0)} finished runs in the store, seeds {seeds}; made at commit "
            f"{commits}; data fingerprint {fps or '?'}.")


def markdown(bench: Benchmark, results: list[Result], prov: Mapping[str, Any] | None = None) -> str:
    """``reports/<benchmark>-claims.md``."""
    papers = ", ".join(dict.fromkeys(r.claim.paper for r in results))
    out = [f"# {bench.name}: the papers' claims ({bench.profile} profile)", "",
           f"{papers}. {provenance_line(prov) if prov else ''}".strip(), "",
           legend(bench.claims_alpha), "", *tables(results), ""]
    return "\n".join(out)


def rows(bench: Benchmark, results: list[Result]) -> list[list[Any]]:
    """The CSV's rows (one per part), in :data:`CSV_COLUMNS` order; None where there is no value."""
    out = []
    for r in results:
        c = r.claim
        for p in r.parts:
            out.append([bench.name, bench.profile, c.id, c.kind, c.paper, c.says, c.test, p.dataset,
                        f"{c.a} vs {c.rhs(p.b)}", p.metric, p.mean_a, p.mean_b, p.diff,
                        p.ci[0] if p.ci else None, p.ci[1] if p.ci else None, p.p,
                        p.n, p.verdict, r.verdict, p.note])
    return out


def write(bench: Benchmark, results: list[Result], out_dir: Path,
          prov: Mapping[str, Any] | None = None) -> list[Path]:
    """Write ``<benchmark>-claims.md`` and ``.csv`` (empty cells where there is no value, never
    ``nan``); returns the paths."""
    md, path = out_dir / f"{bench.name}-claims.md", out_dir / f"{bench.name}-claims.csv"
    md.write_text(markdown(bench, results, prov))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for row in rows(bench, results):
            w.writerow(["" if v is None else f"{v:.6g}" if isinstance(v, float) else v for v in row])
    return [md, path]


def log(mlf: Any, run_id: str, bench: Benchmark, results: list[Result]) -> None:
    """The claims on an MLflow run: a table artifact (``claims/<benchmark>-claims.json``) and
    tags a dashboard filters on (``claim/<id>`` = verdict, ``claims.holds`` = count, ...)."""
    import pandas as pd
    from mlflow.entities import RunTag

    table = pd.DataFrame(rows(bench, results), columns=CSV_COLUMNS, dtype=object)
    mlf.log_table(run_id, data=table, artifact_file=f"claims/{bench.name}-claims.json")
    tally = counts(results)
    tags = [RunTag(COUNT_TAGS[v], str(tally[v])) for v in VERDICTS]
    tags += [RunTag("claims.alpha", f"{bench.claims_alpha:g}")]
    tags += [RunTag(f"claim/{r.claim.id}", r.verdict) for r in results]
    mlf.log_batch(run_id, tags=tags)


# ------------------------------------------------------------------ the reproduction page


@dataclass
class Reproduced:
    """One benchmark of ``harness reproduce``: how it ran and what its claims gave."""

    benchmark: str
    profile: str
    command: str
    status: str = "done"  # done | runs failed | failed
    error: str = ""
    alpha: float = DEFAULT_ALPHA
    papers: list[str] = field(default_factory=list)
    runs: dict[str, int] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def reproduction_markdown(entries: list[Reproduced], profile: str, command: str,
                          git: Mapping[str, str], when: str, uri: str) -> str:
    """``reports/REPRODUCTION.md``: per paper, each claim's verdict and numbers, the command,
    the commit and the data fingerprints."""
    dirty = " (working tree dirty)" if git.get("git_dirty") == "true" else ""
    out = ["# Reproduction: do the papers' claims hold here?", "",
           f"Profile `{profile}`, {when}, commit {git.get('git_commit', 'unknown')[:12]}{dirty}, "
           f"tracking `{uri}`.", "",
           f"Command: `{command}`. It is resumable: run it again and every finished run is "
           "skipped, an interrupted one resumes.", "",
           legend(DEFAULT_ALPHA) + " (alpha is 0.05 unless a benchmark sets `claims_alpha`.)", "",
           "| paper | benchmark | claims | " + " | ".join(VERDICTS) + " | status |",
           "|---|---|---|" + "---|" * len(VERDICTS) + "---|"]
    for e in entries:
        tally = counts(e.results)
        status = e.status if e.status != "failed" else "**failed**"
        out.append(f"| {_cell(', '.join(e.papers) or '–')} | [{e.benchmark}](#{_anchor(e)}) | "
                   f"{len(e.results)} | " + " | ".join(str(tally[v]) for v in VERDICTS)
                   + f" | {status} |")
    for e in entries:
        out += ["", f"## {', '.join(e.papers) or e.benchmark}: `{e.benchmark}`", ""]
        out.append(f"Reproduce: `{e.command}`.")
        if e.status == "failed":
            out += ["", f"**Failed**: {_cell(e.error)}"]
            continue
        r = e.runs
        out += ["", f"Runs of this invocation: {r.get('done', 0)} done, {r.get('skipped', 0)} "
                f"skipped, {r.get('failed', 0)} failed. " + provenance_line(e.provenance)]
        if e.alpha != DEFAULT_ALPHA:
            out += ["", f"Significance level of this benchmark's claims: alpha = {e.alpha:g}."]
        if e.files:
            out += ["", "Files: " + ", ".join(f"`{f}`" for f in e.files) + "."]
        if e.error:
            out += ["", f"**Runs failed**: {_cell(e.error)}"]
        out += ["", *(tables(e.results) if e.results else ["The benchmark declares no claims."])]
    out.append("")
    return "\n".join(out)


def _anchor(e: Reproduced) -> str:
    head = f"{', '.join(e.papers) or e.benchmark}: `{e.benchmark}`"
    return re.sub(r"[^a-z0-9 _-]", "", head.lower()).replace(" ", "-")


# ------------------------------------------------------------------ YAML: parse and validate


def parse(cfg: Mapping[str, Any]) -> list[Claim]:
    """The claims of a validated, profile-merged benchmark configuration."""
    out = []
    for cid, c in (cfg.get("claims") or {}).items():
        b = c["compare"][1]
        metric = c["metric"]
        out.append(Claim(
            id=cid, paper=c.get("paper") or cfg.get("paper") or "", says=c["says"], kind=c["kind"],
            a=c["compare"][0], b=tuple(b if isinstance(b, list) else [b]),
            metrics=tuple(metric if isinstance(metric, list) else [metric]),
            direction=c["direction"], ratio=float(c.get("ratio", 1.0)),
            margin=float(c.get("margin", 0.0)),
            datasets=tuple(c["datasets"]) if c.get("datasets") is not None else None))
    return out


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def validate(cfg: Mapping[str, Any], rows: Mapping[str, type], criteria: Collection[str],
             fail: Callable[..., NoReturn]) -> None:
    """Check ``claims:``, ``paper:`` and ``claims_alpha:`` of one profile-merged configuration.

    ``rows``: method row -> class; ``criteria``: the ``selection:`` names (``wc/<metric>``);
    ``fail(keys, problem, todo)`` raises the one-line error naming the file and key.
    """
    from harness.spec import _YAML_NUMBER_AS_TEXT, _kind

    alpha = cfg.get("claims_alpha")
    if alpha is not None and not (_number(alpha) and 0 < alpha < 0.5):
        fail(("claims_alpha",), f"{alpha!r} is not a significance level",
             "give a number between 0 and 0.5, e.g. 0.05")
    paper = cfg.get("paper")
    if paper is not None and not (isinstance(paper, str) and paper.strip()):
        fail(("paper",), f"{paper!r} is {_kind(paper)}, not a paper's name",
             'name it, e.g. paper: "AURL (arXiv 2511.16414)"')
    claims = cfg.get("claims")
    if claims is None:
        return
    if not isinstance(claims, dict):
        fail(("claims",), f"{_kind(claims)}, not a mapping of claims", f"write claims: {{<id>: {_SHAPE}}}")
    datasets = list(cfg.get("datasets") or {})

    def declares(cls: type, metric: str) -> bool:
        head, _, rest = metric.partition("/")
        if rest and head in criteria:
            metric = rest
        prefixes = getattr(cls, "metric_prefixes", {}) or {}
        declared = getattr(cls, "metrics", {}) or {}
        if not is_glob(metric):
            return metric in declared or any(metric.startswith(p) for p in prefixes)
        rx = glob_regex(metric)
        literal = re.split(r"[*?]", metric, maxsplit=1)[0]
        return any(rx.fullmatch(m) for m in declared) or any(literal.startswith(p) for p in prefixes)

    def choices(cls: type) -> str:
        names = sorted(getattr(cls, "metrics", {}) or {})
        names += sorted(f"{p}..." for p in getattr(cls, "metric_prefixes", {}) or {})
        return ", ".join(names) or "none"

    for cid, c in claims.items():
        keys = ("claims", cid)
        if not isinstance(cid, str) or not _ID.fullmatch(cid):
            fail(keys, f"{cid!r} is not a claim id",
                 "use letters, digits and _ . - (64 at most; it names the MLflow tag claim/<id>)")
        if not isinstance(c, dict):
            fail(keys, f"{_kind(c)}, not a mapping", f"write it as {_SHAPE}")
        for k in c:
            if k not in CLAIM_KEYS:
                close = difflib.get_close_matches(str(k), CLAIM_KEYS, n=1)
                fail((*keys, k), "unknown key", f"did you mean {close[0]!r}?" if close else
                     f"allowed: {', '.join(CLAIM_KEYS)}")
        for req, hint in (("says", 'the paper\'s sentence, short: says: "..."'),
                          ("kind", "kind: issue (the issue's check) or kind: paper (the wider claim)"),
                          ("compare", "the rows compared: compare: [<row>, <row or number>]"),
                          ("metric", "the test metric: metric: <name> (a glob or a list allowed)"),
                          ("direction", 'direction: ">", ">=", "<" or "<=" (quoted)')):
            if req not in c:
                fail(keys, f"no {req!r}", f"add {hint}")
        if "paper" in c or paper is None:
            p = c.get("paper")
            if not (isinstance(p, str) and p.strip()):
                fail((*keys, "paper"), "no paper named" if p is None else f"{p!r} is {_kind(p)}",
                     'name it here or once at the top level: paper: "AURL (arXiv 2511.16414)"')
        says = c["says"]
        if not (isinstance(says, str) and says.strip()):
            fail((*keys, "says"), f"{says!r} is {_kind(says)}", "write the paper's sentence, short")
        if len(says) > _SAYS_MAX:
            fail((*keys, "says"), f"{len(says)} characters",
                 f"keep it to one short sentence ({_SAYS_MAX} characters at most)")
        if c["kind"] not in KINDS:
            fail((*keys, "kind"), f"{c['kind']!r} is neither issue nor paper",
                 "write issue (the issue's check) or paper (the paper's wider claim)")
        direction = c["direction"]
        if direction not in DIRECTIONS:
            todo = ('quote it: direction: ">" (YAML reads a bare > as the start of a text block)'
                    if direction in ("", None) else 'use ">", ">=", "<" or "<=" (quoted)')
            fail((*keys, "direction"), f"{direction!r} is not a direction", todo)
        compare = c["compare"]
        if not (isinstance(compare, list) and len(compare) == 2):
            fail((*keys, "compare"), f"{compare!r} is not a pair",
                 "write compare: [<row>, <row, number, or a list of them>]")
        a, b = compare
        if not isinstance(a, str) or a not in rows:
            fail((*keys, "compare", 0), f"{a!r} is not a method row",
                 f"name one of {', '.join(rows)}")
        b_items = b if isinstance(b, list) else [b]
        b_keys = [(*keys, "compare", 1, i) if isinstance(b, list) else (*keys, "compare", 1)
                  for i in range(len(b_items))]
        if not b_items:
            fail((*keys, "compare", 1), "an empty list", "name at least one row or number")
        for item, k in zip(b_items, b_keys, strict=True):
            if isinstance(item, str) and _YAML_NUMBER_AS_TEXT.fullmatch(item):
                fail(k, f"YAML reads {item} as text (a float needs a dot and a signed exponent)",
                     f"write {float(item)!r}")
            if isinstance(item, str):
                if item not in rows:
                    close = difflib.get_close_matches(item, list(rows), n=1)
                    fail(k, f"{item!r} is not a method row",
                         f"did you mean {close[0]!r}?" if close else f"name one of {', '.join(rows)}")
                if item == a:
                    fail(k, f"{item!r} is compared with itself", "name another row")
            elif not _number(item):
                fail(k, f"{item!r} is {_kind(item)}", "name a method row or give a number")
        if len({repr(x) for x in b_items}) != len(b_items):
            fail((*keys, "compare", 1), "names a row or number twice", "list each once")
        for opt, ok, todo in (("ratio", lambda v: _number(v) and v > 0, "give a number > 0, e.g. 0.95"),
                              ("margin", _number, "give a number, e.g. 0.01 (a > b + margin)")):
            if opt in c:
                v = c[opt]
                if isinstance(v, str) and _YAML_NUMBER_AS_TEXT.fullmatch(v):
                    fail((*keys, opt), f"YAML reads {v} as text", f"write {float(v)!r}")
                if not ok(v):
                    fail((*keys, opt), f"{v!r} is {_kind(v)}" if not _number(v) else f"{v!r} is out of range",
                         todo)
                if not all(isinstance(x, str) for x in b_items):
                    fail((*keys, opt), f"{opt} applies to rows, and the claim compares with a number",
                         "fold it into the number, or make the comparison with rows its own claim")
        metrics = c["metric"]
        m_items = metrics if isinstance(metrics, list) else [metrics]
        m_keys = [(*keys, "metric", i) if isinstance(metrics, list) else (*keys, "metric")
                  for i in range(len(m_items))]
        if not m_items:
            fail((*keys, "metric"), "an empty list", "name at least one test metric")
        for m, k in zip(m_items, m_keys, strict=True):
            if not (isinstance(m, str) and m):
                fail(k, f"{m!r} is {_kind(m)}", "name a test metric, e.g. recall_20")
            if m.startswith(("test/", "val/")):
                fail(k, f"{m!r} has a prefix", f"write {m.split('/', 1)[1]!r} (claims read test metrics)")
            for row in [a, *(x for x in b_items if isinstance(x, str))]:
                cls = rows[row]
                if not declares(cls, m):
                    fail(k, f"metric {m!r} is not logged by row {row!r} ({cls.__name__})",
                         f"name one it declares: {choices(cls)}")
        if len(set(m_items)) != len(m_items):
            fail((*keys, "metric"), "names a metric twice", "list each once")
        if "datasets" in c:
            ds = c["datasets"]
            if not (isinstance(ds, list) and ds):
                fail((*keys, "datasets"), f"{ds!r} is not a list of datasets",
                     "list dataset labels, or leave the key out for all of them")
            for i, d in enumerate(ds):
                if d not in datasets:
                    fail((*keys, "datasets", i), f"{d!r} is not a dataset of this benchmark",
                         f"name one of {', '.join(map(str, datasets))}")
            if len(set(map(str, ds))) != len(ds):
                fail((*keys, "datasets"), "names a dataset twice", "list each once")
