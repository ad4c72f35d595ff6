"""Readers that turn a clinical database's files into a :class:`~harness.datasets.clinical_grid.Cohort`.

Layouts and sources (nothing is ever downloaded; the user points ``root`` at their own copy):

* :func:`read_eicu` (source ``"eicu"``): eICU-CRD 2.0, ``root/patient.csv[.gz]`` and
  ``root/vitalPeriodic.csv[.gz]``. Credentialed access on PhysioNet.
* :func:`read_mimic3_benchmarks` (source ``"mimic3-benchmarks"``): the per-subject folders the
  YerevaNN mimic3-benchmarks scripts write from MIMIC-III (itself credentialed access on
  PhysioNet), ``root/<subject_id>/episode{n}.csv`` and ``episode{n}_timeseries.csv``, or the split
  layout ``root/train/<subject_id>/...`` and ``root/test/<subject_id>/...``.
* :func:`read_physionet2012` (source ``"physionet2012"``): the PhysioNet/CinC Challenge 2012 (open
  access), ``root/set-a/<RecordID>.txt`` (also ``set-b``, ``set-c``) and ``root/Outcomes-a.txt``...

Common rules: stays are sorted by stay id; a stay whose ICU length of stay in hours is below
``min_stay_hours`` (default: the window) is dropped (``counts['short_stays']``); events keep
``0 <= hours < window`` (the rest are counted in ``counts['outside_window']`` before any range
check) and then go through :func:`make_events` (``counts['out_of_range']``). Empty cells are
missing values and are not counted. Every problem with the files is a :class:`DataFormatError`
whose one-line message names the file (and column / line) and where the data are obtained.

``counts`` keys (all readers, zero where not applicable): ``stays_read`` (stays in the source
tables), ``minors``, ``unknown_outcome``, ``unknown_los``, ``short_stays`` (stays dropped, each for
the first of these reasons that applies, in this order), ``stays`` (kept), ``outside_window``,
``out_of_range``, ``events`` (kept).
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np

from harness.datasets.clinical_grid import (
    CHANNELS,
    Cohort,
    Events,
    find_table,
    make_events,
    stream_csv,
)
from harness.errors import DataFormatError, UserError

EICU_WHERE = ("eICU-CRD is credentialed access on PhysioNet: https://physionet.org/content/eicu-crd/2.0/ "
              "(download it there yourself; nothing is downloaded)")
MIMIC3B_WHERE = ("mimic3-benchmarks' root/ is built from MIMIC-III (credentialed access on PhysioNet: "
                 "https://physionet.org/content/mimiciii/1.4/) by the scripts of "
                 "https://github.com/YerevaNN/mimic3-benchmarks (nothing is downloaded)")
P2012_WHERE = ("PhysioNet 2012 is open access: https://physionet.org/content/challenge-2012/1.0.0/ "
               "(download set-a/ and Outcomes-a.txt there yourself; nothing is downloaded)")

COUNT_KEYS: tuple[str, ...] = ("stays_read", "minors", "unknown_outcome", "unknown_los", "short_stays",
                               "no_value",
                               "stays", "outside_window", "out_of_range", "events")

#: eICU vitalPeriodic column per channel (CHANNELS order)
EICU_VITALS: tuple[str, ...] = ("heartrate", "systemicsystolic", "systemicdiastolic", "systemicmean",
                                "respiration", "temperature", "sao2")
#: mimic3-benchmarks timeseries column per channel (CHANNELS order)
MIMIC3B_VITALS: tuple[str, ...] = ("Heart Rate", "Systolic blood pressure", "Diastolic blood pressure",
                                   "Mean blood pressure", "Respiratory rate", "Temperature",
                                   "Oxygen saturation")
#: PhysioNet 2012 parameter -> channel index
P2012_PARAMS: dict[str, int] = {
    "HR": CHANNELS.index("heart_rate"),
    "SysABP": CHANNELS.index("sbp"), "NISysABP": CHANNELS.index("sbp"),
    "DiasABP": CHANNELS.index("dbp"), "NIDiasABP": CHANNELS.index("dbp"),
    "MAP": CHANNELS.index("mbp"), "NIMAP": CHANNELS.index("mbp"),
    "RespRate": CHANNELS.index("resp_rate"),
    "Temp": CHANNELS.index("temperature"),
    "SaO2": CHANNELS.index("spo2"),
}


# --------------------------------------------------------------------------------------------------
# shared steps
# --------------------------------------------------------------------------------------------------

def _start(root: str | Path, window: int, min_stay_hours: float | None, source: str,
           where: str) -> tuple[Path, float, dict[str, int]]:
    if int(window) != window or window < 1:
        raise UserError(f"the window must be a whole number of hours >= 1, got {window}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataFormatError(f"{source}: {root} is not a folder; {where}")
    min_hours = float(window) if min_stay_hours is None else float(min_stay_hours)
    return root, min_hours, dict.fromkeys(COUNT_KEYS, 0)


def _select(age: np.ndarray, los_days: np.ndarray, min_hours: float, known: np.ndarray,
            counts: dict[str, int], unknown_key: str = "unknown_outcome") -> np.ndarray:
    """The stays to keep: adults (age >= 18 where known; ``minors``), then ``known`` (else counted in
    ``counts[unknown_key]``), then a stay of at least ``min_hours`` (``short_stays``)."""
    minor = age < 18  # NaN (unknown age) compares False: kept
    counts["minors"] += int(minor.sum())
    counts[unknown_key] += int((~minor & ~known).sum())
    keep = ~minor & known
    short = keep & ~(los_days * 24.0 >= min_hours)
    counts["short_stays"] += int(short.sum())
    return keep & ~short


def _window_events(stay: np.ndarray, hours: np.ndarray, channel: np.ndarray, value: np.ndarray,
                   window: int, counts: dict[str, int]) -> Events:
    """Present (finite) values inside ``0 <= hours < window``, range-checked by make_events."""
    value = np.asarray(value, np.float64)
    hours = np.asarray(hours, np.float64)
    present = ~np.isnan(value)
    inside = (hours >= 0) & (hours < window)
    counts["outside_window"] += int((present & ~inside).sum())
    ok = present & inside
    return make_events(np.asarray(stay)[ok], hours[ok], np.asarray(channel)[ok], value[ok], counts)


def _check_unique(ids: np.ndarray, source: str, what: str, where: str) -> None:
    uniq, n = np.unique(ids, return_counts=True)
    if (n > 1).any():
        raise DataFormatError(f"{source}: stay id {int(uniq[n > 1][0])} appears more than once in {what}; "
                              f"{where}")


def _finish(source: str, ids: np.ndarray, mortality: np.ndarray, los_days: np.ndarray,
            parts: list[Events], files: list[Path], counts: dict[str, int]) -> Cohort:
    events = Events.concat(parts)
    counts["stays"] = len(ids)
    counts["events"] = len(events)
    return Cohort(source, np.asarray(ids, np.int64), np.asarray(mortality, np.int8),
                  np.asarray(los_days, np.float32), events, files, counts)


def _resolve(header: list[str], wanted: tuple[str, ...], path: Path, source: str, where: str) -> list[int]:
    """Indices of ``wanted`` columns in ``header`` (case-insensitive, stripped)."""
    lower = {h.strip().lower().lstrip("\ufeff"): j for j, h in enumerate(header)}
    missing = [w for w in wanted if w.lower() not in lower]
    if missing:
        raise DataFormatError(f"{source}: {path} lacks column(s) {', '.join(repr(m) for m in missing)}; "
                              f"{where}")
    return [lower[w.lower()] for w in wanted]


def _number(text: str, path: Path, line: int, column: str, source: str, where: str) -> float:
    """A float from a non-empty cell, or a DataFormatError naming the file, line and column."""
    try:
        return float(text)
    except ValueError:
        raise DataFormatError(f"{source}: {path} line {line}: {column} {text!r} is not a number; "
                              f"{where}") from None


def _integer(text: str, path: Path, line: int, column: str, source: str, where: str) -> int:
    v = _number(text, path, line, column, source, where) if text.strip() else float("nan")
    if not np.isfinite(v) or v != int(v):
        raise DataFormatError(f"{source}: {path} line {line}: {column} {text!r} is not an integer id; "
                              f"{where}")
    return int(v)


def _flag(text: str, path: Path, line: int, column: str, source: str, where: str) -> int:
    v = text.strip()
    if v in ("0", "1", "0.0", "1.0"):
        return int(float(v))
    raise DataFormatError(f"{source}: {path} line {line}: {column} {text!r} is not 0 or 1; {where}")


def _read_rows(path: Path, source: str, where: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a small plain CSV file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataFormatError(f"{source}: {path} cannot be read as a CSV ({exc}); {where}") from None
    if not rows:
        raise DataFormatError(f"{source}: {path} is empty: expected a CSV header line; {where}")
    return rows[0], rows[1:]


def _data_rows(header: list[str], rows: list[list[str]], path: Path, source: str, where: str):
    """``(line, row)`` of each non-empty row (file lines from 2), each as wide as the header."""
    for line, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise DataFormatError(f"{source}: {path} line {line} has {len(row)} fields, the header "
                                  f"{len(header)}; {where}")
        yield line, row


# --------------------------------------------------------------------------------------------------
# eICU-CRD
# --------------------------------------------------------------------------------------------------

def _stream(path: Path, columns: dict[str, object]):
    """:func:`stream_csv` of an eICU table (its parse errors name the column)."""
    yield from stream_csv(path, columns, "eicu", EICU_WHERE)


def _first_null(column, row0: int) -> int | None:
    """The file line of ``column``'s first null (row0 = rows before this batch), or None."""
    if column.null_count == 0:
        return None
    return row0 + int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0]) + 2


