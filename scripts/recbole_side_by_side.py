"""Side by side with RecBole 1.2.1: BPR-MF and LightGCN on MovieLens-100K, on one split.

    .venv/bin/python scripts/recbole_side_by_side.py                      # everything
    .venv/bin/python scripts/recbole_side_by_side.py --timing-only --rounds 3
    .venv/bin/python scripts/recbole_side_by_side.py --quality-only --profiles default
    .venv/bin/python scripts/recbole_side_by_side.py --models lightgcn --out table.md

1. Builds RecBole 1.2.1 in a throwaway virtualenv (``.cache/recbole-venv``, git-ignored;
   reused once built): torch 2.13.0 first, then RecBole's requirements without ``ray``
   (numpy < 2, scipy < 1.12), then ``recbole==1.2.1 --no-deps``.
2. Takes MovieLens-100K from the RecBole wheel (``dataset_example/ml-100k/ml-100k.inter``),
   writes it as the Amazon 2018 ratings CSV, and lets the harness's ``AmazonDataModule``
   de-duplicate, 5-core and split it (ratio 0.8/0.1/0.1 per user, split_seed 0). That split
   is written as RecBole benchmark files ``ml100k.{train,valid,test}.inter`` (original
   MovieLens ids as tokens), so both sides train and evaluate on the same interactions.
3. Timing (``--rounds`` rounds, harness then RecBole per model, 2 torch threads each): one
   warm-up epoch and ``--epochs`` timed epochs per round, each side in its own training loop
   (a Lightning Trainer fitting ``harness.methods.cf.BPR``; RecBole's ``Trainer.fit``), with
   the training epoch and the full-ranking validation pass timed separately; the median
   epoch of a round, then the median over rounds.
4. Quality: the harness through its own runner (``harness bench`` on a generated benchmark
   YAML whose rows and profiles are the ``mf`` / ``lightgcn`` rows of benchmarks/aurl.yaml),
   best validation checkpoint tested; RecBole with its default BPR / LightGCN training
   (lr 1e-3, up to 300 epochs, stopping_step 10 on valid Recall@20), best model tested.
5. Checks that RecBole's Recall@20 / NDCG@20 and harness/metrics/ranking.py agree on the
   same score matrices, and prints a markdown table (``--out`` writes it too).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HELPER = Path(__file__).resolve().with_name("_recbole_side.py")
#: the RecBole venv's packages: torch first (the CPU wheel pinned), then RecBole's
#: requirements without ray, then RecBole itself without its dependency list
TORCH_REQ = "torch==2.13.0"
DEPS = ["numpy<2", "scipy<1.12", "pandas<2.3", "tqdm>=4.48.2", "colorlog==4.7.2",
        "colorama==0.4.4", "scikit-learn<1.6", "pyyaml>=5.1.0", "tensorboard>=2.5.0",
        "thop>=0.1.1.post2207130030", "tabulate>=0.8.10", "plotly>=4.0.0", "texttable>=0.9.0",
        "psutil>=5.9.0"]
RECBOLE_REQ = "recbole==1.2.1"
CATEGORY = "ml-100k"  # the harness reads <data_dir>/ml-100k.csv
RB_DATASET = "ml100k"  # RecBole's name: not "ml-100k", whose preset would apply (and download)
PARTS = ("train", "valid", "test")
#: --models name -> (harness row in benchmarks/aurl.yaml, RecBole model, table label)
MODELS = {"lightgcn": ("lightgcn", "LightGCN", "LightGCN (3 layers)"),
          "bpr": ("mf", "BPR", "BPR-MF")}
THREADS = 2


def say(msg: str) -> None:
    """A progress line, flushed."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- the RecBole venv


