"""Readers for the public Amazon Reviews formats (2014, 2018, 2023, ratings-only CSV).

Real files run to hundreds of millions of lines, so reviews are streamed line by line and
accumulated into ``array('q')`` buffers and id -> code dicts; no per-review Python objects are
kept. The 2014 files are parsed with ``json.loads`` first and ``ast.literal_eval`` as the
fallback (never ``eval``). Also here: de-duplication, iterative k-core, the usual splits and
head/tail groups. (The raw files' fingerprint is :func:`harness.cache.fingerprint`.)
"""

from __future__ import annotations

import ast
import codecs
import csv
import gzip
import html
import io
import json
import logging
import math
import re
import time
import zlib
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from harness.errors import DataFormatError, UserError

logger = logging.getLogger(__name__)

FORMATS = ("2014", "2018", "2023", "csv")

PUBLIC_COPIES = {
    "2014": "https://jmcauley.ucsd.edu/data/amazon/",
    "2018": "https://nijianmo.github.io/amazon/",
    "2023": "https://amazon-reviews-2023.github.io/",
    "csv": "https://nijianmo.github.io/amazon/",
}

# (user field, item field, timestamp field, timestamp divisor) per JSON format.
_REVIEW_FIELDS = {
    "2014": ("reviewerID", "asin", "unixReviewTime", 1),
    "2018": ("reviewerID", "asin", "unixReviewTime", 1),
    "2023": ("user_id", "parent_asin", "timestamp", 1000),
}
_META_ID_FIELD = {"2014": "asin", "2018": "asin", "csv": "asin", "2023": "parent_asin"}

_EARLY_FAIL_LINES = 1000
_PROGRESS_EVERY = 1_000_000
_INT_LIMIT = 1 << 62
_GZIP_MAGIC = b"\x1f\x8b"


# --------------------------------------------------------------------------- containers


@dataclass
class Interactions:
    """User-item interactions as parallel int64 arrays with dense codes.

    ``user_ids[c]`` / ``item_ids[c]`` give the raw id (reviewer id; asin, or parent_asin for
    2023) of code ``c``; ``timestamp`` is in unix seconds.
    """

    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray

    def __post_init__(self) -> None:
        if not len(self.user) == len(self.item) == len(self.timestamp):
            raise ValueError(
                f"user, item and timestamp must have equal lengths, got {len(self.user)}, "
                f"{len(self.item)}, {len(self.timestamp)}"
            )

    def __len__(self) -> int:
        return len(self.user)

    @property
    def n_users(self) -> int:
        """Number of distinct users (codes are 0..n_users-1)."""
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        """Number of distinct items (codes are 0..n_items-1)."""
        return len(self.item_ids)

    def subset(self, mask_or_index: np.ndarray | Sequence[int]) -> Interactions:
        """Keep the rows given by a boolean mask or an index array (in that order), then
        re-code users and items densely, dropping ids no kept row uses (relative order kept)."""
        idx = np.asarray(mask_or_index)
        if idx.dtype == np.bool_:
            if idx.shape != (len(self),):
                raise ValueError(f"mask has shape {idx.shape}, expected ({len(self)},)")
            idx = np.flatnonzero(idx)
        else:
            idx = idx.astype(np.int64, copy=False).reshape(-1)
        user, user_ids = _recode(self.user[idx], self.user_ids)
        item, item_ids = _recode(self.item[idx], self.item_ids)
        return Interactions(user, item, self.timestamp[idx].copy(), user_ids, item_ids)