def read_eicu(root: str | Path, window: int = 24, min_stay_hours: float | None = None) -> Cohort:
    """eICU-CRD 2.0: ``root/patient.csv[.gz]`` and ``root/vitalPeriodic.csv[.gz]``.

    patient: ``patientunitstayid``, ``age`` (``"> 89"`` is 90, empty is unknown),
    ``unitdischargeoffset`` (minutes from unit admission; ``los_days`` = it / 1440) and
    ``hospitaldischargestatus`` (``Expired`` = died; empty drops the stay, ``unknown_outcome``).
    Adults only (age >= 18 where known, ``minors``).

    vitalPeriodic (about 146 million rows) is streamed with pyarrow in bounded memory:
    ``observationoffset`` (minutes) / 60 are the hours; channels from ``heartrate``,
    ``systemicsystolic``, ``systemicdiastolic``, ``systemicmean`` (invasive arterial pressure only:
    the noninvasive cuff pressures of vitalAperiodic are not read), ``respiration``,
    ``temperature`` (Celsius) and ``sao2`` (the pulse oximeter's SpO2). Rows of stays outside the
    cohort are skipped.
    """
    import pyarrow as pa

    root, min_hours, counts = _start(root, window, min_stay_hours, "eicu", EICU_WHERE)
    patient = find_table(root, ("patient.csv", "patient.csv.gz"), "eicu", EICU_WHERE)
    vital = find_table(root, ("vitalPeriodic.csv", "vitalPeriodic.csv.gz"), "eicu", EICU_WHERE)

    pcols = {"patientunitstayid": pa.int64(), "age": pa.string(), "unitdischargeoffset": pa.float64(),
             "hospitaldischargestatus": pa.string()}
    ids_l, age_l, los_l, mort_l, known_l = [], [], [], [], []
    row0 = 0
    for batch in _stream(patient, pcols):
        for j, name in ((0, "patientunitstayid"), (2, "unitdischargeoffset")):
            line = _first_null(batch.column(j), row0)
            if line is not None:
                raise DataFormatError(f"eicu: {patient} line {line}: {name} is empty; {EICU_WHERE}")
        ids_l.append(batch.column(0).to_numpy())
        los_l.append(batch.column(2).to_numpy() / 1440.0)
        ages = np.full(batch.num_rows, np.nan)
        for i, a in enumerate(batch.column(1).to_pylist()):
            s = (a or "").strip()
            if not s:
                continue
            if s.replace(" ", "") == ">89":
                ages[i] = 90.0
            else:
                try:
                    ages[i] = float(s)
                except ValueError:
                    raise DataFormatError(f"eicu: {patient} line {row0 + i + 2}: age {a!r} is not a number "
                                          f"or '> 89'; {EICU_WHERE}") from None
        age_l.append(ages)
        mort = np.zeros(batch.num_rows, np.int8)
        known = np.ones(batch.num_rows, bool)
        for i, st in enumerate(batch.column(3).to_pylist()):
            s = (st or "").strip().lower()
            if s == "expired":
                mort[i] = 1
            elif not s:
                known[i] = False
            elif s != "alive":
                raise DataFormatError(f"eicu: {patient} line {row0 + i + 2}: hospitaldischargestatus {st!r} "
                                      f"is not Alive, Expired or empty; {EICU_WHERE}")
        mort_l.append(mort)
        known_l.append(known)
        row0 += batch.num_rows
    if row0 == 0:
        raise DataFormatError(f"eicu: {patient} has no rows; {EICU_WHERE}")
    ids, age, los, mort, known = (np.concatenate(x) for x in (ids_l, age_l, los_l, mort_l, known_l))
    _check_unique(ids, "eicu", str(patient), EICU_WHERE)
    counts["stays_read"] = len(ids)
    keep = _select(age, los, min_hours, known, counts)
    order = np.argsort(ids[keep], kind="stable")
    ids, mort, los = ids[keep][order], mort[keep][order], los[keep][order]

    vcols = {"patientunitstayid": pa.int64(), "observationoffset": pa.float64(),
             **{c: pa.float64() for c in EICU_VITALS}}
    parts: list[Events] = []
    row0 = 0
    n = len(ids)
    for batch in _stream(vital, vcols):
        for j, name in ((0, "patientunitstayid"), (1, "observationoffset")):
            line = _first_null(batch.column(j), row0)
            if line is not None:
                raise DataFormatError(f"eicu: {vital} line {line}: {name} is empty; {EICU_WHERE}")
        row0 += batch.num_rows
        sid = batch.column(0).to_numpy()
        pos = np.searchsorted(ids, sid)
        found = pos < n
        found[found] = ids[pos[found]] == sid[found]
        rows = np.flatnonzero(found)
        if rows.size == 0:
            continue
        hours = batch.column(1).to_numpy()[rows] / 60.0
        vals = np.stack([batch.column(2 + c).to_numpy(zero_copy_only=False)[rows]
                         for c in range(len(EICU_VITALS))], axis=1)
        r, c = np.nonzero(~np.isnan(vals))
        parts.append(_window_events(pos[rows][r], hours[r], c, vals[r, c], window, counts))
    return _finish("eicu", ids, mort, los, parts, [patient, vital], counts)