def build_venv(venv: Path, python: str = "python3") -> tuple[Path, float]:
    """Create (or reuse) the RecBole venv; returns its interpreter and the build seconds (0 if reused)."""
    py = venv / "bin" / "python"
    marker = venv / ".recbole-side-built"
    want = json.dumps([TORCH_REQ, *DEPS, RECBOLE_REQ])
    if py.exists() and marker.exists() and marker.read_text() == want:
        say(f"reusing the RecBole venv {venv}")
        return py, 0.0
    t0 = time.perf_counter()
    say(f"building the RecBole venv {venv} (a few minutes)")
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    for step, args in (("torch", [TORCH_REQ]), ("RecBole's requirements (no ray)", DEPS),
                       ("recbole", ["--no-deps", RECBOLE_REQ])):
        say(f"  pip install {step}")
        subprocess.run(pip + args, check=True)
    subprocess.run([str(py), "-c", "import recbole, torch, numpy, scipy; "
                    "print('  recbole', recbole.__version__, 'torch', torch.__version__, "
                    "'numpy', numpy.__version__, 'scipy', scipy.__version__)"], check=True)
    marker.write_text(want)
    seconds = time.perf_counter() - t0
    say(f"venv built in {seconds:.0f} s")
    return py, seconds


def recbole_ml100k(py: Path) -> Path:
    """Path of ``ml-100k.inter`` shipped inside the installed RecBole wheel."""
    code = ("import importlib.util; "
            "print(importlib.util.find_spec('recbole').submodule_search_locations[0])")
    pkg = subprocess.run([str(py), "-c", code], check=True, capture_output=True, text=True)
    path = Path(pkg.stdout.strip()) / "dataset_example" / "ml-100k" / "ml-100k.inter"
    if not path.exists():
        raise SystemExit(f"error: {path} is missing from the RecBole wheel")
    return path


# --------------------------------------------------------------------------- data (pure parts)


def write_amazon_csv(inter_path: Path, csv_path: Path) -> int:
    """Write a RecBole ``.inter`` file as the Amazon ratings CSV; returns the rows written."""
    # rewritten only when the content changes: the harness's fingerprint and cache stay valid
    lines = Path(inter_path).read_text().splitlines()
    header = [h.split(":")[0] for h in lines[0].split("\t")]
    try:
        cu, ci, cr, ct = (header.index(c) for c in ("user_id", "item_id", "rating", "timestamp"))
    except ValueError:
        raise SystemExit(f"error: {inter_path}: expected columns user_id, item_id, rating, "
                         f"timestamp, got {header}") from None
    out = []
    for line in lines[1:]:
        if not line.strip():
            continue
        f = line.split("\t")
        out.append(f"{f[ci]},{f[cu]},{float(f[cr])},{int(float(f[ct]))}\n")
    text = "".join(out)
    csv_path = Path(csv_path)
    if not csv_path.exists() or csv_path.read_text() != text:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = csv_path.with_name(csv_path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, csv_path)
    return len(out)


def csr_pairs(indptr: Sequence[int] | np.ndarray, indices: Sequence[int] | np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) code arrays of a per-user CSR matrix."""
    indptr = np.asarray(indptr, dtype=np.int64)
    users = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
    return users, np.asarray(indices, dtype=np.int64)


def same_pairs(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    """Whether two (user, item) code arrays hold the same multiset of pairs."""
    if len(a[0]) != len(b[0]):
        return False
    key = max(int(np.max(a[1], initial=0)), int(np.max(b[1], initial=0))) + 1
    return bool(np.array_equal(np.sort(a[0] * key + a[1]), np.sort(b[0] * key + b[1])))


def write_recbole_split(root: Path, name: str, parts: dict[str, tuple[np.ndarray, np.ndarray]],
                        user_ids: Sequence[str] | np.ndarray, item_ids: Sequence[str] | np.ndarray
                        ) -> dict[str, Path]:
    """Write each part's (user, item) codes as ``root/name/name.<part>.inter`` with raw-id tokens."""
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    user_ids, item_ids = np.asarray(user_ids), np.asarray(item_ids)
    paths = {}
    for part, (users, items) in parts.items():
        rows = [f"{u}\t{i}\n" for u, i in zip(user_ids[users], item_ids[items], strict=True)]
        path = folder / f"{name}.{part}.inter"
        path.write_text("user_id:token\titem_id:token\n" + "".join(rows))
        paths[part] = path
    return paths


# --------------------------------------------------------------------------- data (harness)


