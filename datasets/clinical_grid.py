"""Clinical time series: the seven vitals, their units and plausible ranges, and the hourly grid.

Every reader (:mod:`harness.datasets.clinical_readers`) turns its database's tables into a
:class:`Cohort`: one row per ICU stay (id, in-hospital death, length of stay) and the stays'
charted vitals as long :class:`Events` (stay index, hours since ICU admission, channel, value in
the canonical unit). :func:`make_events` is the one place where values are converted and
checked against :data:`RANGES`; :func:`build_grid` puts events on the hourly grid.

The seven channels are TarDiff's recipe (heart rate, systolic / diastolic / mean blood pressure,
respiratory rate, temperature, SpO2), in this order. Units and plausibility ranges follow the
MIT-LCP mimic-code vitals concept (``concepts/firstday/vitals_first_day.sql``): a value outside
``(low, high]`` is dropped as a charting error, not clipped. Temperature is in degrees Celsius;
a reader converts Fahrenheit items with :func:`fahrenheit_to_celsius` before the check.

Grid (:func:`build_grid`): hour ``h`` holds the mean of the observations with
``h <= hours < h + 1`` (``0 <= h < window``); the mask is 1 where an hour had at least one
observation. Missing hours are filled by carrying the last observation forward within the stay;
hours before a channel's first observation (and channels never observed) take ``fill`` (the
training split's median of that channel, computed by the DataModule so the test split does not
leak into it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.errors import UserError

CHANNELS: tuple[str, ...] = ("heart_rate", "sbp", "dbp", "mbp", "resp_rate", "temperature", "spo2")
UNITS: tuple[str, ...] = ("bpm", "mmHg", "mmHg", "mmHg", "breaths/min", "degC", "%")
#: plausible values per channel, ``low < v <= high`` (mimic-code's vitals_first_day.sql; its
#: Fahrenheit range 70..120 F is 21.1..48.9 C, its Celsius range 10..50 C: we keep 10..50 C)
RANGES: dict[str, tuple[float, float]] = {
    "heart_rate": (0.0, 300.0),
    "sbp": (0.0, 400.0),
    "dbp": (0.0, 300.0),
    "mbp": (0.0, 300.0),
    "resp_rate": (0.0, 70.0),
    "temperature": (10.0, 50.0),
    "spo2": (0.0, 100.0),
}
N_CHANNELS = len(CHANNELS)
_LOW = np.array([RANGES[c][0] for c in CHANNELS], dtype=np.float64)
_HIGH = np.array([RANGES[c][1] for c in CHANNELS], dtype=np.float64)


def fahrenheit_to_celsius(v: np.ndarray) -> np.ndarray:
    """(v - 32) / 1.8."""
    return (np.asarray(v, dtype=np.float64) - 32.0) / 1.8


@dataclass
class Events:
    """Charted vitals in long form, canonical units, already range-checked."""

    stay: np.ndarray  # int64: index into Cohort.stay_ids
    hours: np.ndarray  # float64: hours since ICU admission
    channel: np.ndarray  # int8: index into CHANNELS
    value: np.ndarray  # float32

    def __len__(self) -> int:
        return len(self.stay)

    @staticmethod
    def empty() -> Events:
        return Events(np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.int8),
                      np.zeros(0, np.float32))

    @staticmethod
    def concat(parts: list[Events]) -> Events:
        if not parts:
            return Events.empty()
        return Events(np.concatenate([p.stay for p in parts]), np.concatenate([p.hours for p in parts]),
                      np.concatenate([p.channel for p in parts]), np.concatenate([p.value for p in parts]))


@dataclass
class Cohort:
    """One row per ICU stay and its events; what every reader returns."""

    source: str  # "mimic3", "mimic4", "eicu", "mimic3-benchmarks", "physionet2012"
    stay_ids: np.ndarray  # int64, the database's stay key
    mortality: np.ndarray  # int8: died in hospital
    los_days: np.ndarray  # float32: ICU length of stay in days
    events: Events
    files: list[Path] = field(default_factory=list)  # the raw files read (fingerprinted)
    counts: dict[str, int] = field(default_factory=dict)  # rows read / dropped, for stats()

    def __post_init__(self) -> None:
        n = len(self.stay_ids)
        if not (len(self.mortality) == len(self.los_days) == n):
            raise ValueError("stay_ids, mortality and los_days must have one entry per stay")


def make_events(stay: np.ndarray, hours: np.ndarray, channel: np.ndarray, value: np.ndarray,
                counts: dict[str, int] | None = None) -> Events:
    """Events from parallel arrays (values already in canonical units): drops empty (NaN) values
    (counted in ``counts['no_value']``) and values outside :data:`RANGES` (``counts['out_of_range']``)."""
    value = np.asarray(value, dtype=np.float64)
    channel = np.asarray(channel, dtype=np.int8)
    finite = np.isfinite(value) & np.isfinite(np.asarray(hours, dtype=np.float64))
    ok = finite & (value > _LOW[channel]) & (value <= _HIGH[channel])
    if counts is not None:
        counts["no_value"] = counts.get("no_value", 0) + int((~finite).sum())
        counts["out_of_range"] = counts.get("out_of_range", 0) + int((finite & ~ok).sum())
    return Events(np.asarray(stay, dtype=np.int64)[ok], np.asarray(hours, dtype=np.float64)[ok],
                  channel[ok], value[ok].astype(np.float32))


def build_grid(events: Events, n_stays: int, window: int,
               fill: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(values, mask)``, both ``(n_stays, window, N_CHANNELS)``: the hourly means, carried forward
    over missing hours, ``fill`` (default 0) before a channel's first observation; ``mask`` 1 where
    the hour was observed (float32). See the module docstring."""
    if window < 1:
        raise UserError(f"the window must be at least one hour, got {window}")
    c = N_CHANNELS
    fill = np.zeros(c, np.float32) if fill is None else np.asarray(fill, np.float32)
    if fill.shape != (c,):
        raise ValueError(f"fill must have {c} values")
    h = np.floor(events.hours).astype(np.int64)
    keep = (h >= 0) & (h < window) & (events.stay >= 0) & (events.stay < n_stays)
    flat = (events.stay[keep] * window + h[keep]) * c + events.channel[keep].astype(np.int64)
    size = n_stays * window * c
    total = np.bincount(flat, weights=events.value[keep].astype(np.float64), minlength=size)
    count = np.bincount(flat, minlength=size)
    mask = (count > 0).reshape(n_stays, window, c)
    mean = np.divide(total, np.maximum(count, 1)).reshape(n_stays, window, c)
    # carry forward: for each cell the index of the last observed hour at or before it
    idx = np.where(mask, np.arange(window)[None, :, None], -1)
    np.maximum.accumulate(idx, axis=1, out=idx)
    seen = idx >= 0
    gathered = np.take_along_axis(mean, np.maximum(idx, 0), axis=1)
    values = np.where(seen, gathered, fill[None, None, :]).astype(np.float32)
    return values, mask.astype(np.float32)