def _recode(codes: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map codes onto 0..k-1 over the codes actually used, keeping their relative order."""
    used = np.zeros(len(ids), dtype=bool)
    used[codes] = True
    remap = np.cumsum(used, dtype=np.int64) - 1
    return remap[codes].astype(np.int64, copy=False), ids[used]


@dataclass
class ReadStats:
    """Counts from one streamed file.

    ``lines`` counts non-blank lines; ``first_bad_line`` is the 1-based physical line number of
    the first malformed line and ``first_bad_text`` its first 200 characters.
    """

    lines: int
    malformed: int
    first_bad_line: int | None
    first_bad_text: str | None


# --------------------------------------------------------------------------- file discovery


def _candidates(category: str) -> dict[str, tuple[list[str], list[str]]]:
    """Per format: (review file names in order of preference, meta file names)."""

    def gz(*names: str) -> list[str]:
        return [n for name in names for n in (name + ".gz", name)]

    c = category
    return {
        "2014": (gz(f"reviews_{c}_5.json", f"reviews_{c}.json"), gz(f"meta_{c}.json")),
        "2018": (gz(f"{c}_5.json", f"{c}.json"), gz(f"meta_{c}.json")),
        "2023": (gz(f"{c}.jsonl"), gz(f"meta_{c}.jsonl")),
        "csv": ([f"{c}.csv"], gz(f"meta_{c}.json")),
    }


def meta_names(category: str, fmt: str) -> list[str]:
    """The meta file names tried for ``category`` in format ``fmt``, in order."""
    return _candidates(category)[fmt][1]


def find_files(data_dir: str | Path, category: str) -> tuple[str, Path, Path | None]:
    """Detect the format from the files present; return (fmt, reviews_path, meta_path or None).

    Names tried (each JSON file plain or ``.gz``; 5-core before the full file): 2014
    ``reviews_<Cat>_5.json`` / ``reviews_<Cat>.json``; 2018 ``<Cat>_5.json`` / ``<Cat>.json``;
    2023 ``<Cat>.jsonl``; csv ``<Cat>.csv``. Meta: ``meta_<Cat>.json`` (2014, 2018, csv) or
    ``meta_<Cat>.jsonl`` (2023). Since 2014 and 2018 share field names and meta file names,
    the first non-empty line of a ``.json`` reviews file decides between them: a Python dict
    literal or a record with ``helpful`` but no ``verified``/``vote``/``style`` is 2014.
    """
    data_dir = Path(data_dir)
    cands = _candidates(category)
    found: list[tuple[str, Path]] = []
    if data_dir.is_dir():
        for fmt, (reviews, _meta) in cands.items():
            for name in reviews:
                if (data_dir / name).is_file():
                    found.append((fmt, data_dir / name))
                    break
    if not found:
        raise DataFormatError(_missing_message(data_dir, category, cands))
    order = {"2023": 0, "2018": 1, "2014": 1, "csv": 2}
    found.sort(key=lambda f: order[f[0]])
    fmt, reviews_path = found[0]
    if fmt in ("2014", "2018"):
        fmt = _sniff_2014_2018(reviews_path, default=fmt)
    if len(found) > 1:
        logger.warning(
            "several Amazon review files for %r in %s: %s; using %s (format %s)",
            category, data_dir, ", ".join(p.name for _, p in found), reviews_path.name, fmt,
        )
    meta_path = next(
        (data_dir / n for n in cands[fmt][1] if (data_dir / n).is_file()), None
    )
    return fmt, reviews_path, meta_path


def _missing_message(data_dir: Path, category: str, cands: dict) -> str:
    expected = "; ".join(
        f"{fmt}: {' or '.join(reviews)} (meta, optional: {' or '.join(meta)})"
        for fmt, (reviews, meta) in cands.items()
    )
    if not data_dir.exists():
        present = f"the directory {data_dir} does not exist"
    elif not data_dir.is_dir():
        present = f"{data_dir} is not a directory"
    else:
        names = sorted(p.name for p in data_dir.iterdir())
        shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
        present = f"{data_dir} contains: {shown}" if names else f"{data_dir} is empty"
        low = category.lower()
        close = sorted({n for n in names if low in n.lower() and category not in n})
        if close:
            hint = ", ".join(close[:5])
            present += f" (similar names: {hint}; check the category's spelling and case)"
    where = ", ".join(f"{fmt} {url}" for fmt, url in PUBLIC_COPIES.items() if fmt != "csv")
    return (
        f"No Amazon Reviews file for category {category!r} found in {data_dir}. "
        f"Expected one of: {expected}. Instead, {present}. Download the category's files "
        f"into that directory (public copies: {where}) or pass the right data directory "
        f"and category."
    )


def _sniff_2014_2018(path: Path, default: str) -> str:
    """Tell a 2014 reviews file from a 2018 one by its first non-empty line."""
    for _lineno, raw in _iter_lines(path):
        try:
            rec = json.loads(raw)
        except (ValueError, RecursionError):
            try:
                rec = ast.literal_eval(raw.decode("utf-8", errors="replace"))
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                return default
            return "2014" if isinstance(rec, dict) else default
        if not isinstance(rec, dict):
            return default
        if "verified" in rec or "vote" in rec or "style" in rec:
            return "2018"
        if "helpful" in rec:
            return "2014"
        return default
    return default


# --------------------------------------------------------------------------- line streaming


def _open_binary(path: Path) -> BinaryIO:
    """Open a plain or gzip file (told apart by its magic bytes) for binary line reading."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    is_gz = magic == _GZIP_MAGIC
    if path.name.endswith(".gz") and not is_gz and magic:
        raise DataFormatError(
            f"{path} ends in .gz but is not a gzip file. If it is plain text, rename it "
            f"without the .gz suffix; otherwise download it again."
        )
    if is_gz:  # a large C-level buffer over GzipFile: ~35% faster line iteration
        fh = io.BufferedReader(gzip.open(path, "rb"), buffer_size=1 << 20)  # type: ignore[arg-type]
    else:
        fh = open(path, "rb", buffering=1 << 20)
    try:
        if fh.peek(3)[:3] == codecs.BOM_UTF8:
            fh.read(3)
    except BaseException:
        fh.close()
        raise
    return fh


def _read_error(path: Path, lineno: int, exc: BaseException) -> DataFormatError:
    at = f" after line {lineno}" if lineno else ""
    return DataFormatError(
        f"Could not read {path}{at}: {exc}. The file may be truncated or corrupted "
        f"(e.g. an interrupted download); download it again and check its size."
    )


_IO_ERRORS = (OSError, EOFError, zlib.error)


def _iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Yield (1-based line number, stripped bytes) for each non-blank line of a plain or
    gzip file; I/O and decompression errors become DataFormatError."""
    lineno = 0
    try:
        with _open_binary(path) as fh:
            for raw in fh:
                lineno += 1
                raw = raw.strip()
                if raw:
                    yield lineno, raw
    except _IO_ERRORS as exc:
        raise _read_error(path, lineno, exc) from None


class _Tally:
    """Counts lines and malformed lines of one file and enforces the malformed-fraction rules."""

    def __init__(self, path: Path, what: str, max_frac: float) -> None:
        self.path, self.what, self.max_frac = path, what, max_frac
        self.lines = 0
        self.physical = 0
        self.malformed = 0
        self.first_line: int | None = None
        self.first_text: str | None = None
        self.first_reason = ""

    def bad(self, lineno: int, raw: bytes, reason: str) -> None:
        self.malformed += 1
        if self.first_line is None:
            self.first_line = lineno
            self.first_text = raw.strip()[:800].decode("utf-8", errors="replace")[:200]
            self.first_reason = reason
        if self.lines >= _EARLY_FAIL_LINES:
            self.check_early()

    def check_early(self) -> None:
        if self.lines >= _EARLY_FAIL_LINES and 2 * self.malformed > self.lines:
            self.fail(early=True)

    def finish(self) -> ReadStats:
        if self.lines and self.malformed > self.max_frac * self.lines:
            self.fail(early=False)
        return ReadStats(self.lines, self.malformed, self.first_line, self.first_text)

    def fail(self, early: bool) -> None:
        frac = self.malformed / self.lines
        when = f"stopped after the first {self.lines} non-empty lines: " if early else ""
        hint = ""
        if "2014" not in self.what and (self.first_text or "").startswith("{'"):
            hint = "The lines look like Python dict literals, as in the 2014 format. "
        raise DataFormatError(
            f"{self.path}: {when}{self.malformed} of {self.lines} non-empty lines "
            f"({frac:.2%}) are not valid {self.what} (allowed: {self.max_frac:.2%}). "
            f"First bad line {self.first_line} ({self.first_reason}): {self.first_text!r}. "
            f"{hint}Check that the file is really in this format and not truncated or corrupted "
            f"(download it again if so), or raise max_malformed_frac to skip such lines."
        )


def _as_int(value: object) -> int | None:
    """An integer timestamp from an int, an integral float or a decimal string; else None."""
    if type(value) is int:
        out = value
    elif isinstance(value, float) and value.is_integer():
        out = int(value)
    elif isinstance(value, str | bytes):
        try:
            out = int(value)
        except ValueError:
            return None
    else:
        return None
    return out if -_INT_LIMIT < out < _INT_LIMIT else None


def _as_id(value: object) -> str | None:
    if isinstance(value, str):
        return value or None
    if type(value) is int:
        return str(value)
    return None


def _parse_2014(text: str) -> object:
    """A 2014 record: strict JSON if it is, else a Python literal via ast.literal_eval."""
    try:
        return json.loads(text)
    except ValueError:
        return ast.literal_eval(text)


_PARSE_ERRORS = (ValueError, SyntaxError, TypeError, MemoryError, RecursionError)


# --------------------------------------------------------------------------- reviews


def read_interactions(
    path: str | Path,
    fmt: str,
    max_malformed_frac: float = 0.01,
    progress: bool = False,
) -> tuple[Interactions, ReadStats]:
    """Stream a reviews file (plain or gzip) into Interactions, skipping malformed lines.

    Fields: 2014/2018 ``reviewerID, asin, unixReviewTime`` (seconds); 2023 ``user_id,
    parent_asin, timestamp`` (milliseconds, floored to seconds); csv ``item,user,rating,
    timestamp`` without header. A line that cannot be parsed, lacks a field or has a
    non-integer timestamp is counted and skipped; blank lines are ignored. Raises
    DataFormatError when more than ``max_malformed_frac`` of the lines are malformed (early,
    after 1000 lines, if more than half are), when the file cannot be read, or when it holds
    no reviews. ``progress`` logs every 1,000,000 lines.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise DataFormatError(f"Unknown Amazon Reviews format {fmt!r}; use one of {FORMATS}.")
    what = "Amazon 2018 ratings CSV rows" if fmt == "csv" else f"Amazon {fmt} review records"
    tally = _Tally(path, what, max_malformed_frac)
    acc = _Accumulator(path, tally, progress)
    try:
        with _open_binary(path) as fh:
            if fmt == "csv":
                _scan_csv(fh, acc)
            else:
                _scan_json(fh, fmt, acc)
    except _IO_ERRORS as exc:
        raise _read_error(path, tally.physical, exc) from None
    users, items, ucol, icol, tcol = acc.users, acc.items, acc.ucol, acc.icol, acc.tcol
    stats = tally.finish()
    if not ucol:
        raise DataFormatError(
            f"{path} contains no readable reviews ({stats.lines} non-empty lines, "
            f"{stats.malformed} malformed). Check that it is the complete {fmt} reviews file."
        )
    if progress:
        rate = tally.lines / max(time.perf_counter() - acc.start, 1e-9)
        logger.info("%s: done, %d lines (%.0f lines/s), %d malformed, %d users, %d items",
                    path.name, tally.lines, rate, tally.malformed, len(users), len(items))
    inter = Interactions(
        user=np.frombuffer(ucol, dtype=np.int64).copy(),
        item=np.frombuffer(icol, dtype=np.int64).copy(),
        timestamp=np.frombuffer(tcol, dtype=np.int64).copy(),
        user_ids=_id_array(users),
        item_ids=_id_array(items),
    )
    return inter, stats


def _id_array(codes: dict[str, int]) -> np.ndarray:
    out = np.empty(len(codes), dtype=object)
    out[:] = list(codes)  # dicts keep insertion order, which is code order
    return out


class _Accumulator:
    """Id -> code dicts and int64 column buffers filled by the format scanners."""

    def __init__(self, path: Path, tally: _Tally, progress: bool) -> None:
        self.path, self.tally, self.progress = path, tally, progress
        self.users: dict[str, int] = {}
        self.items: dict[str, int] = {}
        self.ucol, self.icol, self.tcol = array("q"), array("q"), array("q")
        self.start = time.perf_counter()

    def checkpoint(self, lines: int) -> int:
        """Early-failure check and progress log; returns the line count of the next call."""
        self.tally.lines = lines
        self.tally.check_early()
        if self.progress and lines >= _PROGRESS_EVERY:
            rate = lines / max(time.perf_counter() - self.start, 1e-9)
            logger.info("%s: %d lines read (%.0f lines/s)", self.path.name, lines, rate)
        return (lines // _PROGRESS_EVERY + 1) * _PROGRESS_EVERY


# The scanners below are the hot loops (hundreds of millions of lines): one flat loop each,
# bound methods in locals, no per-line generator or tuple; `lines` counts non-blank lines.


def _scan_json(fh: BinaryIO, fmt: str, acc: _Accumulator) -> None:
    ukey, ikey, tkey, div = _REVIEW_FIELDS[fmt]
    parse = _parse_2014 if fmt == "2014" else json.loads
    users, items, tally = acc.users, acc.items, acc.tally
    uget, iget = users.get, items.get
    uapp, iapp, tapp = acc.ucol.append, acc.icol.append, acc.tcol.append
    lim = _INT_LIMIT
    lineno = blanks = 0
    next_check = _EARLY_FAIL_LINES
    try:
        for raw in fh:
            lineno += 1
            try:
                rec = parse(raw.decode("utf-8"))  # str parses faster than bytes
                u = rec[ukey]
                i = rec[ikey]
                t = rec[tkey]
            except KeyError as exc:
                tally.lines = lineno - blanks
                tally.bad(lineno, raw, f"missing field {exc}")
                continue
            except _PARSE_ERRORS as exc:
                if raw.isspace():
                    blanks += 1
                    continue
                tally.lines = lineno - blanks
                tally.bad(lineno, raw, f"unparseable: {type(exc).__name__}")
                continue
            if type(t) is not int or not -lim < t < lim:
                t = _as_int(t)
                if t is None:
                    tally.lines = lineno - blanks
                    tally.bad(lineno, raw, f"{tkey} is not an integer")
                    continue
            if type(u) is not str or not u or type(i) is not str or not i:
                u, i = _as_id(u), _as_id(i)
                if u is None or i is None:
                    tally.lines = lineno - blanks
                    tally.bad(lineno, raw, f"empty or non-string {ukey} or {ikey}")
                    continue
            code = uget(u)
            if code is None:
                code = users[u] = len(users)
            uapp(code)
            code = iget(i)
            if code is None:
                code = items[i] = len(items)
            iapp(code)
            tapp(t // div)
            if lineno >= next_check:
                next_check = acc.checkpoint(lineno - blanks)
    finally:
        tally.lines, tally.physical = lineno - blanks, lineno


def _scan_csv(fh: BinaryIO, acc: _Accumulator) -> None:
    users, items, tally = acc.users, acc.items, acc.tally
    uget, iget = users.get, items.get
    uapp, iapp, tapp = acc.ucol.append, acc.icol.append, acc.tcol.append
    lineno = blanks = 0
    next_check = _EARLY_FAIL_LINES
    try:
        for raw in fh:
            lineno += 1
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                tally.lines = lineno - blanks
                tally.bad(lineno, raw, "not UTF-8")
                continue
            if not text:
                blanks += 1
                continue
            if '"' in text:
                try:
                    row = next(csv.reader((text,)))
                except (csv.Error, StopIteration):
                    row = []
            else:
                row = text.split(",")
            t = _as_int(row[3].strip()) if len(row) == 4 else None
            i = row[0].strip() if row else ""
            u = row[1].strip() if len(row) > 1 else ""
            if t is None or not u or not i:
                tally.lines = lineno - blanks
                tally.bad(lineno, raw, "not item,user,rating,timestamp with an integer timestamp")
                continue
            code = uget(u)
            if code is None:
                code = users[u] = len(users)
            uapp(code)
            code = iget(i)
            if code is None:
                code = items[i] = len(items)
            iapp(code)
            tapp(t)
            if lineno >= next_check:
                next_check = acc.checkpoint(lineno - blanks)
    finally:
        tally.lines, tally.physical = lineno - blanks, lineno


# --------------------------------------------------------------------------- titles

_ID_PATTERNS = {
    key: re.compile(rb"[\"']" + key.encode() + rb"[\"']\s*:\s*[\"']([^\"']*)[\"']")
    for key in ("asin", "parent_asin")
}


def read_titles(
    meta_path: str | Path,
    fmt: str,
    keep: set[str] | None = None,
    max_malformed_frac: float = 0.01,
) -> dict[str, str]:
    """Item id -> title from a meta file (2014: JSON or Python literal; 2018 and csv: JSON
    keyed by ``asin``; 2023: JSON keyed by ``parent_asin``).

    Only ids in ``keep`` if given: lines whose id (found with a regex before parsing) is not
    in ``keep`` are skipped unparsed, which makes filtering a large meta file cheap. Missing or
    empty titles are skipped; HTML entities in titles are unescaped. Malformed lines are
    skipped under the same rule as ``read_interactions``.
    """
    meta_path = Path(meta_path)
    if fmt not in FORMATS:
        raise DataFormatError(f"Unknown Amazon Reviews format {fmt!r}; use one of {FORMATS}.")
    key = _META_ID_FIELD[fmt]
    parse = _parse_2014 if fmt in ("2014", "csv") else json.loads
    pattern = _ID_PATTERNS[key]
    tally = _Tally(meta_path, f"Amazon {fmt} meta records", max_malformed_frac)
    titles: dict[str, str] = {}
    for lineno, raw in _iter_lines(meta_path):
        tally.lines += 1
        if keep is not None:
            seen = pattern.findall(raw)
            if seen and not any(s.decode("utf-8", errors="replace") in keep for s in seen):
                continue
        try:
            rec = parse(raw.decode("utf-8"))
            item = _as_id(rec[key])
        except KeyError:
            tally.bad(lineno, raw, f"missing field {key!r}")
            continue
        except _PARSE_ERRORS as exc:
            tally.bad(lineno, raw, f"unparseable: {type(exc).__name__}")
            continue
        if item is None:
            tally.bad(lineno, raw, f"empty or non-string {key!r}")
            continue
        if keep is not None and item not in keep:
            continue
        title = rec.get("title")
        if isinstance(title, str):
            title = html.unescape(title).strip()
            if title:
                titles[item] = title
        if tally.lines == _EARLY_FAIL_LINES:
            tally.check_early()
    tally.finish()
    return titles


# --------------------------------------------------------------------------- preprocessing


def dedupe_keep_earliest(inter: Interactions) -> Interactions:
    """Drop duplicate (user, item) pairs, keeping the earliest timestamp (the first row among
    equal timestamps); kept rows stay in their original order."""
    n = len(inter)
    if n == 0:
        return inter.subset(np.zeros(0, dtype=np.int64))
    order = np.lexsort((np.arange(n), inter.timestamp, inter.item, inter.user))
    u, i = inter.user[order], inter.item[order]
    first = np.ones(n, dtype=bool)
    first[1:] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    return inter.subset(np.sort(order[first]))


def k_core(inter: Interactions, k: int = 5) -> Interactions:
    """Iterative k-core: repeatedly drop rows of users and items with fewer than ``k``
    interactions until none is left; the result is re-coded densely."""
    alive = np.ones(len(inter), dtype=bool)
    while True:
        ucount = np.bincount(inter.user[alive], minlength=inter.n_users)
        icount = np.bincount(inter.item[alive], minlength=inter.n_items)
        keep = alive & (ucount[inter.user] >= k) & (icount[inter.item] >= k)
        if keep.sum() == alive.sum():
            break
        alive = keep
    return inter.subset(alive)


# --------------------------------------------------------------------------- splits

Split = tuple[np.ndarray, np.ndarray, np.ndarray]


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1.0) > 1e-6:
        raise UserError(f"split ratios must be three non-negative numbers summing to 1 "
                        f"(train, valid, test), got {ratios}")
    return float(ratios[0]), float(ratios[1]), float(ratios[2])


def _per_user_counts(n: np.ndarray, r_valid: float, r_test: float) -> tuple[np.ndarray, ...]:
    """Valid/test counts per user: max(1, round(n*r)) (0 if r == 0) for n >= 3, else 0; capped
    so that every such user keeps at least one training row."""
    big = n >= 3
    n_test = np.where(big & (r_test > 0), np.maximum(1, np.rint(n * r_test)), 0).astype(np.int64)
    n_valid = np.where(big & (r_valid > 0), np.maximum(1, np.rint(n * r_valid)), 0)
    n_test = np.minimum(n_test, np.maximum(n - 2, 0))
    n_valid = np.minimum(n_valid.astype(np.int64), np.maximum(n - 1 - n_test, 0))
    return n_valid, n_test


def _split_by_rank(user: np.ndarray, order: np.ndarray, n_users: int,
                   n_valid: np.ndarray, n_test: np.ndarray) -> Split:
    """Given rows sorted by (user, key), the first rows of each user go to train, then
    n_valid to valid, the last n_test to test."""
    counts = np.bincount(user, minlength=n_users)
    starts = np.cumsum(counts) - counts
    u_sorted = user[order]
    rank = np.arange(len(order)) - starts[u_sorted]
    from_end = counts[u_sorted] - rank  # 1 for the user's last row
    part = np.zeros(len(user), dtype=np.int8)
    part[order] = np.where(from_end <= n_test[u_sorted], 2,
                           np.where(from_end <= n_test[u_sorted] + n_valid[u_sorted], 1, 0))
    train, valid, test = (np.flatnonzero(part == p).astype(np.int64) for p in range(3))
    return train, valid, test


def split_ratio(inter: Interactions, ratios: Sequence[float] = (0.8, 0.1, 0.1),
                seed: int = 0) -> Split:
    """Per-user random split into (train, valid, test) row-index arrays. A user with n >= 3
    rows gets max(1, round(n*r)) valid and test rows (0 for a zero ratio) and at least one
    train row; users with fewer rows are all train."""
    _, r_valid, r_test = _check_ratios(ratios)
    keys = np.random.default_rng(seed).random(len(inter))
    order = np.lexsort((keys, inter.user))
    n = np.bincount(inter.user, minlength=inter.n_users)
    return _split_by_rank(inter.user, order, inter.n_users, *_per_user_counts(n, r_valid, r_test))


def split_temporal(inter: Interactions, ratios: Sequence[float] = (0.8, 0.1, 0.1)) -> Split:
    """Per-user chronological split with the counts of ``split_ratio``: each user's earliest
    rows go to train, the latest to test (ties broken by row order)."""
    _, r_valid, r_test = _check_ratios(ratios)
    order = np.lexsort((np.arange(len(inter)), inter.timestamp, inter.user))
    n = np.bincount(inter.user, minlength=inter.n_users)
    return _split_by_rank(inter.user, order, inter.n_users, *_per_user_counts(n, r_valid, r_test))


def split_global_time(inter: Interactions, ratios: Sequence[float] = (0.8, 0.1, 0.1)) -> Split:
    """Global temporal split at two timestamp cut points, the timestamps found at the
    ``r_train`` and ``r_train + r_valid`` quantile positions of all sorted timestamps: train
    is before the first cut, valid between, test from the second cut on (rows tied with a cut
    go to the later part, so no part sees a timestamp of a later one)."""
    r_train, r_valid, _ = _check_ratios(ratios)
    ts = inter.timestamp
    n = len(ts)
    s = np.sort(ts)

    def cut(frac: float) -> float:
        pos = int(round(frac * n))
        return float(s[pos]) if pos < n else math.inf

    t1, t2 = cut(r_train), cut(r_train + r_valid)
    train = np.flatnonzero(ts < t1)
    valid = np.flatnonzero((ts >= t1) & (ts < t2))
    test = np.flatnonzero(ts >= t2)
    return train.astype(np.int64), valid.astype(np.int64), test.astype(np.int64)


def split_leave_one_out(inter: Interactions) -> Split:
    """Per user sorted by time (ties by row order): the last row is test, the second last
    valid, the rest train; users with fewer than 3 rows are all train."""
    order = np.lexsort((np.arange(len(inter)), inter.timestamp, inter.user))
    n = np.bincount(inter.user, minlength=inter.n_users)
    one = (n >= 3).astype(np.int64)
    return _split_by_rank(inter.user, order, inter.n_users, one, one)


# --------------------------------------------------------------------------- groups


def _top_share(counts: np.ndarray, share: float) -> np.ndarray:
    if not 0.0 <= share <= 1.0:
        raise UserError(f"a group share (head_share, active_share) must be in [0, 1], got {share}")
    n = len(counts)
    n_top = min(n, math.ceil(share * n - 1e-9))
    order = np.lexsort((np.arange(n), -counts))  # most popular first, ties by lower id
    mask = np.zeros(n, dtype=bool)
    mask[order[:n_top]] = True
    return mask


def item_groups(train_item: np.ndarray, n_items: int, head_share: float = 0.2) -> np.ndarray:
    """Bool mask [n_items], True = head: the ceil(head_share * n_items) items with the most
    training interactions (ties broken by lower item id)."""
    return _top_share(np.bincount(np.asarray(train_item), minlength=n_items), head_share)


def user_groups(train_user: np.ndarray, n_users: int, active_share: float = 0.2) -> np.ndarray:
    """Bool mask [n_users], True = active: the ceil(active_share * n_users) users with the most
    training interactions (ties broken by lower user id)."""
    return _top_share(np.bincount(np.asarray(train_user), minlength=n_users), active_share)