# --------------------------------------------------------------------------------------------------
# mimic3-benchmarks (YerevaNN)
# --------------------------------------------------------------------------------------------------

_EPISODE = re.compile(r"episode(\d+)\.csv")


def _subject_dirs(root: Path) -> list[Path]:
    bases = [root] + [root / s for s in ("train", "test") if (root / s).is_dir()]
    out: list[Path] = []
    for base in bases:
        with os.scandir(base) as it:
            out += sorted((Path(e.path) for e in it if e.name.isdigit() and e.is_dir()),
                          key=lambda p: int(p.name))
    return out


def _read_episode(path: Path) -> tuple[int, float, float, int]:
    """(Icustay, Age, Length of Stay, Mortality) from an ``episode{n}.csv``."""
    src, where = "mimic3-benchmarks", MIMIC3B_WHERE
    header, rows = _read_rows(path, src, where)
    cols = ("Icustay", "Age", "Length of Stay", "Mortality")
    idx = _resolve(header, cols, path, src, where)
    if not rows or not any(c.strip() for c in rows[0]):
        raise DataFormatError(f"{src}: {path} has no data line under its header; {where}")
    row = rows[0]
    if len(row) != len(header):
        raise DataFormatError(f"{src}: {path} line 2 has {len(row)} fields, the header {len(header)}; "
                              f"{where}")
    stay = _integer(row[idx[0]], path, 2, "Icustay", src, where)
    age = _number(row[idx[1]], path, 2, "Age", src, where) if row[idx[1]].strip() else float("nan")
    if not row[idx[2]].strip():
        raise DataFormatError(f"{src}: {path} line 2: Length of Stay is empty; {where}")
    los = _number(row[idx[2]], path, 2, "Length of Stay", src, where)
    mort = _flag(row[idx[3]], path, 2, "Mortality", src, where)
    return stay, age, los, mort