# --------------------------------------------------------------------------- reading tables


def find_table(root: Path, names: tuple[str, ...], source: str, where: str) -> Path:
    """The first of ``names`` (e.g. ``CHARTEVENTS.csv``, ``CHARTEVENTS.csv.gz``) that exists under
    ``root``; else a :class:`DataFormatError` naming the table and where the data are obtained."""
    from harness.errors import DataFormatError

    for name in names:
        p = root / name
        if p.is_file():
            return p
    raise DataFormatError(f"{source}: {root} has no {' or '.join(names)}; {where}")


def csv_header(path: Path) -> list[str]:
    """The first line's column names (plain or gzip CSV)."""
    import csv
    import gzip

    from harness.errors import DataFormatError

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8-sig") as fh:  # type: ignore[operator]
            return next(csv.reader(fh))
    except StopIteration:
        raise DataFormatError(f"{path} is empty: expected a CSV header line") from None
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise DataFormatError(f"{path} cannot be read as a CSV: {exc}") from None


def resolve_columns(path: Path, wanted: dict[str, object], source: str, where: str) -> dict[str, str]:
    """Map each wanted column (case-insensitive: MIMIC-III is upper case, MIMIC-IV lower) to the
    file's own spelling; a :class:`DataFormatError` names the missing ones."""
    from harness.errors import DataFormatError

    header = csv_header(path)
    lower = {h.strip().lower(): h.strip() for h in header}
    missing = [c for c in wanted if c.lower() not in lower]
    if missing:
        raise DataFormatError(f"{source}: {path.name} lacks column(s) {', '.join(missing)} (it has "
                              f"{', '.join(header[:12])}{'...' if len(header) > 12 else ''}); {where}")
    return {c: lower[c.lower()] for c in wanted}


