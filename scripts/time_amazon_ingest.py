"""Measure Amazon reviews ingestion (:func:`read_interactions`): lines per second and peak memory.

    python scripts/time_amazon_ingest.py --dir /tmp/amazon-10m --lines 10000000 [--gzip] [--old]

Writes (once; reused when present) into ``--dir`` (default: a temporary directory) a reviews
file of ``--lines`` lines in each of ``--formats`` (default 2018, 2023 and csv; also 2014, Python
dict literals as in the complete 2014 files, which go through the per-line path): 2018 JSON lines
(``reviewerID, asin, unixReviewTime, overall, reviewText, ...``, a few hundred bytes each), 2023
JSON lines (``user_id, parent_asin, timestamp`` in ms, ``rating, text, ...``) and the ratings-only
CSV (``item,user,rating,timestamp``), with skewed users and items, some non-ASCII text, and about
0.1% of lines malformed (cut short, a field missing), blank, or with a float timestamp (these go
through the per-line path). ``--gzip`` also writes and reads ``.gz`` copies (compressed with
ISA-L, decompressed by the reader with ISA-L).

Each file is read in a fresh process by the current reader and, with ``--old``, by the reader
at git revision ``--old-rev`` (the line-by-line reader this one replaced), loaded from ``git
show``. Printed per read: lines, seconds, lines/s (wall), CPU seconds of the process, and its
peak resident memory (``VmHWM``). ``--repeat`` reads each file more than once (alternating
the readers) and prints every run. ``--workers`` sets the reader's threads (default: the CPU
count, 2 to 8). ``load s``: loading the compiled scanner before the read (not in its time;
the first run on a machine compiles it, some seconds more). ``loadavg``: the machine's 1-minute
load average just after the read (other jobs on a shared machine slow every rate).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OLD_REV = "97729d6"  # the last revision with the line-by-line reader

_WORDS = ("the a an great good bad product works fine love it quality would buy again not "
          "recommend size color fits well price value cheap sturdy broke after weeks months "
          "daughter son gift easy use battery screen sound comfortable small large perfect "
          "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u2013 \u2019s").split()


def _texts(rng: np.random.Generator, n: int, words: tuple[int, int]) -> list[str]:
    """A pool of texts of words[0] to words[1] words (about 6 characters each)."""
    out = []
    for _ in range(n):
        k = int(rng.integers(*words))
        out.append(" ".join(_WORDS[j] for j in rng.integers(0, len(_WORDS), k)))
    return out


def _ids(rng: np.random.Generator, n: int, prefix: str, length: int) -> np.ndarray:
    alphabet = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", dtype=np.uint8)
    body = alphabet[rng.integers(0, len(alphabet), (n, length - len(prefix)))]
    return np.array([prefix + row.tobytes().decode() for row in body], dtype=object)


def write_file(path: Path, fmt: str, lines: int, seed: int = 0, chunk: int = 200_000) -> None:
    """``lines`` lines of format ``fmt`` (2018, 2023 or csv) into ``path`` (via a .part file)."""
    rng = np.random.default_rng(seed)
    n_users, n_items = max(10, lines // 4), max(10, lines // 25)
    users = _ids(rng, n_users, "A", 28 if fmt == "2023" else 14)
    items = _ids(rng, n_items, "B0", 10)
    texts_py = _texts(rng, 2000, (5, 55))  # lines of about 430 bytes (2018), 410 (2023)
    texts = [json.dumps(t, ensure_ascii=False) for t in texts_py]
    summaries = [json.dumps(t, ensure_ascii=False) for t in _texts(rng, 200, (1, 6))]
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", encoding="utf-8") as fh:
        for lo in range(0, lines, chunk):
            n = min(chunk, lines - lo)
            # a long tail of items; users: a few heavy, most light
            item = np.minimum((rng.pareto(1.1, n) * n_items / 50).astype(np.int64), n_items - 1)
            user = np.where(rng.random(n) < 0.2, rng.integers(0, max(1, n_users // 50), n),
                            rng.integers(0, n_users, n))
            ts = rng.integers(1_000_000_000, 1_600_000_000, n)
            rating = rng.integers(1, 6, n)
            text = rng.integers(0, len(texts), n)
            odd = rng.random(n)
            out = []
            for k in range(n):
                u, i, t, r = users[user[k]], items[item[k]], int(ts[k]), int(rating[k])
                if fmt == "csv":
                    line = f"{i},{u},{r}.0,{t}"
                elif fmt == "2014":  # a Python dict literal, as in the complete 2014 files
                    line = repr({"reviewerID": u, "asin": i, "reviewerName": "J. Doe",
                                 "helpful": [0, r], "reviewText": texts_py[text[k]],
                                 "overall": float(r), "summary": "Five Stars",
                                 "unixReviewTime": t, "reviewTime": "05 13, 2014"})
                elif fmt == "2018":
                    line = (f'{{"overall": {r}.0, "verified": true, "reviewTime": "05 13, 2014", '
                            f'"reviewerID": "{u}", "asin": "{i}", "style": {{"Format:": " Paperback"}}, '
                            f'"reviewerName": "J. Doe", "reviewText": {texts[text[k]]}, '
                            f'"summary": {summaries[text[k] % 200]}, "unixReviewTime": {t}}}')
                else:
                    line = (f'{{"rating": {r}.0, "title": {summaries[text[k] % 200]}, '
                            f'"text": {texts[text[k]]}, "images": [], "asin": "{i}X", '
                            f'"parent_asin": "{i}", "user_id": "{u}", "timestamp": {t * 1000 + 123}, '
                            f'"helpful_vote": {r - 1}, "verified_purchase": true}}')
                if odd[k] < 0.001:  # damage: cut short, a field missing, blank, float timestamp
                    kind = int(odd[k] * 4000)
                    if kind == 0:
                        line = line[: len(line) // 2]
                    elif kind == 1:
                        line = line.replace(f"{t}", "", 1) if fmt == "csv" else line.replace(u, "")
                    elif kind == 2:
                        line = ""
                    elif fmt != "csv":
                        line = line.replace(f": {t}", f": {t}.0").replace(f": {t * 1000 + 123}",
                                                                          f": {t * 1000 + 123}.0")
                out.append(line)
            fh.write("\n".join(out) + "\n")
    tmp.rename(path)


def gzip_copy(path: Path) -> Path:
    from isal import igzip

    out = path.with_name(path.name + ".gz")
    if not out.exists():
        tmp = out.with_name(out.name + ".part")
        with open(path, "rb") as src, igzip.open(tmp, "wb", compresslevel=1) as dst:
            while block := src.read(16 << 20):
                dst.write(block)
        tmp.rename(out)
    return out


_CHILD = r"""
import importlib, importlib.util, json, sys, time
which, path, fmt, workers, old_file = sys.argv[1:6]
if which == "old":
    spec = importlib.util.spec_from_file_location("harness.datasets._old_amazon_readers", old_file)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