def _read_timeseries(path: Path, stay: int, window: int, counts: dict[str, int]) -> Events:
    src, where = "mimic3-benchmarks", MIMIC3B_WHERE
    header, rows = _read_rows(path, src, where)
    idx = _resolve(header, ("Hours", *MIMIC3B_VITALS), path, src, where)
    hours, channel, value = [], [], []
    for line, row in _data_rows(header, rows, path, src, where):
        h = None
        for c, j in enumerate(idx[1:]):
            cell = row[j]
            if not cell.strip():
                continue
            if h is None:
                if not row[idx[0]].strip():
                    raise DataFormatError(f"{src}: {path} line {line}: Hours is empty; {where}")
                h = _number(row[idx[0]], path, line, "Hours", src, where)
            hours.append(h)
            channel.append(c)
            value.append(_number(cell, path, line, repr(MIMIC3B_VITALS[c]), src, where))
    return _window_events(np.full(len(hours), stay, np.int64), np.array(hours, np.float64),
                          np.array(channel, np.int8), np.array(value, np.float64), window, counts)


def read_mimic3_benchmarks(root: str | Path, window: int = 48,
                           min_stay_hours: float | None = None) -> Cohort:
    """mimic3-benchmarks' per-subject folders: ``root/<subject_id>/episode{n}.csv`` (``Icustay``,
    ``Age``, ``Length of Stay`` in days, ``Mortality`` in hospital 0 / 1, ...) and
    ``episode{n}_timeseries.csv`` (``Hours`` since ICU admission and the vitals, Temperature
    already in Celsius; other columns are ignored, empty cells are missing). Subjects are read
    from ``root`` and from ``root/train`` and ``root/test`` when present. The stay id is
    ``Icustay``; adults only (age >= 18 where known, ``minors``).
    """
    src, where = "mimic3-benchmarks", MIMIC3B_WHERE
    root, min_hours, counts = _start(root, window, min_stay_hours, src, where)
    subjects = _subject_dirs(root)
    if not subjects:
        raise DataFormatError(f"{src}: {root} has no subject folders (<subject_id>/, or train/<subject_id>/ "
                              f"and test/<subject_id>/); {where}")
    episodes: list[tuple[Path, Path]] = []
    for d in subjects:
        with os.scandir(d) as it:
            names = {e.name for e in it}
        found = sorted((int(m.group(1)), m.group(0)) for m in map(_EPISODE.fullmatch, names) if m)
        for n, name in found:
            ts = f"episode{n}_timeseries.csv"
            if ts not in names:
                raise DataFormatError(f"{src}: {d / name} has no matching {d / ts}; {where}")
            episodes.append((d / name, d / ts))
    if not episodes:
        raise DataFormatError(f"{src}: the subject folders under {root} hold no episode{{n}}.csv; {where}")
    info = [_read_episode(ep) for ep, _ in episodes]
    ids = np.array([i[0] for i in info], np.int64)
    age = np.array([i[1] for i in info], np.float64)
    los = np.array([i[2] for i in info], np.float64)
    mort = np.array([i[3] for i in info], np.int8)
    if len(np.unique(ids)) < len(ids):
        uniq, n = np.unique(ids, return_counts=True)
        dup = int(uniq[n > 1][0])
        paths = [str(episodes[k][0]) for k in np.flatnonzero(ids == dup)]
        raise DataFormatError(f"{src}: Icustay {dup} appears in more than one episode file "
                              f"({', '.join(paths)}); {where}")
    counts["stays_read"] = len(ids)
    keep = np.flatnonzero(_select(age, los, min_hours, np.ones(len(ids), bool), counts))
    keep = keep[np.argsort(ids[keep], kind="stable")]
    parts = [_read_timeseries(episodes[k][1], i, window, counts) for i, k in enumerate(keep)]
    files = [ep for ep, _ in episodes] + [episodes[k][1] for k in keep]
    return _finish(src, ids[keep], mort[keep], los[keep], parts, files, counts)