def harness_split(csv_dir: Path, batch_size: int) -> dict[str, Any]:
    """The harness's split of the CSV (AmazonDataModule) with the raw ids of its codes, checked."""
    from harness.datasets import amazon_readers as ar
    from harness.datasets.amazon import AmazonDataModule

    dm = AmazonDataModule(data_dir=str(csv_dir), category=CATEGORY, k_core=5, split="ratio",
                          batch_size=batch_size, cache_dir=str(REPO / ".cache" / "harness"))
    info, stats = dm.info, dm.stats()
    parts = {p: csr_pairs(getattr(info, f"{p}_indptr").numpy(), getattr(info, f"{p}_indices").numpy())
             for p in PARTS}
    # the raw ids: the reader's codes after the same de-duplication and k-core
    fmt, reviews, _ = ar.find_files(csv_dir, CATEGORY)
    inter, _ = ar.read_interactions(reviews, fmt)
    inter = ar.k_core(ar.dedupe_keep_earliest(inter), 5)
    allpairs = tuple(np.concatenate([parts[p][j] for p in PARTS]) for j in (0, 1))
    if (inter.n_users, inter.n_items) != (info.n_users, info.n_items) or not same_pairs(
            (inter.user, inter.item), allpairs):  # type: ignore[arg-type]
        raise SystemExit("error: the harness's codes do not match a re-read of the CSV; "
                         "datasets/amazon.py changed how it codes users and items")
    return {"dm": dm, "info": info, "stats": stats, "parts": parts,
            "user_ids": inter.user_ids, "item_ids": inter.item_ids}


# --------------------------------------------------------------------------- harness settings


def aurl_rows(profile: str) -> dict[str, dict[str, Any]]:
    """The ``mf`` / ``lightgcn`` rows of benchmarks/aurl.yaml under a profile, resolved."""
    import yaml

    from harness.spec import deep_merge

    raw = yaml.safe_load((REPO / "benchmarks" / "aurl.yaml").read_text())
    cfg = deep_merge(raw, (raw.get("profiles") or {}).get(profile) or {})
    out = {}
    for row in ("mf", "lightgcn"):
        r = cfg["methods"][row]
        out[row] = {"method": r["method"], "params": dict(r.get("params") or {}),
                    "data_params": dict(r.get("data_params") or {}),
                    "max_epochs": cfg["trainer"]["max_epochs"],
                    "early_stopping": cfg.get("early_stopping")}
    return out