def map_csv(path: Path, columns: dict[str, object], fn, source: str, where: str,
            block_mb: int = 16, workers: int | None = None):
    """``fn(batch)`` for each block of a plain or ``.gz`` CSV, in file order, computed on
    ``workers`` threads (default: the CPU count, at least 2): each parses its block with pyarrow,
    converting only ``columns`` (name -> pyarrow type; names matched case-insensitively and given
    to ``fn`` under the wanted spelling) into one ``pyarrow.RecordBatch``. At most ``workers + 1``
    blocks are in flight, so memory stays bounded whatever the file's size (the blocks come from
    :func:`harness.datasets.blocks.map_blocks`: a plain file's read by the workers themselves with
    ``os.pread``, a gzip file's decompressed on one thread). Rows must not contain line breaks
    inside quoted values (true of the MIMIC, eICU and PhysioNet tables). A value that does not
    parse is a :class:`DataFormatError` naming the file."""
    import os
    import re

    import pyarrow as pa
    import pyarrow.csv as pacsv

    from harness.datasets.blocks import map_blocks
    from harness.errors import DataFormatError

    names = resolve_columns(path, columns, source, where)
    header = [h.strip() for h in csv_header(path)]
    convert = pacsv.ConvertOptions(include_columns=list(names.values()),
                                   column_types={names[c]: t for c, t in columns.items()},
                                   strings_can_be_null=True,
                                   timestamp_parsers=[pacsv.ISO8601, "%Y-%m-%d %H:%M:%S"])
    read = pacsv.ReadOptions(column_names=header, use_threads=False, block_size=4 << 20)
    wanted = list(columns)
    order = [names[c] for c in wanted]
    size = max(1, int(block_mb)) << 20
    workers = max(2, os.cpu_count() or 2) if workers is None else max(1, int(workers))

    def parse(data: bytes, offset: int | None = None):
        try:
            table = pacsv.read_csv(pa.py_buffer(data), read_options=read, convert_options=convert)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            # pyarrow counts rows from the block's start: say where the block starts
            where_block = f"the block at byte {offset}" if offset is not None else "a block"
            msg = re.sub(r"Row #(\d+)", lambda m: f"row {m.group(1)} of {where_block}",
                         str(exc).splitlines()[0])
            msg = re.sub(r"column #(\d+)", lambda m: f"column #{m.group(1)} {header[int(m.group(1))]!r}"
                         if int(m.group(1)) < len(header) else m.group(0), msg)
            raise DataFormatError(f"{source}: {path.name} does not parse ({msg}); {where}") from None
        table = table.combine_chunks()
        batch = pa.RecordBatch.from_arrays([table.column(o).chunk(0) if table.column(o).num_chunks
                                            else pa.array([], type=columns[w])
                                            for o, w in zip(order, wanted, strict=True)], names=wanted)
        return fn(batch)

    try:
        yield from map_blocks(path, parse, gz=path.suffix == ".gz", block_bytes=size, workers=workers,
                              skip_header=True)
    except OSError as exc:
        raise DataFormatError(f"{source}: {path.name} cannot be read ({exc}); {where}") from None


def stream_csv(path: Path, columns: dict[str, object], source: str, where: str,
               block_mb: int = 16):
    """Record batches of ``columns`` from a plain or ``.gz`` CSV in bounded memory
    (:func:`map_csv` without a function)."""
    yield from map_csv(path, columns, lambda b: b, source, where, block_mb=block_mb)
