"""MIMIC-III v1.4 and MIMIC-IV readers (the databases' own CSV tables), the CHARTEVENTS streamer,
and a synthetic writer of MIMIC-III-format tables.

Both databases are credentialed-access PhysioNet releases (https://physionet.org/content/mimiciii/1.4/,
https://physionet.org/content/mimiciv/): nothing here downloads them; point ``DATA=`` at the folder.

**Cohort** (one row per ICU stay): adults (age >= 18 at ICU admission), a known length of stay of at
least ``min_stay_hours`` (default: the window, so every stay is observed for the whole window and
is alive at its end). Labels: in-hospital death (``ADMISSIONS.HOSPITAL_EXPIRE_FLAG``) and the ICU
length of stay in days (``ICUSTAYS.LOS``). Every ICU stay counts, not only a patient's first.

**Vitals**: the item ids of the MIT-LCP mimic-code vitals concepts (MIMIC-III
``concepts/firstday/vitals_first_day.sql``: CareVue ids < 220000 and MetaVision ids >= 220000;
MIMIC-IV ``concepts/measurement/vitalsign.sql``), listed in :data:`MIMIC3_ITEMS` and
:data:`MIMIC4_ITEMS`. Fahrenheit temperatures (``678``, ``223761``) are kept when ``70 < F <= 120``
(mimic-code's range) and converted to Celsius; every value then passes :func:`make_events`'s range
check. MIMIC-III rows with ``ERROR = 1`` are dropped, as mimic-code does.

**Scale**: ``CHARTEVENTS`` has about 330 million rows (33 GB as CSV). :func:`read_chart_events`
streams it with pyarrow (only the five columns used are converted, ``block_mb`` at a time on all
cores), keeps the vital item ids and the rows inside the window, and holds only those. The
per-stay tensors are cached by the DataModule (:mod:`harness.datasets.clinical`), keyed by the
tables' fingerprint and the arguments, so the table is streamed once.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from harness.datasets.clinical_grid import (
    CHANNELS,
    Cohort,
    Events,
    fahrenheit_to_celsius,
    find_table,
    make_events,
    map_csv,
    stream_csv,
)
from harness.errors import DataFormatError

if TYPE_CHECKING:
    import pyarrow as pa

MIMIC3_WHERE = ("MIMIC-III v1.4 is credentialed-access data from https://physionet.org/content/mimiciii/1.4/ "
                "(download it yourself; nothing here fetches it)")
MIMIC4_WHERE = ("MIMIC-IV is credentialed-access data from https://physionet.org/content/mimiciv/ "
                "(its hosp/ and icu/ folders; download it yourself; nothing here fetches it)")

#: mimic-code vitals_first_day.sql (MIMIC-III), by channel; CareVue and MetaVision ids together
MIMIC3_ITEMS: dict[str, tuple[int, ...]] = {
    "heart_rate": (211, 220045),
    "sbp": (51, 442, 455, 6701, 220179, 220050),
    "dbp": (8368, 8440, 8441, 8555, 220180, 220051),
    "mbp": (456, 52, 6702, 443, 220052, 220181, 225312),
    "resp_rate": (615, 618, 220210, 224690),
    "temperature": (223761, 678, 223762, 676),
    "spo2": (646, 220277),
}
#: mimic-code vitalsign.sql (MIMIC-IV, MetaVision only)
MIMIC4_ITEMS: dict[str, tuple[int, ...]] = {
    "heart_rate": (220045,),
    "sbp": (220179, 220050, 225309),
    "dbp": (220180, 220051, 225310),
    "mbp": (220052, 220181, 225312),
    "resp_rate": (220210, 224690),
    "temperature": (223761, 223762),
    "spo2": (220277,),
}
FAHRENHEIT_ITEMS: frozenset[int] = frozenset({678, 223761})
FAHRENHEIT_RANGE = (70.0, 120.0)


def _tables(root: Path, names: dict[str, str], where: str, source: str) -> dict[str, Path]:
    return {k: find_table(root, (f"{v}.csv", f"{v}.csv.gz"), source, where) for k, v in names.items()}


def _read_small(path: Path, columns: dict[str, object], source: str, where: str) -> dict[str, np.ndarray]:
    """A small table's columns as numpy arrays (timestamps as int64 seconds, nulls as -1 / NaN)."""
    import pyarrow as pa

    parts = list(stream_csv(path, columns, source, where))
    out: dict[str, np.ndarray] = {}
    for name, typ in columns.items():
        chunks = [b.column(name) for b in parts]
        arr = pa.chunked_array(chunks, type=typ) if chunks else pa.chunked_array([], type=typ)
        if pa.types.is_timestamp(typ):
            out[name] = arr.cast(pa.int64()).fill_null(np.iinfo(np.int64).min).to_numpy()
        elif pa.types.is_integer(typ):
            out[name] = arr.fill_null(-1).to_numpy()
        elif pa.types.is_floating(typ):
            out[name] = arr.fill_null(np.nan).to_numpy()
        else:
            out[name] = np.asarray(arr.to_pylist(), dtype=object)
    return out