else:
    mod = importlib.import_module("harness.datasets.amazon_readers")
    if int(workers):
        mod._WORKERS = int(workers)
    t = time.perf_counter()
    mod._kernels("csv" if fmt == "csv" else "json")  # load the compiled scanner first
    # (once per machine: compiled and cached)
    load = time.perf_counter() - t
t0, c0 = time.perf_counter(), time.process_time()
inter, stats = mod.read_interactions(path, fmt)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
# peak RSS of this process image (ru_maxrss would keep the parent's from before the exec)
hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:"))
print(json.dumps({"lines": stats.lines, "malformed": stats.malformed, "rows": len(inter),
                  "users": inter.n_users, "items": inter.n_items, "wall": wall, "cpu": cpu,
                  "rss_mib": hwm / 1024,
                  "load": load if which == "new" else 0.0}))
"""


def read_once(which: str, path: Path, fmt: str, workers: int, old_file: str) -> dict:
    # run outside the checkout: its harness/ folder would shadow the installed package's mapping
    out = subprocess.run([sys.executable, "-c", _CHILD, which, str(path), fmt, str(workers), old_file],
                         capture_output=True, text=True, cwd=path.parent)
    if out.returncode:
        raise SystemExit(f"{which} reader failed on {path}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=None, help="where the files are written (default: a temp dir)")
    ap.add_argument("--lines", type=int, default=10_000_000)
    ap.add_argument("--formats", default="2018,2023,csv")
    ap.add_argument("--gzip", action="store_true", help="also read .gz copies")
    ap.add_argument("--old", action="store_true", help="also time the line-by-line reader")
    ap.add_argument("--old-rev", default=OLD_REV)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()

    tmp = None
    if args.dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="amazon-ingest-")
        root = Path(tmp.name)
    else:
        root = Path(args.dir)
        root.mkdir(parents=True, exist_ok=True)
    old_file = ""
    if args.old:
        src = subprocess.run(["git", "show", f"{args.old_rev}:datasets/amazon_readers.py"],
                             capture_output=True, text=True, cwd=REPO)
        if src.returncode:
            raise SystemExit(f"git show {args.old_rev}:datasets/amazon_readers.py failed: {src.stderr}")
        old_file = str(root / f"old_amazon_readers_{args.old_rev}.py")
        Path(old_file).write_text(src.stdout)

    names = {"2014": "reviews_Books.json", "2018": "Books.json", "2023": "Books.jsonl",
             "csv": "Books.csv"}
    print(f"{os.cpu_count()} CPUs; {args.lines:,} lines per file in {root}", flush=True)
    print(f"{'file':22s} {'reader':6s} {'lines':>11s} {'malformed':>9s} {'s':>7s} {'lines/s':>11s} "
          f"{'cpu s':>7s} {'peak MiB':>8s} {'load s':>6s} {'loadavg':>7s}", flush=True)
    for fmt in args.formats.split(","):
        path = root / f"{args.lines}_{names[fmt]}"
        if not path.exists():
            t = time.perf_counter()
            write_file(path, fmt, args.lines)
            print(f"  wrote {path.name} ({path.stat().st_size / 2**20:,.0f} MiB) in "
                  f"{time.perf_counter() - t:.0f} s", flush=True)
        paths = [path] + ([gzip_copy(path)] if args.gzip else [])
        for p in paths:
            for _ in range(args.repeat):
                for which in (["new", "old"] if args.old else ["new"]):
                    r = read_once(which, p, fmt, args.workers, old_file)
                    print(f"{p.name[-22:]:22s} {which:6s} {r['lines']:11,d} {r['malformed']:9,d} "
                          f"{r['wall']:7.1f} {r['lines'] / r['wall']:11,.0f} {r['cpu']:7.1f} "
                          f"{r['rss_mib']:8,.0f} {r['load']:6.1f} {os.getloadavg()[0]:7.2f}",
                          flush=True)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