def bench_yaml(csv_dir: Path, rows: Iterable[str], profiles: Iterable[str], batch_size: int) -> str:
    """A benchmark YAML: the chosen aurl rows (dim 64, 3 layers) on the ML-100K CSV, one seed, CPU."""
    import yaml

    rows = list(rows)
    base = aurl_rows("default")
    methods = {}
    for row in rows:
        params = {**base[row]["params"], "dim": 64}
        if params.get("backbone") == "lightgcn":
            params["n_layers"] = 3
        methods[row] = {"method": base[row]["method"], "group": row, "params": params}
    prof: dict[str, Any] = {}
    for p in profiles:
        resolved = aurl_rows(p)
        one = resolved[rows[0]]
        entry: dict[str, Any] = {
            "methods": {r: {"params": dict(resolved[r]["params"])} for r in rows},
            "trainer": {"max_epochs": one["max_epochs"]},
        }
        if one["early_stopping"]:
            entry["early_stopping"] = one["early_stopping"]
        prof[p] = entry
    doc = {
        "name": "recbole-side",
        "description": "BPR-MF and LightGCN on MovieLens-100K (RecBole's copy), side by side "
                       "with RecBole 1.2.1; written by scripts/recbole_side_by_side.py",
        "methods": methods,
        "datasets": {"ml-100k": {"dataset": "amazon", "params": {
            "data_dir": str(csv_dir), "category": CATEGORY, "k_core": 5, "split": "ratio",
            "batch_size": batch_size}}},
        "seeds": 1,
        "monitor": {"metric": "val/recall_20", "mode": "max"},
        "table": ["recall_20", "ndcg_20"],
        "trainer": {"max_epochs": base[rows[0]]["max_epochs"], "accelerator": "cpu", "devices": 1},
        "profiles": prof,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def cf_identity() -> dict[str, str]:
    """Which harness CF code ran: ``CFRecommender.version`` and a hash of methods/cf.py."""
    import hashlib

    from harness.methods.cf import CFRecommender

    path = REPO / "methods" / "cf.py"
    return {"version": str(CFRecommender.version),
            "cf.py sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:12]}


def child_env() -> dict[str, str]:
    """Environment for the subprocesses: two math threads."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
    return env


def run_streamed(cmd: list[str], prefix: str, cwd: Path | None = None,
                 keep: tuple[str, ...] = ()) -> None:
    """Run a command, echoing its output lines (all, or those containing one of ``keep``)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        tail = (tail + [line])[-40:]
        if not keep or any(k in line for k in keep):
            print(f"{prefix}{line.rstrip()}", flush=True)
    if proc.wait() != 0:
        sys.stdout.write("".join(tail))
        raise SystemExit(f"error: {' '.join(cmd[:4])} ... exited with {proc.returncode}")


# --------------------------------------------------------------------------- quality


def _poll_progress(uri: str, prefix: str, stop: threading.Event, every: float = 60.0) -> None:
    """Print the running harness run's validation curve every ``every`` seconds (read from MLflow)."""
    from harness import tracking

    seen = -1
    while not stop.wait(every):
        try:
            mlf = tracking.client(uri)
            exp = mlf.get_experiment_by_name("recbole-side")
            if exp is None:
                continue
            for run in mlf.search_runs([exp.experiment_id], "attributes.status = 'RUNNING' and "
                                       f"tags.`{tracking.TAG_KIND}` = 'run'"):
                vals = [m.value for m in sorted(mlf.get_metric_history(
                    run.info.run_id, "val/recall_20"), key=lambda m: m.step)]
                if vals and len(vals) != seen:
                    seen = len(vals)
                    print(f"{prefix}{run.data.tags.get('method')}: epoch {len(vals)}, val "
                          f"recall_20 {vals[-1]:.4f}, best {max(vals):.4f} (epoch "
                          f"{int(np.argmax(vals)) + 1})", flush=True)
        except Exception:  # progress only: a busy database is no reason to stop
            continue


def harness_quality(yaml_path: Path, profile: str, work: Path, max_epochs: int = 0
                    ) -> dict[str, dict[str, Any]]:
    """``harness bench`` under one profile (``max_epochs``: a cap); test metrics per row from MLflow."""
    from harness import tracking

    pdir = work / f"harness-{profile}"
    uri = f"sqlite:///{pdir / 'mlflow.db'}"
    pdir.mkdir(parents=True, exist_ok=True)
    cap = max_epochs and max_epochs < aurl_rows(profile)["mf"]["max_epochs"]
    stop = threading.Event()
    threading.Thread(target=_poll_progress, args=(uri, f"  [harness {profile}] ", stop),
                     daemon=True).start()
    try:
        run_streamed([sys.executable, "-m", "harness", "bench", str(yaml_path), "--profile", profile,
                  "--tracking-uri", uri, "--run-dir", str(pdir / "runs"), "--reports",
                  str(pdir / "reports"), "--no-progress", "--no-report", "--jobs", "1",
                  *(["--max-epochs", str(max_epochs)] if cap else [])],
                     prefix=f"  [harness {profile}] ", cwd=REPO)
    finally:
        stop.set()
    mlf = tracking.client(uri)
    exp = mlf.get_experiment_by_name("recbole-side")
    out = {}
    for run in mlf.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.TAG_KIND}` = 'run'"):
        if run.data.tags.get(tracking.TAG_COMPLETE) != "1":
            continue
        hist = mlf.get_metric_history(run.info.run_id, "val/recall_20")
        vals = [m.value for m in sorted(hist, key=lambda m: m.step)]
        m = run.data.metrics
        out[run.data.tags["method"]] = {
            "recall_20": m["test/recall_20"], "ndcg_20": m["test/ndcg_20"],
            "best_valid_recall_20": max(vals) if vals else None,
            "epochs_run": len(vals), "best_epoch": int(np.argmax(vals)) + 1 if vals else None,
            "run_s": m.get("run_seconds"), "capped": max_epochs if cap else None,
            "params": {k: v for k, v in run.data.params.items() if k.startswith(("hparams.", "data."))},
            "trainer": {k: v for k, v in run.data.params.items() if k.startswith("trainer.")},
        }
    return out


def recbole_call(py: Path, command: str, work: Path, data_path: Path, model: str = "BPR",
                 extra: Sequence[str] = (), batch_size: int = 2048) -> dict[str, Any]:
    """Run the RecBole-side helper in its venv; returns its JSON."""
    out = work / f"recbole-{command}-{model}-{time.time_ns()}.json"
    run_streamed([str(py), str(HELPER), command, "--model", model, "--data-path", str(data_path),
                  "--dataset", RB_DATASET, "--workdir", str(work / "recbole-work"),
                  "--threads", str(THREADS), "--batch-size", str(batch_size), "--out", str(out),
                  *extra],
                 prefix="", keep=("[RecBole", "Error", "error", "Traceback"))
    return json.loads(out.read_text())


# --------------------------------------------------------------------------- timing


def harness_timing(data: dict[str, Any], params: dict[str, Any], warmup: int, epochs: int
                   ) -> tuple[float, float]:
    """Median train-epoch and validation seconds of the harness's BPR under a Lightning Trainer."""
    import lightning.pytorch as L
    import torch

    from harness.methods.cf import BPR

    class Timer(L.Callback):
        """Times each training epoch and each validation pass."""

        def __init__(self) -> None:
            self.train: list[float] = []
            self.val: list[float] = []

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self._t = time.perf_counter()

        def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
            self.train.append(time.perf_counter() - self._t)
            self._v = time.perf_counter()

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            self.val.append(time.perf_counter() - self._v)

    torch.set_num_threads(THREADS)
    L.seed_everything(0, verbose=False)
    model = BPR(data["info"], **{**params, "dim": 64, "n_layers": 3})
    timer = Timer()
    trainer = L.Trainer(max_epochs=warmup + epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        use_distributed_sampler=False, callbacks=[timer])
    trainer.fit(model, datamodule=data["dm"])
    return statistics.median(timer.train[warmup:]), statistics.median(timer.val[warmup:])


# --------------------------------------------------------------------------- table


def _f(x: float | None, nd: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def format_table(models: Sequence[str], timing: dict[str, dict[str, Any]],
                 quality: dict[str, dict[str, Any]], profiles: Sequence[str]) -> str:
    """The markdown table: seconds and ratios (harness / RecBole), then test Recall/NDCG@20."""
    lines = ["| | harness | RecBole 1.2.1 | ratio |", "|---|---|---|---|"]
    for m in models:
        label = MODELS[m][2]
        t = timing.get(m)
        if t:
            for key, what in (("train", "train s/epoch"), ("valid", "full-ranking eval s")):
                h, r = t["harness"][key], t["recbole"][key]
                lines.append(f"| {label} {what} | {_f(h)} | {_f(r)} | {h / r:.2f} |")
    for m in models:
        label = MODELS[m][2]
        q = quality.get(m)
        if q:
            cells = []
            for p in profiles:
                h = q["harness"].get(p)
                if h:
                    cap = f", {h['capped']} epochs" if h.get("capped") else ""
                    cells.append(f"{h['recall_20']:.4f} / {h['ndcg_20']:.4f} ({p}{cap})")
            rb = q.get("recbole")
            rcell = ""
            if rb:
                cap = f" ({rb['settings']['epochs']} epochs)" if rb["settings"]["epochs"] < 300 else ""
                if rb["settings"].get("stopping_step", 10) != 10:
                    cap += f" (stopping_step {rb['settings']['stopping_step']})"
                rcell = f"{rb['test']['recall@20']:.4f} / {rb['test']['ndcg@20']:.4f}{cap}"
            lines.append(f"| {label} test Recall@20 / NDCG@20 | {', '.join(cells)} | {rcell} | |")
    notes = []
    for m in models:
        q = quality.get(m)
        if not q:
            continue
        for p in profiles:
            h = q["harness"].get(p)
            if h:
                cap = f", capped at {h['capped']} epochs" if h.get("capped") else ""
                notes.append(f"- {MODELS[m][2]}, harness {p} (lr {h['params'].get('hparams.lr')}"
                             f"{cap}): {h['epochs_run']} epochs, best validation epoch "
                             f"{h['best_epoch']} (Recall@20 {_f(h['best_valid_recall_20'], 4)})")
        rb = q.get("recbole")
        if rb:
            s = rb["settings"]
            cap = f", capped at {s['epochs']} epochs" if s["epochs"] < 300 else ""
            cap += f", stopping_step {s.get('stopping_step', 10)}"
            notes.append(f"- {MODELS[m][2]}, RecBole (lr {s['learning_rate']}{cap}): "
                         f"{rb['epochs_run']} epochs, best validation epoch {rb['best_epoch']} "
                         f"(Recall@20 {_f(rb['best_valid_recall_20'], 4)})")
    return "\n".join(lines + ([""] + notes if notes else []))


def merge_reports(paths: Sequence[Path]) -> str:
    """One table from several runs' report.json (timing from one run, quality from others)."""
    models: list[str] = []
    profiles: list[str] = []
    timing: dict[str, Any] = {}
    quality: dict[str, Any] = {}
    for path in paths:
        rep = json.loads(Path(path).read_text())
        models += [m for m in rep["models"] if m not in models]
        profiles += [p for p in rep["profiles"] if p not in profiles and rep.get("quality")]
        timing.update(rep.get("timing") or {})
        for m, q in (rep.get("quality") or {}).items():
            mine = quality.setdefault(m, {"harness": {}})
            mine["harness"].update(q["harness"])
            if "recbole" in q:
                mine["recbole"] = q["recbole"]
    order = [m for m in MODELS if m in models]
    return format_table(order, timing, quality, profiles)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Build the RecBole venv, prepare the shared split, time and train both sides, print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="bpr,lightgcn", help="comma list of: bpr, lightgcn")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds (harness, RecBole) per model")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per round (after 1 warm-up)")
    p.add_argument("--timing-only", action="store_true")
    p.add_argument("--quality-only", action="store_true")
    p.add_argument("--profiles", default="default,paper",
                   help="harness profiles for quality (rows of benchmarks/aurl.yaml)")
    p.add_argument("--batch-size", type=int, default=2048,
                   help="training batch on both sides (RecBole's default train_batch_size 2048)")
    p.add_argument("--venv", type=Path, default=REPO / ".cache" / "recbole-venv")
    p.add_argument("--python", default="python3", help="interpreter that creates the venv")
    p.add_argument("--work", type=Path, default=None,
                   help="working folder (default .cache/recbole-side/<time>)")
    p.add_argument("--max-epochs", type=int, default=0,
                   help="quality: cap the epochs on both sides (0: each side's own limit)")
    p.add_argument("--recbole-stopping-step", type=int, default=0,
                   help="quality: RecBole's stopping_step (0: its default, 10 validations "
                        "without a gain); LightGCN at lr 1e-3 can sit on a plateau longer")
    p.add_argument("--merge", type=Path, nargs="+", default=None,
                   help="only print the table combined from these report.json files")
    p.add_argument("--no-metric-check", action="store_true")
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = p.parse_args(argv)
    if args.merge:
        table = merge_reports(args.merge)
        print(table)
        if args.out:
            args.out.write_text(table + "\n")
        return 0
    asked = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in asked if m not in MODELS]
    if bad or not asked:
        p.error(f"--models: unknown {bad}; use {', '.join(MODELS)}")
    models = [m for m in MODELS if m in asked]  # the table's order: LightGCN, then BPR-MF
    if args.timing_only and args.quality_only:
        p.error("--timing-only and --quality-only exclude each other")
    profiles = [x.strip() for x in args.profiles.split(",") if x.strip()]
    work = (args.work or REPO / ".cache" / "recbole-side" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    spent: dict[str, float] = {}
    t_all = time.perf_counter()

    py, spent["venv build"] = build_venv(args.venv.resolve(), args.python)
    t0 = time.perf_counter()
    inter = recbole_ml100k(py)
    csv_dir = REPO / ".cache" / "recbole-side" / "data"
    n_rows = write_amazon_csv(inter, csv_dir / f"{CATEGORY}.csv")
    say(f"{inter.name}: {n_rows} ratings -> {csv_dir / (CATEGORY + '.csv')}")
    data = harness_split(csv_dir, args.batch_size)
    st = data["stats"]
    say(f"harness after 5-core: {st['users']} users, {st['items']} items, {st['interactions']} "
        f"interactions; split train {st['train']} / valid {st['valid']} / test {st['test']}")
    rb_root = work / "recbole-data"
    write_recbole_split(rb_root, RB_DATASET, data["parts"], data["user_ids"], data["item_ids"])
    spent["data"] = time.perf_counter() - t0

    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "stats": st, "models": models,
                              "profiles": profiles, "work": str(work), "harness_cf": cf_identity()}
    if not args.no_metric_check:
        t0 = time.perf_counter()
        say("metric definitions: RecBole's Recall/NDCG@20 vs harness/metrics/ranking.py")
        mc = recbole_call(py, "metrics", work, rb_root, extra=[
            "--ranking-py", str(REPO / "harness" / "metrics" / "ranking.py")])
        for name, c in mc["cases"].items():
            say(f"  {name}: RecBole {c['recbole']}, harness {c['harness']}; max abs diff "
                f"{c['max_abs_diff_mean']:.2e} (means), {c['max_abs_diff_per_user']:.2e} (per user)")
        report["metric_check"] = mc
        spent["metric check"] = time.perf_counter() - t0

    timing: dict[str, dict[str, Any]] = {}
    if not args.quality_only:
        t0 = time.perf_counter()
        rows = aurl_rows("default")
        rounds: dict[str, dict[str, list[tuple[float, float]]]] = {
            m: {"harness": [], "recbole": []} for m in models}
        for r in range(args.rounds):
            for m in models:
                row, rb_model, label = MODELS[m]
                say(f"timing round {r + 1}/{args.rounds}, {label}: harness")
                h = harness_timing(data, rows[row]["params"], 1, args.epochs)
                rounds[m]["harness"].append(h)
                say(f"  harness {h[0]:.3f} s/epoch, eval {h[1]:.3f} s; RecBole next")
                rb = recbole_call(py, "timing", work, rb_root, rb_model,
                                  ["--epochs", str(args.epochs), "--warmup", "1"], args.batch_size)
                rounds[m]["recbole"].append((rb["train_median"], rb["valid_median"]))
                say(f"  RecBole {rb['train_median']:.3f} s/epoch, eval {rb['valid_median']:.3f} s")
        for m in models:
            timing[m] = {side: {"train": statistics.median(x[0] for x in v),
                                "valid": statistics.median(x[1] for x in v), "rounds": v}
                         for side, v in rounds[m].items()}
        report["timing"] = timing
        spent["timing"] = time.perf_counter() - t0

    quality: dict[str, dict[str, Any]] = {m: {"harness": {}} for m in models}
    if not args.timing_only:
        yaml_path = work / "recbole-side.yaml"
        yaml_path.write_text(bench_yaml(csv_dir, [MODELS[m][0] for m in models], profiles,
                                        args.batch_size))
        for prof in profiles:
            t0 = time.perf_counter()
            say(f"quality, harness profile {prof}: harness bench {yaml_path}")
            res = harness_quality(yaml_path, prof, work, args.max_epochs)
            for m in models:
                q = res[MODELS[m][0]]
                quality[m]["harness"][prof] = q
                say(f"  {MODELS[m][2]} ({prof}): test Recall@20 {q['recall_20']:.4f}, NDCG@20 "
                    f"{q['ndcg_20']:.4f} ({q['epochs_run']} epochs, best {q['best_epoch']})")
            spent[f"quality harness {prof}"] = time.perf_counter() - t0
        for m in models:
            t0 = time.perf_counter()
            stop = args.recbole_stopping_step or 10
            say(f"quality, RecBole {MODELS[m][1]} (lr 1e-3, <= 300 epochs, stopping_step {stop})")
            extra = ["--max-epochs", str(args.max_epochs)] if args.max_epochs else []
            if args.recbole_stopping_step:
                extra += ["--stopping-step", str(args.recbole_stopping_step)]
            rb = recbole_call(py, "quality", work, rb_root, MODELS[m][1], extra, args.batch_size)
            quality[m]["recbole"] = rb
            say(f"  RecBole {MODELS[m][1]}: test Recall@20 {rb['test']['recall@20']:.4f}, "
                f"NDCG@20 {rb['test']['ndcg@20']:.4f} ({rb['epochs_run']} epochs, best "
                f"{rb['best_epoch']})")
            spent[f"quality RecBole {MODELS[m][1]}"] = time.perf_counter() - t0
        report["quality"] = quality

    spent["total"] = time.perf_counter() - t_all
    report["seconds"] = spent
    table = format_table(models, timing, quality if not args.timing_only else {}, profiles)
    print("\n" + table + "\n")
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in spent.items()))
    (work / "report.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"details: {work / 'report.json'}")
    if args.out:
        args.out.write_text(table + "\n")
        print(f"table written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