def _item_lut(items: dict[str, tuple[int, ...]]) -> np.ndarray:
    top = max(i for ids in items.values() for i in ids)
    lut = np.full(top + 1, -1, np.int8)
    for c, ids in items.items():
        lut[list(ids)] = CHANNELS.index(c)
    return lut


def read_chart_events(path: Path, stay_col: str, stay_ids: np.ndarray, intime_s: np.ndarray,
                      window: int, items: dict[str, tuple[int, ...]], source: str, where: str,
                      error_col: str | None = None, counts: dict[str, int] | None = None,
                      block_mb: int = 16) -> Events:
    """Stream a CHARTEVENTS-like table (``stay_col, itemid, charttime, valuenum[, error]``) and keep
    the vital items of the given stays (sorted ``stay_ids``, ICU admission ``intime_s`` in seconds)
    charted in ``[0, window)`` hours; see the module docstring."""
    import pyarrow as pa
    import pyarrow.compute as pc

    counts = {} if counts is None else counts
    lut = _item_lut(items)
    wanted = pa.array(np.flatnonzero(lut >= 0), type=pa.int64())
    # the chart time stays text until the rows are filtered: only the kept rows are parsed
    columns: dict[str, object] = {stay_col: pa.int64(), "itemid": pa.int64(), "charttime": pa.string(),
                                  "valuenum": pa.float64()}
    if error_col:
        columns[error_col] = pa.float64()
    fahrenheit = np.zeros(len(lut), bool)
    fahrenheit[[i for i in FAHRENHEIT_ITEMS if i < len(lut)]] = True
    nat = np.iinfo(np.int64).min

    def block(batch: pa.RecordBatch) -> tuple[Events, dict[str, int]]:
        c = {"rows_read": batch.num_rows}
        batch = batch.filter(pc.is_in(batch.column("itemid"), value_set=wanted))
        c["vital_rows"] = batch.num_rows
        if batch.num_rows == 0 or len(stay_ids) == 0:
            return Events.empty(), c
        sid = batch.column(stay_col).fill_null(-1).to_numpy()
        pos = np.minimum(np.searchsorted(stay_ids, sid), len(stay_ids) - 1)
        known = stay_ids[pos] == sid
        t = _seconds(batch.column("charttime"), path, source, where)
        hours = (t - intime_s[pos]) / 3600.0
        inside = known & (t != nat) & (hours >= 0) & (hours < window)
        c["outside_window"] = int((known & ~inside).sum())
        if error_col:
            bad = inside & (batch.column(error_col).fill_null(0).to_numpy() == 1)
            c["error_rows"] = int(bad.sum())
            inside &= ~bad
        item = batch.column("itemid").to_numpy()[inside]
        value = batch.column("valuenum").fill_null(np.nan).to_numpy()[inside]
        c["no_value"] = int(np.isnan(value).sum())
        f = fahrenheit[item]
        f_ok = (value > FAHRENHEIT_RANGE[0]) & (value <= FAHRENHEIT_RANGE[1])
        f_bad = int((f & ~f_ok & ~np.isnan(value)).sum())
        value = np.where(f, np.where(f_ok, fahrenheit_to_celsius(value), np.nan), value)
        keep = ~np.isnan(value)
        ev = make_events(pos[inside][keep], hours[inside][keep], lut[item][keep], value[keep], c)
        c["out_of_range"] += f_bad
        return ev, c

    parts: list[Events] = []
    for ev, c in map_csv(path, columns, block, source, where, block_mb=block_mb):
        parts.append(ev)
        for k, v in c.items():
            counts[k] = counts.get(k, 0) + v
    out = Events.concat(parts)
    counts["events"] = len(out)
    return out