# --------------------------------------------------------------------------------------------------
# PhysioNet/CinC Challenge 2012
# --------------------------------------------------------------------------------------------------

_SET = re.compile(r"set-([a-z])")


def _read_outcomes(path: Path) -> dict[int, tuple[float, int, int]]:
    """RecordID -> (Length_of_stay, In-hospital_death, line)."""
    src, where = "physionet2012", P2012_WHERE
    header, rows = _read_rows(path, src, where)
    ji, jl, jd = _resolve(header, ("RecordID", "Length_of_stay", "In-hospital_death"), path, src, where)
    out: dict[int, tuple[float, int, int]] = {}
    for line, row in _data_rows(header, rows, path, src, where):
        rid = _integer(row[ji], path, line, "RecordID", src, where)
        if rid in out:
            raise DataFormatError(f"{src}: {path} line {line}: RecordID {rid} appears twice; {where}")
        los = _number(row[jl], path, line, "Length_of_stay", src, where)
        out[rid] = (los, _flag(row[jd], path, line, "In-hospital_death", src, where), line)
    return out


def _hours(text: str, path: Path, line: int) -> float:
    h, sep, m = text.strip().partition(":")
    if sep and h.isdigit() and m.isdigit() and len(m) == 2 and int(m) < 60:
        return int(h) + int(m) / 60.0
    raise DataFormatError(f"physionet2012: {path} line {line}: Time {text!r} is not hh:mm; {P2012_WHERE}")


