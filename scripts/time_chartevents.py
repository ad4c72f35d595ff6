"""Measure the CHARTEVENTS streamer: rows per second and peak memory on a generated table.

    python scripts/time_chartevents.py --rows 20000000 --dir /tmp/chartevents-20m [--gzip]

Writes (once; reused when present) a MIMIC-III-format ``CHARTEVENTS.csv`` of ``--rows`` rows (all
15 columns; a quarter of the rows are vital item ids, the rest other charted items, as in the
real table where vitals are a minority of the rows) for ``--stays`` ICU stays, then reads it in a
fresh process with :func:`harness.datasets.clinical_mimic.read_chart_events` and reports the rows
per second and that process's peak resident memory (``ru_maxrss``). ``--repeat`` reads it more
than once, each in its own process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

VITAL_IDS = [211, 220045, 51, 220050, 220179, 8368, 220051, 220180, 52, 220052, 220181, 618, 220210,
             678, 223761, 223762, 646, 220277]
OTHER_IDS = [198, 223900, 223835, 3420, 227969, 220739, 223901, 581, 224639, 226512, 1126, 777]


def write_table(path: Path, rows: int, stays: int, seed: int = 0, chunk: int = 1_000_000) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    intime0 = 4_133_980_800  # 2101-01-01 in seconds
    tmp = path.with_suffix(".part")
    with pacsv.CSVWriter(str(tmp), pa.schema([
            ("ROW_ID", pa.int64()), ("SUBJECT_ID", pa.int64()), ("HADM_ID", pa.int64()),
            ("ICUSTAY_ID", pa.int64()), ("ITEMID", pa.int64()), ("CHARTTIME", pa.timestamp("s")),
            ("STORETIME", pa.timestamp("s")), ("CGID", pa.int64()), ("VALUE", pa.string()),
            ("VALUENUM", pa.float64()), ("VALUEUOM", pa.string()), ("WARNING", pa.int64()),
            ("ERROR", pa.int64()), ("RESULTSTATUS", pa.string()), ("STOPPED", pa.string())])) as w:
        for lo in range(0, rows, chunk):
            n = min(chunk, rows - lo)
            stay = np.sort(rng.integers(0, stays, n))
            vital = rng.random(n) < 0.25
            item = np.where(vital, rng.choice(VITAL_IDS, n), rng.choice(OTHER_IDS, n))
            t = intime0 + stay * 3 * 86400 + rng.integers(-3600, 72 * 3600, n)
            v = np.round(rng.normal(80, 20, n), 1)
            w.write_table(pa.table({
                "ROW_ID": np.arange(lo + 1, lo + n + 1), "SUBJECT_ID": 10000 + stay // 2,
                "HADM_ID": 100000 + stay, "ICUSTAY_ID": 200000 + stay, "ITEMID": item,
                "CHARTTIME": pa.array(t, pa.timestamp("s")),
                "STORETIME": pa.array(t + 600, pa.timestamp("s")),
                "CGID": rng.integers(14000, 21000, n), "VALUE": pa.array(v.astype(str)),
                "VALUENUM": v, "VALUEUOM": pa.array(np.where(vital, "bpm", "")),
                "WARNING": np.zeros(n, np.int64), "ERROR": np.zeros(n, np.int64),
                "RESULTSTATUS": pa.array(np.full(n, "", object), pa.string()),
                "STOPPED": pa.array(np.full(n, "", object), pa.string())}))
    tmp.rename(path)


def read_once(path: Path, stays: int, window: int, block_mb: int) -> dict:
    import resource

    from harness.datasets.clinical_mimic import MIMIC3_ITEMS, read_chart_events

    stay_ids = 200000 + np.arange(stays, dtype=np.int64)
    intime = 4_133_980_800 + np.arange(stays, dtype=np.int64) * 3 * 86400
    counts: dict[str, int] = {}
    t0 = time.perf_counter()
    ev = read_chart_events(path, "icustay_id", stay_ids, intime, window, MIMIC3_ITEMS, "MIMIC-III", "",
                           error_col="error", counts=counts, block_mb=block_mb)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    rows = counts["rows_read"]
    return {"rows": rows, "seconds": round(dt, 2), "rows_per_s": round(rows / dt),
            "events_kept": len(ev), "peak_rss_mib": round(peak), "counts": counts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--stays", type=int, default=60_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/chartevents-bench"))
    ap.add_argument("--window", type=int, default=24)
    ap.add_argument("--block-mb", type=int, default=32)
    ap.add_argument("--gzip", action="store_true", help="also time the .csv.gz copy")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--read-only", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.read_only:
        print(json.dumps(read_once(a.read_only, a.stays, a.window, a.block_mb)))
        return
    a.dir.mkdir(parents=True, exist_ok=True)
    path = a.dir / f"CHARTEVENTS-{a.rows}.csv"
    if not path.exists():
        t0 = time.perf_counter()
        write_table(path, a.rows, a.stays)
        print(f"wrote {path} ({path.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - t0:.0f} s")
    paths = [path]
    if a.gzip:
        gz = path.with_suffix(".csv.gz")
        if not gz.exists():
            subprocess.run(f"gzip -1 -c {path} > {gz}.part && mv {gz}.part {gz}", shell=True, check=True)
        paths.append(gz)
    for p in paths:
        for _ in range(a.repeat):
            out = subprocess.run([sys.executable, __file__, "--read-only", str(p), "--stays", str(a.stays),
                                  "--window", str(a.window), "--block-mb", str(a.block_mb)],
                                 check=True, capture_output=True, text=True).stdout
            r = json.loads(out)
            print(f"{p.name}: {r['rows']:,} rows in {r['seconds']} s = {r['rows_per_s'] / 1e6:.2f} M rows/s, "
                  f"peak RSS {r['peak_rss_mib']} MiB, {r['events_kept']:,} vital events kept")


if __name__ == "__main__":
    main()