def _seconds(text: pa.Array, path: Path, source: str, where: str) -> np.ndarray:
    """``YYYY-MM-DD HH:MM:SS`` (or ISO 8601) text as int64 seconds; nulls as the int64 minimum."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        ts = pc.cast(text, pa.timestamp("s"))
    except pa.ArrowInvalid as exc:
        raise DataFormatError(f"{source}: {path.name} has a chart time that is not a date and time "
                              f"({str(exc).splitlines()[0]}); {where}") from None
    return ts.cast(pa.int64()).fill_null(np.iinfo(np.int64).min).to_numpy()


def _cohort(source: str, stay: np.ndarray, died: np.ndarray, los: np.ndarray, age: np.ndarray,
            intime: np.ndarray, min_hours: float, counts: dict[str, int]) -> np.ndarray:
    """The rows kept: adults with a known length of stay of at least ``min_hours``."""
    aged = np.isfinite(age)
    adult = aged & (age >= 18)
    counts["unknown_age"] = int((~aged).sum())  # no DOB / anchor row: cannot be checked as an adult
    counts["minors"] = int((aged & ~adult).sum())
    known = np.isfinite(los) & (died >= 0) & (intime != np.iinfo(np.int64).min)
    counts["unknown_outcome"] = int((adult & ~known).sum())
    long_enough = known & (los * 24.0 >= min_hours)
    counts["short_stays"] = int((adult & known & ~long_enough).sum())
    counts["stays"] = int((adult & long_enough).sum())
    return adult & long_enough


def read_mimic3(root: str | Path, window: int = 24, min_stay_hours: float | None = None,
                block_mb: int = 16) -> Cohort:
    """MIMIC-III v1.4: ``ICUSTAYS``, ``ADMISSIONS``, ``PATIENTS`` and ``CHARTEVENTS`` (``.csv`` or
    ``.csv.gz``) in ``root``; see the module docstring."""
    import pyarrow as pa

    root = Path(root)
    src = "MIMIC-III"
    t = _tables(root, {"icu": "ICUSTAYS", "adm": "ADMISSIONS", "pat": "PATIENTS", "chart": "CHARTEVENTS"},
                MIMIC3_WHERE, src)
    ts = pa.timestamp("s")
    icu = _read_small(t["icu"], {"icustay_id": pa.int64(), "hadm_id": pa.int64(), "subject_id": pa.int64(),
                                 "intime": ts, "los": pa.float64()}, src, MIMIC3_WHERE)
    adm = _read_small(t["adm"], {"hadm_id": pa.int64(), "hospital_expire_flag": pa.int64()}, src,
                      MIMIC3_WHERE)
    pat = _read_small(t["pat"], {"subject_id": pa.int64(), "dob": ts}, src, MIMIC3_WHERE)
    died = _lookup(adm["hadm_id"], adm["hospital_expire_flag"], icu["hadm_id"], -1)
    dob = _lookup(pat["subject_id"], pat["dob"], icu["subject_id"], np.iinfo(np.int64).min)
    # years between DOB and ICU admission (MIMIC-III shifts the DOB of patients over 89 to ~300 years)
    age = np.where(dob == np.iinfo(np.int64).min, np.nan, (icu["intime"] - dob) / (365.2425 * 86400.0))
    return _assemble("mimic3", src, MIMIC3_WHERE, t, icu, "icustay_id", "ICUSTAY_ID", died, age, window,
                     min_stay_hours, MIMIC3_ITEMS, "error", block_mb)


def read_mimic4(root: str | Path, window: int = 24, min_stay_hours: float | None = None,
                block_mb: int = 16) -> Cohort:
    """MIMIC-IV: ``icu/icustays``, ``icu/chartevents``, ``hosp/admissions``, ``hosp/patients``
    (``.csv.gz`` or ``.csv``), keyed by ``stay_id``; age is ``anchor_age`` moved to the year of ICU
    admission. See the module docstring."""
    import pyarrow as pa

    root = Path(root)
    src = "MIMIC-IV"
    t = _tables(root, {"icu": "icu/icustays", "chart": "icu/chartevents", "adm": "hosp/admissions",
                       "pat": "hosp/patients"}, MIMIC4_WHERE, src)
    ts = pa.timestamp("s")
    icu = _read_small(t["icu"], {"stay_id": pa.int64(), "hadm_id": pa.int64(), "subject_id": pa.int64(),
                                 "intime": ts, "los": pa.float64()}, src, MIMIC4_WHERE)
    adm = _read_small(t["adm"], {"hadm_id": pa.int64(), "hospital_expire_flag": pa.int64()}, src,
                      MIMIC4_WHERE)
    pat = _read_small(t["pat"], {"subject_id": pa.int64(), "anchor_age": pa.float64(),
                                 "anchor_year": pa.int64()}, src, MIMIC4_WHERE)
    died = _lookup(adm["hadm_id"], adm["hospital_expire_flag"], icu["hadm_id"], -1)
    anchor_age = _lookup(pat["subject_id"], pat["anchor_age"], icu["subject_id"], np.nan)
    anchor_year = _lookup(pat["subject_id"], pat["anchor_year"], icu["subject_id"], -1)
    intime = icu["intime"].astype("datetime64[s]")  # the int64 minimum (no intime) is NaT
    years = np.where(np.isnat(intime), np.nan, intime.astype("datetime64[Y]").astype(np.int64) + 1970.0)
    age = np.where(anchor_year < 0, np.nan, anchor_age + (years - anchor_year))
    return _assemble("mimic4", src, MIMIC4_WHERE, t, icu, "stay_id", "stay_id", died, age, window,
                     min_stay_hours, MIMIC4_ITEMS, None, block_mb)


def _assemble(source: str, src: str, where: str, t: dict[str, Path], icu: dict[str, np.ndarray], key: str,
              key_name: str, died: np.ndarray, age: np.ndarray, window: int, min_stay_hours: float | None,
              items: dict[str, tuple[int, ...]], error_col: str | None, block_mb: int) -> Cohort:
    """What both MIMIC readers do once the stays' labels and ages are known: the cohort filter,
    stays sorted by ``key``, the chart events streamed, the :class:`Cohort`."""
    counts: dict[str, int] = {"stays_read": len(icu[key])}
    window = int(window)
    keep = _cohort(src, icu[key], died, icu["los"], age, icu["intime"],
                   float(window if min_stay_hours is None else min_stay_hours), counts)
    order = np.argsort(icu[key][keep], kind="stable")
    stay_ids = icu[key][keep][order]
    if len(np.unique(stay_ids)) != len(stay_ids):
        article = "an" if key_name[0] in "AEIOU" else "a"
        raise DataFormatError(f"{src}: {t['icu'].name} lists {article} {key_name} twice; {where}")
    events = read_chart_events(t["chart"], key, stay_ids, icu["intime"][keep][order], window, items, src,
                               where, error_col=error_col, counts=counts, block_mb=block_mb)
    return Cohort(source=source, stay_ids=stay_ids, mortality=died[keep][order].astype(np.int8),
                  los_days=icu["los"][keep][order].astype(np.float32), events=events,
                  files=list(t.values()), counts=counts)


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray, missing: float) -> np.ndarray:
    """``values`` at ``keys == query`` per query (the first match), ``missing`` where none."""
    order = np.argsort(keys, kind="stable")
    k, v = keys[order], values[order]
    pos = np.minimum(np.searchsorted(k, query), max(len(k) - 1, 0))
    found = (k[pos] == query) if len(k) else np.zeros(len(query), bool)
    out = np.where(found, v[pos] if len(k) else missing, missing)
    return out.astype(np.float64 if isinstance(missing, float) and np.isnan(missing) else values.dtype)


# --------------------------------------------------------------------------- synthetic MIMIC-III


@dataclass(frozen=True)
class SyntheticMimic:
    """A synthetic MIMIC-III (see :func:`write_synthetic_mimic3`)."""

    n_stays: int = 2000
    positive_rate: float = 0.10
    #: share of the deaths whose signal is the rare pattern (late respiratory failure) instead of the
    #: common one (a shock trend)
    rare_share: float = 0.35
    #: share of survivors with a transient, recovering blood-pressure dip (a confounder)
    survivor_dips: float = 0.15
    #: how strongly the two deterioration patterns (and the survivors' dips) show, 1 = the
    #: effect sizes written in :func:`synthetic_trajectories`
    signal: float = 1.0
    #: hours charted past the window (outside-window rows the reader must drop)
    extra_hours: int = 12
    window: int = 24
    seed: int = 0


SYNTHETIC_VERSION = 1
_CHART_COLUMNS = ("ROW_ID", "SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "ITEMID", "CHARTTIME", "STORETIME", "CGID",
                  "VALUE", "VALUENUM", "VALUEUOM", "WARNING", "ERROR", "RESULTSTATUS", "STOPPED")
# one item per channel and charting system (CareVue, MetaVision); temperature in F on half the stays
_CV = {"heart_rate": 211, "sbp": 51, "dbp": 8368, "mbp": 52, "resp_rate": 618, "spo2": 646}
_MV = {"heart_rate": 220045, "sbp": 220050, "dbp": 220051, "mbp": 220052, "resp_rate": 220210, "spo2": 220277}
_NIBP_MV = {"sbp": 220179, "dbp": 220180, "mbp": 220181}
_NIBP_CV = {"sbp": 455, "dbp": 8441, "mbp": 456}
_UOM = {"heart_rate": "bpm", "sbp": "mmHg", "dbp": "mmHg", "mbp": "mmHg", "resp_rate": "insp/min",
        "spo2": "%", "temperature": "?F"}
# charting interval in hours per channel (vitals hourly, temperature every 4 h)
_EVERY = {"heart_rate": 1.0, "sbp": 1.0, "dbp": 1.0, "mbp": 1.0, "resp_rate": 1.0, "spo2": 1.0,
          "temperature": 4.0}


def _fmt(ts: np.ndarray) -> list[str]:
    epoch = dt.datetime(1970, 1, 1)
    return [(epoch + dt.timedelta(seconds=int(s))).strftime("%Y-%m-%d %H:%M:%S") for s in ts]


def synthetic_trajectories(cfg: SyntheticMimic, rng: np.random.Generator, n_hours: int
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, died, pattern)``: latent hourly vitals ``(n, n_hours, 7)`` in canonical units, the
    outcome, and the pattern per stay (0 none, 1 shock trend, 2 late respiratory failure, 3 a
    survivor's recovering dip). The outcome is rare; a third of its signal is the rare pattern."""
    n = cfg.n_stays
    died = rng.random(n) < cfg.positive_rate
    rare = died & (rng.random(n) < cfg.rare_share)
    dip = ~died & (rng.random(n) < cfg.survivor_dips)
    pattern = np.where(rare, 2, np.where(died, 1, np.where(dip, 3, 0)))
    base = np.stack([rng.normal(86, 13, n), rng.normal(121, 16, n), rng.normal(62, 9, n), np.zeros(n),
                     rng.normal(18, 3.5, n), rng.normal(36.9, 0.45, n), rng.normal(97.2, 1.3, n)], axis=1)
    # AR(1) hour-to-hour wander per channel (the charted noise around a stay's baseline)
    scale = np.array([4.0, 6.0, 4.0, 0.0, 1.6, 0.18, 0.7])
    wander = np.zeros((n, n_hours, 7))
    e = rng.normal(size=(n, n_hours, 7)) * scale
    for h in range(n_hours):
        wander[:, h] = (0.8 * wander[:, h - 1] if h else 0) + e[:, h]
    x = base[:, None, :] + wander
    hours = np.arange(n_hours)[None, :]
    w = cfg.window
    # pattern 1: a shock trend over the window, starting at a random hour in its first half
    start = rng.uniform(0, w / 2, n)[:, None]
    ramp = np.clip((hours - start) / (w - start), 0, None)  # 0 -> ~1 at the window's end
    sev = rng.uniform(0.6, 1.2, n)[:, None] * cfg.signal
    s1 = (pattern == 1)[:, None] * ramp * sev
    x[..., 1] -= 28 * s1
    x[..., 2] -= 14 * s1
    x[..., 0] += 22 * s1
    # pattern 2: late respiratory failure, its last 8 hours: fast breathing, falling SpO2, fever
    late = np.clip((hours - (w - 8 - rng.uniform(0, 2, n)[:, None])) / 8.0, 0, None)
    s2 = (pattern == 2)[:, None] * late * sev
    x[..., 4] += 11 * s2
    x[..., 6] -= 7 * s2
    x[..., 5] += 1.3 * s2
    x[..., 0] += 8 * s2
    # pattern 3: a survivor's transient dip in blood pressure that recovers within ~6 hours
    mid = rng.uniform(4, w - 6, n)[:, None]
    bump = np.exp(-0.5 * ((hours - mid) / 2.0) ** 2)
    s3 = (pattern == 3)[:, None] * bump * sev
    x[..., 1] -= 26 * s3
    x[..., 2] -= 12 * s3
    x[..., 0] += 14 * s3
    x[..., 3] = (x[..., 1] + 2 * x[..., 2]) / 3 + rng.normal(0, 2.0, (n, n_hours))
    x[..., 6] = np.minimum(x[..., 6], 100.0)
    return x, died, pattern