def _read_record(path: Path) -> tuple[int, list[float], list[int], list[float]]:
    """(RecordID, hours, channel, value) of one record file; unknown parameters are skipped."""
    src, where = "physionet2012", P2012_WHERE
    header, rows = _read_rows(path, src, where)
    jt, jp, jv = _resolve(header, ("Time", "Parameter", "Value"), path, src, where)
    rid: int | None = None
    hours: list[float] = []
    channel: list[int] = []
    value: list[float] = []
    for line, row in _data_rows(header, rows, path, src, where):
        h = _hours(row[jt], path, line)
        param = row[jp].strip()
        if param == "RecordID":
            rid = _integer(row[jv], path, line, "RecordID", src, where)
        elif param in P2012_PARAMS:
            hours.append(h)
            channel.append(P2012_PARAMS[param])
            value.append(_number(row[jv], path, line, param, src, where))
    if rid is None:
        raise DataFormatError(f"{src}: {path} has no RecordID line (e.g. 00:00,RecordID,132539); {where}")
    return rid, hours, channel, value


def read_physionet2012(root: str | Path, window: int = 48, min_stay_hours: float | None = None) -> Cohort:
    """PhysioNet/CinC Challenge 2012: ``root/set-a/*.txt`` (and ``set-b``, ``set-c`` when present),
    each ``Time,Parameter,Value`` with ``hh:mm`` since ICU admission, and per set
    ``root/Outcomes-a.txt`` (``RecordID``, ``Length_of_stay`` in days, ``In-hospital_death``, ...).

    The stay id is ``RecordID``. Channels: HR; SysABP / NISysABP; DiasABP / NIDiasABP; MAP / NIMAP;
    RespRate; Temp (Celsius); SaO2, the arterial oxygen saturation, which is the closest channel to
    SpO2. The value -1 means missing in this data set and fails the range check (``out_of_range``).
    A negative ``Length_of_stay`` is unknown: the stay is dropped (``unknown_los``). All patients
    are adults by the challenge's selection; no age filter is applied.
    """
    src, where = "physionet2012", P2012_WHERE
    root, min_hours, counts = _start(root, window, min_stay_hours, src, where)
    sets = sorted(p for p in root.iterdir() if _SET.fullmatch(p.name) and p.is_dir())
    if not sets:
        raise DataFormatError(f"{src}: {root} has no set-a/ (or set-b/, set-c/) folder of record files; "
                              f"{where}")
    files: list[Path] = []
    ids_l: list[int] = []
    los_l: list[float] = []
    mort_l: list[int] = []
    events: list[tuple[list[float], list[int], list[float]]] = []
    seen: dict[int, Path] = {}
    for s in sets:
        letter = s.name[-1]
        out_path = root / f"Outcomes-{letter}.txt"
        if not out_path.is_file():
            raise DataFormatError(f"{src}: {s} has no outcomes file {out_path}; {where}")
        outcomes = _read_outcomes(out_path)
        records = sorted(p for p in s.iterdir() if p.suffix == ".txt" and p.is_file())
        if not records:
            raise DataFormatError(f"{src}: {s} holds no record files (<RecordID>.txt); {where}")
        files.append(out_path)
        for rec in records:
            rid, h, c, v = _read_record(rec)
            if rid in seen:
                raise DataFormatError(f"{src}: RecordID {rid} is in both {seen[rid]} and {rec}; {where}")
            seen[rid] = rec
            if rid not in outcomes:
                raise DataFormatError(f"{src}: record {rec} (RecordID {rid}) has no row in {out_path}; "
                                      f"{where}")
            los, death, _ = outcomes[rid]
            ids_l.append(rid)
            los_l.append(los)
            mort_l.append(death)
            events.append((h, c, v))
            files.append(rec)
    ids = np.array(ids_l, np.int64)
    los = np.array(los_l, np.float64)
    mort = np.array(mort_l, np.int8)
    counts["stays_read"] = len(ids)
    keep = np.flatnonzero(_select(np.full(len(ids), np.nan), los, min_hours, los >= 0, counts, "unknown_los"))
    keep = keep[np.argsort(ids[keep], kind="stable")]
    parts = []
    for i, k in enumerate(keep):
        h, c, v = events[k]
        parts.append(_window_events(np.full(len(h), i, np.int64), np.array(h, np.float64),
                                    np.array(c, np.int8), np.array(v, np.float64), window, counts))
    return _finish(src, ids[keep], mort[keep], los[keep], parts, files, counts)