def write_synthetic_mimic3(out_dir: str | Path, cfg: SyntheticMimic | None = None) -> Path:
    """Write ``PATIENTS``, ``ADMISSIONS``, ``ICUSTAYS`` and ``CHARTEVENTS`` (MIMIC-III v1.4 file names,
    columns and vital item ids) to ``out_dir`` and return it. Half the stays are CareVue (old ids),
    half MetaVision; half chart temperature in Fahrenheit; charting is irregular (jittered times,
    skipped hours, some stays without a channel), with rare charting errors (out-of-range values,
    ``ERROR = 1`` rows) and rows past the window; about ``positive_rate`` die in hospital, through
    one of two deterioration patterns, the rarer late in the window (:func:`synthetic_trajectories`).
    A tenth of the stays are shorter than the window and a few patients are minors."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    cfg = cfg or SyntheticMimic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    n, w = cfg.n_stays, cfg.window
    n_hours = w + cfg.extra_hours
    x, died, _ = synthetic_trajectories(cfg, rng, n_hours)
    subject = 10000 + np.arange(n) * 3 + rng.integers(0, 3, n)
    hadm = 100000 + np.arange(n) * 7 + rng.integers(0, 7, n)
    icustay = 200000 + rng.permutation(n * 5)[:n]
    start = (dt.datetime(2101, 1, 1) - dt.datetime(1970, 1, 1)).total_seconds()
    intime = start + rng.integers(0, 90 * 365, n) * 86400.0
    intime = (intime + rng.integers(0, 86400, n)).astype(np.int64)
    los = np.where(rng.random(n) < 0.1, rng.uniform(0.2, w / 24 * 0.95, n),
                   w / 24 + rng.lognormal(0.6, 0.8, n)).astype(np.float64)
    age = np.where(rng.random(n) < 0.01, rng.uniform(1, 17, n), rng.uniform(19, 89, n))
    dob = intime - (age * 365.2425 * 86400).astype(np.int64)
    metavision = rng.random(n) < 0.5
    admit = intime - rng.integers(1, 72, n) * 3600
    disch = intime + (los * 86400).astype(np.int64) + rng.integers(1, 200, n) * 3600

    def table(name: str, header: list[str], rows: Iterator[list[object]]) -> None:
        with open(out / f"{name}.csv", "w", newline="") as fh:
            wr = csv.writer(fh, quoting=csv.QUOTE_MINIMAL)
            wr.writerow(header)
            wr.writerows(rows)

    fmt_dob, fmt_in, fmt_admit, fmt_disch = _fmt(dob), _fmt(intime), _fmt(admit), _fmt(disch)
    fmt_out = _fmt(intime + (los * 86400).astype(np.int64))
    table("PATIENTS", ["ROW_ID", "SUBJECT_ID", "GENDER", "DOB", "DOD", "DOD_HOSP", "DOD_SSN", "EXPIRE_FLAG"],
          ([i + 1, subject[i], "MF"[i % 2], fmt_dob[i], fmt_disch[i] if died[i] else "",
            fmt_disch[i] if died[i] else "", "", int(died[i])] for i in range(n)))
    table("ADMISSIONS", ["ROW_ID", "SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME", "DEATHTIME",
                         "ADMISSION_TYPE", "ADMISSION_LOCATION", "DISCHARGE_LOCATION", "INSURANCE",
                         "LANGUAGE",
                         "RELIGION", "MARITAL_STATUS", "ETHNICITY", "EDREGTIME", "EDOUTTIME", "DIAGNOSIS",
                         "HOSPITAL_EXPIRE_FLAG", "HAS_CHARTEVENTS_DATA"],
          ([i + 1, subject[i], hadm[i], fmt_admit[i], fmt_disch[i], fmt_disch[i] if died[i] else "",
            "EMERGENCY", "EMERGENCY ROOM ADMIT", "DEAD/EXPIRED" if died[i] else "HOME", "Medicare", "ENGL",
            "", "", "WHITE", "", "", "SEPSIS", int(died[i]), 1] for i in range(n)))
    table("ICUSTAYS", ["ROW_ID", "SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "DBSOURCE", "FIRST_CAREUNIT",
                       "LAST_CAREUNIT", "FIRST_WARDID", "LAST_WARDID", "INTIME", "OUTTIME", "LOS"],
          ([i + 1, subject[i], hadm[i], icustay[i], "metavision" if metavision[i] else "carevue", "MICU",
            "MICU", 52, 52, fmt_in[i], fmt_out[i], f"{los[i]:.4f}"] for i in range(n)))

    # charted rows: one per channel and charting time, jittered around the hour, some hours skipped
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("stay", "item", "t", "v", "err")}
    fahrenheit = rng.random(n) < 0.5
    invasive = rng.random(n) < 0.4
    for c, name in enumerate(CHANNELS):
        every = _EVERY[name]
        slots = np.arange(0, n_hours, every)
        ss, hh = np.meshgrid(np.arange(n), slots, indexing="ij")
        ss, hh = ss.ravel(), hh.ravel()
        t = hh + rng.uniform(0, every, len(hh)) * 0.9
        keep = rng.random(len(t)) > 0.12  # skipped charting
        keep &= ~np.repeat(rng.random(n) < 0.03, len(slots))  # a few stays never chart this channel
        keep &= t / 24.0 < los[ss]  # nothing charted after discharge
        ss, t = ss[keep], t[keep]
        jitter = rng.normal(0, 0.3 * [4, 6, 4, 3, 1, 0.1, 0.4][c], len(t))  # measurement noise
        v = x[ss, np.minimum(t.astype(int), n_hours - 1), c] + jitter
        if name == "temperature":
            f = fahrenheit[ss]
            v = np.where(f, v * 1.8 + 32, v)
            item = np.where(f, np.where(metavision[ss], 223761, 678), np.where(metavision[ss], 223762, 676))
        elif name in ("sbp", "dbp", "mbp"):
            inv = invasive[ss]
            item = np.where(metavision[ss], np.where(inv, _MV[name], _NIBP_MV[name]),
                            np.where(inv, _CV[name], _NIBP_CV[name]))
        else:
            item = np.where(metavision[ss], _MV[name], _CV[name])
        if name == "spo2":
            v = np.minimum(v, 100.0)
        glitch = rng.random(len(v)) < 0.002  # charting errors: a zero, or a misplaced decimal
        v = np.where(glitch, np.where(rng.random(len(v)) < 0.5, 0.0, v * 10), v)
        err = (metavision[ss] & (rng.random(len(v)) < 0.002)).astype(np.int8)
        cols["stay"].append(ss)
        cols["item"].append(item)
        cols["t"].append(t)
        cols["v"].append(np.round(v, 1))
        cols["err"].append(err)
    # other charted items (not vitals) that the reader must skip: GCS, FiO2, a text-only item
    k = n * 20
    ss = rng.integers(0, n, k)
    cols["stay"].append(ss)
    cols["item"].append(rng.choice([198, 223900, 223835, 3420, 227969], k))
    cols["t"].append(rng.uniform(0, n_hours, k))
    cols["v"].append(rng.integers(3, 16, k).astype(float))
    cols["err"].append(np.zeros(k, np.int8))
    stay = np.concatenate(cols["stay"])
    t_s = intime[stay] + (np.concatenate(cols["t"]) * 3600).astype(np.int64)
    order = np.lexsort((t_s, stay))
    stay, t_s = stay[order], t_s[order]
    item = np.concatenate(cols["item"])[order]
    v = np.concatenate(cols["v"])[order]
    err = np.concatenate(cols["err"])[order]
    mv = metavision[stay]
    m = len(stay)
    ts = pa.array(t_s * 1_000_000_000, type=pa.timestamp("ns")).cast(pa.timestamp("s"))
    value_text = pa.array(np.char.mod("%g", v))
    tbl = pa.table({
        "ROW_ID": pa.array(np.arange(1, m + 1)),
        "SUBJECT_ID": pa.array(subject[stay]),
        "HADM_ID": pa.array(hadm[stay]),
        "ICUSTAY_ID": pa.array(icustay[stay]),
        "ITEMID": pa.array(item),
        "CHARTTIME": ts,
        "STORETIME": pa.array((t_s + 600) * 1_000_000_000, type=pa.timestamp("ns")).cast(pa.timestamp("s")),
        "CGID": pa.array(rng.integers(14000, 21000, m)),
        "VALUE": value_text,
        "VALUENUM": pa.array(v),
        "VALUEUOM": pa.array(_uoms(item)),
        "WARNING": pa.array(np.where(mv, "0", ""), type=pa.string()),
        "ERROR": pa.array(np.where(mv, err.astype(str), ""), type=pa.string()),
        "RESULTSTATUS": pa.array(np.where(mv, "", "Manual"), type=pa.string()),
        "STOPPED": pa.array(np.where(mv, "", "NotStopd"), type=pa.string()),
    })
    pacsv.write_csv(tbl, out / "CHARTEVENTS.csv",
                    pacsv.WriteOptions(quoting_style="needed", include_header=True))
    return out


def _uoms(item: np.ndarray) -> np.ndarray:
    """MIMIC-III's VALUEUOM of each item id ("" for the non-vital items)."""
    lut = _item_lut(MIMIC3_ITEMS)
    ch = np.where(item < len(lut), lut[np.minimum(item, len(lut) - 1)], -1)
    names = np.array([_UOM[c] for c in CHANNELS] + [""], dtype=object)
    out = names[np.where(ch >= 0, ch, len(CHANNELS))]
    out[np.isin(item, [676, 223762])] = "?C"
    return out.astype(str)
