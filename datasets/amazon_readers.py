"""Readers for the public Amazon Reviews formats (2014, 2018, 2023, ratings-only CSV).

Real files run to hundreds of millions of lines, so reviews are streamed in blocks of whole lines
(a few MiB, a bounded number in flight) parsed on worker threads, and accumulated into int64
columns and id -> code tables; no per-review Python objects are kept. On large files a compiled
scanner (numba, without the GIL) validates and extracts each JSON or CSV line, and hands every
line it is not sure of to the per-line path, which decides it as a line-by-line reader does: the
2014 files are parsed with ``json.loads`` first and ``ast.literal_eval`` as the fallback (never
``eval``). Also here: de-duplication, iterative k-core, the usual splits and head/tail groups.
(The raw files' fingerprint is :func:`harness.cache.fingerprint`.)
"""

from __future__ import annotations

import ast
import codecs
import contextlib
import csv
import functools
import gzip
import html
import io
import json
import logging
import math
import os
import re
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from harness.datasets.blocks import map_blocks
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


def _is_gzip(path: Path) -> bool:
    """Whether ``path`` is gzip-compressed (by its magic bytes); a ``.gz`` name on a file that
    is not is a DataFormatError."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    is_gz = magic == _GZIP_MAGIC
    if path.name.endswith(".gz") and not is_gz and magic:
        raise DataFormatError(
            f"{path} ends in .gz but is not a gzip file. If it is plain text, rename it "
            f"without the .gz suffix; otherwise download it again."
        )
    return is_gz


def _open_binary(path: Path) -> BinaryIO:
    """Open a plain or gzip file (told apart by its magic bytes) for binary line reading."""
    if _is_gzip(path):  # a large C-level buffer over GzipFile: ~35% faster line iteration
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

    The file is read in blocks of whole lines (``_BLOCK_BYTES``, at most ``2 workers + 1`` in
    flight) parsed on worker threads; users and items are coded in order of first appearance
    in the file. On files of ``_FAST_MIN_BYTES`` or more, a compiled scanner (numba, no GIL)
    validates each JSON line as strictly as ``json.loads`` and extracts the three fields; a
    line it is not sure of (malformed, a missing field, an escaped or non-string id, a
    non-integer timestamp, a 2014 Python literal, ...) goes through the per-line Python path,
    which decides it exactly as the plain line-by-line reader did.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise DataFormatError(f"Unknown Amazon Reviews format {fmt!r}; use one of {FORMATS}.")
    what = "Amazon 2018 ratings CSV rows" if fmt == "csv" else f"Amazon {fmt} review records"
    tally = _Tally(path, what, max_malformed_frac)
    is_gz = _is_gzip(path)
    size = path.stat().st_size * (4 if is_gz else 1)  # gzip: about 4x smaller than the text
    kernels = _kernels("csv" if fmt == "csv" else "json") if size >= _FAST_MIN_BYTES else None
    spec = _BlockSpec(fmt, kernels)
    acc = _Accumulator(path, tally, progress, kernels)
    workers = _WORKERS or min(8, max(2, os.cpu_count() or 2))
    _read_blocks(path, is_gz, spec, acc, workers, max(1, int(_BLOCK_BYTES)))
    stats = tally.finish()
    if not acc.rows:
        raise DataFormatError(
            f"{path} contains no readable reviews ({stats.lines} non-empty lines, "
            f"{stats.malformed} malformed). Check that it is the complete {fmt} reviews file."
        )
    users, items = acc.users, acc.items
    users.done()
    items.done()
    if progress:
        rate = tally.lines / max(time.perf_counter() - acc.start, 1e-9)
        logger.info("%s: done, %d lines (%.0f lines/s), %d malformed, %d users, %d items",
                    path.name, tally.lines, rate, tally.malformed, len(users), len(items))
    inter = Interactions(
        user=_concat(acc.ucol),
        item=_concat(acc.icol),
        timestamp=_concat(acc.tcol),
        user_ids=users.ids(),
        item_ids=items.ids(),
    )
    return inter, stats


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    """The blocks' column as one array; the parts are freed (one column at a time is copied)."""
    out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    parts.clear()
    return out


def _encode_id(value: str) -> bytes:
    """An id from the per-line path as the bytes the scanner would have taken from the line
    (surrogatepass keeps the lone surrogates json.loads accepts, and decodes them back)."""
    return value.encode("utf-8", "surrogatepass")


class _DictCodes:
    """Id -> code in order of first appearance, for blocks parsed line by line (ids as str)."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.codes)

    def add(self, ids: list[str]) -> np.ndarray:
        codes = self.codes
        sd = codes.setdefault
        return np.array([sd(x, len(codes)) for x in ids], dtype=np.int64)

    def done(self) -> None:
        pass

    def ids(self) -> np.ndarray:
        out = np.empty(len(self.codes), dtype=object)
        out[:] = list(self.codes)  # dicts keep insertion order, which is code order
        return out


class _HashCodes:
    """Id -> code in order of first appearance, for blocks from the compiled scanner: an
    open-addressing hash table over UTF-8 bytes (compiled, no GIL; a Python dict of hundreds
    of millions of ids is slow and large). A block gives its own distinct ids (in order of
    first appearance in the block) and each row's index among them."""

    def __init__(self, intern) -> None:
        self.intern = intern
        self.state = _new_table(1 << 16)

    def __len__(self) -> int:
        return int(self.state[4])

    def add(self, block_ids: tuple) -> np.ndarray:
        """Codes of a block's rows: block_ids is (row -> distinct index, distinct ids' values,
        offsets, hashes), or (None, segments of rows) as _block_ids takes them."""
        if block_ids[0] is None:
            self.state, out = _intern_segments(self.intern, self.state, block_ids[1])
            return out
        local, vals, offs, hashes = block_ids
        self.state, out = _intern_segments(self.intern, self.state,
                                           [(vals, offs[:-1], offs[1:], hashes)])
        return out[local]

    def done(self) -> None:
        """No more ids: free the slots and hashes (only the ids are left to read)."""
        _slots, _hashes, arena, aoff, n = self.state
        self.state = (None, None, arena, aoff, n)

    def ids(self) -> np.ndarray:
        return _table_ids(self.state)


def _new_table(size: int) -> tuple:
    """An empty hash table with room for about ``size`` ids: (slots, hash of each code, byte
    arena, arena offsets of each code, count); see _intern_kernel."""
    cap = 1 << max(4, (2 * size - 1).bit_length())
    nbytes = 8 * cap + 8 * size + 8 * (size + 1) + max(64, 16 * size)
    # one allocation (numpy asks for huge pages from 4 MiB: fewer page faults per block table)
    mem = np.empty(nbytes, dtype=np.uint8)
    slots = mem[: 8 * cap].view(np.int64)
    slots.fill(-1)
    hashes = mem[8 * cap : 8 * (cap + size)].view(np.int64)
    aoff = mem[8 * (cap + size) : 8 * (cap + 2 * size + 1)].view(np.int64)
    aoff[0] = 0
    arena = mem[8 * (cap + 2 * size + 1) :]
    return slots, hashes, arena, aoff, 0


_NO_HASHES = np.zeros(0, dtype=np.int64)


def _table_ids(state: tuple) -> np.ndarray:
    """A table's ids in code order, as an object array of str."""
    import pyarrow as pa

    _slots, _hashes, arena, aoff, n = state
    out = np.empty(n, dtype=object)
    if n == 0:
        return out
    offs = aoff[:n + 1]
    vals = arena[:offs[-1]]
    try:
        arr = pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(offs),
                                                           pa.py_buffer(vals)])
        arr.validate(full=True)  # valid UTF-8: convert in C
        out[:] = arr.to_pylist()
    except pa.ArrowInvalid:  # lone surrogates from the per-line path (see _encode_id)
        raw, bounds = vals.tobytes(), offs.tolist()
        out[:] = [raw[a:b].decode("utf-8", "surrogatepass")
                  for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return out


# Tuning knobs (module globals so that tests and the timing script can change them).
_BLOCK_BYTES = 8 << 20  # a block ends at the first line end after this many bytes
_FAST_MIN_BYTES = 64 << 20  # smaller files skip the compiled scanner (it loads in ~1-2 s)
_WORKERS = 0  # parsing threads; 0: the CPU count, 2 to 8


class _Accumulator:
    """Id -> code tables, per-block int64 columns, and the exact line accounting: blocks are
    accounted in file order, replaying the counts, early-failure checks and progress logs of a
    line-by-line reader (malformed and blank lines at their physical line numbers)."""

    def __init__(self, path: Path, tally: _Tally, progress: bool, kernels: tuple | None) -> None:
        self.path, self.tally, self.progress = path, tally, progress
        self.users: _DictCodes | _HashCodes
        self.items: _DictCodes | _HashCodes
        self.helper = None  # a thread for the item table (set by _read_blocks)
        if kernels is None:
            self.users, self.items = _DictCodes(), _DictCodes()
        else:
            self.users, self.items = _HashCodes(kernels[1]), _HashCodes(kernels[1])
        self.ucol: list[np.ndarray] = []
        self.icol: list[np.ndarray] = []
        self.tcol: list[np.ndarray] = []
        self.rows = 0
        self.physical = 0  # physical lines accounted so far
        self.blanks = 0  # of which blank
        self.next_check = _EARLY_FAIL_LINES
        self.start = time.perf_counter()

    def checkpoint(self, lines: int) -> int:
        """Early-failure check and progress log; returns the line count of the next call."""
        self.tally.lines = lines
        self.tally.check_early()
        if self.progress and lines >= _PROGRESS_EVERY:
            rate = lines / max(time.perf_counter() - self.start, 1e-9)
            logger.info("%s: %d lines read (%.0f lines/s)", self.path.name, lines, rate)
        return (lines // _PROGRESS_EVERY + 1) * _PROGRESS_EVERY

    def add(self, blk: _Block) -> None:
        """Account one block (the next in file order) and append its rows."""
        tally, base, blanks0 = self.tally, self.physical, self.blanks
        blank = blk.blank
        skip: set[int] | None = None

        def lines_upto(j: int) -> int:  # non-blank lines up to and including block line j
            return base + j + 1 - blanks0 - int(np.searchsorted(blank, j, side="right"))

        def checkpoints(lo: int, hi: int) -> None:
            # The line-by-line reader checked after each good line whose physical number had
            # reached next_check: replay that for the good lines in [lo, hi).
            nonlocal skip
            while True:
                j = max(lo, self.next_check - base - 1)
                if j >= hi:
                    return
                if skip is None:
                    skip = set(blank.tolist()) | {b[0] for b in blk.bad}
                while j < hi and j in skip:
                    j += 1
                if j >= hi:
                    return
                self.next_check = self.checkpoint(lines_upto(j))
                lo = j + 1

        lo = 0
        for j, raw, reason in blk.bad:
            checkpoints(lo, j)
            tally.lines = lines_upto(j)
            tally.bad(base + j + 1, raw, reason)
            lo = j + 1
        checkpoints(lo, blk.lines)
        self.physical += blk.lines
        self.blanks += len(blank)
        tally.lines, tally.physical = self.physical - self.blanks, self.physical
        if len(blk.timestamp):
            if self.helper is None:
                self.ucol.append(self.users.add(blk.user))
                self.icol.append(self.items.add(blk.item))
            else:  # the two tables are independent: items on the helper thread meanwhile
                items = self.helper.submit(self.items.add, blk.item)
                self.ucol.append(self.users.add(blk.user))
                self.icol.append(items.result())
            self.tcol.append(blk.timestamp)
            self.rows += len(blk.timestamp)


# --------------------------------------------------------------------------- blocks


@dataclass
class _Block:
    """One parsed block: its physical line count, its blank lines (sorted block line indices),
    its malformed lines (block line index, raw line, reason; in order) and its good rows in
    line order: timestamps, and user / item ids as a list of str (per-line path) or, from the
    compiled scanner, (row -> block id index, the block's distinct ids as UTF-8 values,
    offsets and hashes, in order of first appearance)."""

    lines: int
    blank: np.ndarray
    bad: list[tuple[int, bytes, str]]
    user: list[str] | tuple[np.ndarray, ...]
    item: list[str] | tuple[np.ndarray, ...]
    timestamp: np.ndarray


class _BlockSpec:
    """What a worker needs to parse a block of one format."""

    def __init__(self, fmt: str, kernels: tuple | None) -> None:
        self.fmt = fmt
        self.line = _line_parser(fmt)
        self.div = 1 if fmt == "csv" else _REVIEW_FIELDS[fmt][3]
        self.per_line = 0 if fmt == "csv" else 128  # see _outputs
        self.kernel = None
        self.args: tuple = ()
        self.intern = None
        self.skip = [0, 0]  # per table: blocks to go before deduplicating in the block again
        if kernels is not None:  # (scanner, id table) of _kernels: the scanner fits fmt
            self.kernel, self.intern = kernels
            if fmt == "csv":
                self.args = (_CSV_ID, _CSV_RATING)
            else:
                keys = tuple(np.frombuffer(k.encode(), dtype=np.uint8)
                             for k in _REVIEW_FIELDS[fmt][:3])
                self.args = (*keys, _STR_CLASS, _HEX, _ESCAPES)

    def block_ids(self, table: int, ids: list[tuple]) -> tuple:
        """A block's ids for table 0 (users) or 1 (items), deduplicated in the block (see
        _block_ids) while that removes a good share of them, else as they are (the global
        table then sees every row; the codes are the same either way). Where it does not pay,
        every 16th block is deduplicated to check again."""
        if self.skip[table] > 0:
            self.skip[table] -= 1
            return (None, ids)
        out = _block_ids(self.intern, ids)
        if len(out[3]) > 0.75 * len(out[0]):
            self.skip[table] = 15
        return out


def _line_parser(fmt: str):
    """The per-line path: raw line -> (user, item, timestamp) for a good line, the reason for a
    malformed one, None for a blank one (exactly the plain line-by-line reader's rules)."""
    if fmt == "csv":
        return _csv_line
    ukey, ikey, tkey, div = _REVIEW_FIELDS[fmt]
    parse = _parse_2014 if fmt == "2014" else json.loads
    lim = _INT_LIMIT

    def line(raw: bytes) -> tuple[str, str, int] | str | None:
        try:
            rec = parse(raw.decode("utf-8"))  # str parses faster than bytes
            u = rec[ukey]
            i = rec[ikey]
            t = rec[tkey]
        except KeyError as exc:
            return f"missing field {exc}"
        except _PARSE_ERRORS as exc:
            if raw.isspace():
                return None
            return f"unparseable: {type(exc).__name__}"
        if type(t) is not int or not -lim < t < lim:
            t = _as_int(t)
            if t is None:
                return f"{tkey} is not an integer"
        if type(u) is not str or not u or type(i) is not str or not i:
            u, i = _as_id(u), _as_id(i)
            if u is None or i is None:
                return f"empty or non-string {ukey} or {ikey}"
        return u, i, t // div

    return line


def _csv_line(raw: bytes) -> tuple[str, str, int] | str | None:
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return "not UTF-8"
    if not text:
        return None
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
        return "not item,user,rating,timestamp with an integer timestamp"
    return u, i, t


def _parse_block(data: bytes, spec: _BlockSpec) -> _Block:
    """Parse one block of whole lines (run on a worker thread)."""
    buf = data if data.endswith(b"\n") else data + b"\n"  # the scanners stop at a newline
    if spec.kernel is None:
        return _parse_lines(buf, data, spec)
    arr = np.frombuffer(buf, dtype=np.uint8)
    arr.flags.writeable = False  # a reused bytearray too: one compiled version of the scanner
    n, _g, status, starts, rows, ua, ia = spec.kernel(arr, *_outputs(buf, len(arr), spec.per_line),
                                                      *spec.args)
    ts = rows[_R_TS] // spec.div if spec.div != 1 else rows[_R_TS]
    ua.flags.writeable = ia.flags.writeable = False  # typed as the blocks: one compiled version
    users = (ua, rows[_R_U0], rows[_R_U1], rows[_R_UH])
    items = (ia, rows[_R_I0], rows[_R_I1], rows[_R_IH])
    blank = np.flatnonzero(status == _BLANK)
    slow = np.flatnonzero(status == _SLOW)
    bad: list[tuple[int, bytes, str]] = []
    if len(slow):
        rows_slow, us, its, tv, blanks, bad = _slow_lines(data, starts, slow, spec.line)
        if blanks:
            blank = np.union1d(blank, np.array(blanks, dtype=np.int64))
        if rows_slow:  # interleave the per-line path's rows with the scanner's, in line order
            good = np.flatnonzero(status == _GOOD)
            slow_rows = np.array(rows_slow, dtype=np.int64)
            order = np.argsort(np.concatenate([good, slow_rows]), kind="stable")
            ts = np.concatenate([ts, np.array(tv, dtype=np.int64)])[order]
            before = np.searchsorted(good, slow_rows)  # scanner rows before each per-line row
            return _Block(n, blank, bad, spec.block_ids(0, _segments(users, before, us)),
                          spec.block_ids(1, _segments(items, before, its)), ts)
    return _Block(n, blank, bad, spec.block_ids(0, [users]), spec.block_ids(1, [items]), ts)


def _outputs(buf: bytes, n: int, per_line: int) -> tuple[np.ndarray, ...]:
    """A scanner's output arrays for the block ``buf`` of ``n`` bytes: (status, starts, rows)
    with room for its lines, and the two id arenas (``n + 8`` bytes each).

    ``per_line`` > 0 (JSON, lines of hundreds of bytes): room for n / per_line lines (the
    scanner grows the arrays if the block has more), all five in one allocation, for which
    numpy asks the kernel for huge pages (4 MiB or more): several hundred fewer page faults
    per block, measured 10-25% faster on the 10M-line files. 0 (CSV, lines of tens of
    bytes): the lines counted first (memchr speed), and separate arenas committed only where
    written (one allocation would commit huge pages for mostly unwritten arenas: 30% more
    peak memory on the CSV file).
    """
    if per_line:
        cap = n // per_line + 64
        mem = np.empty(65 * cap + 2 * (n + 8), dtype=np.uint8)
        ua, ia = mem[65 * cap : 65 * cap + n + 8], mem[65 * cap + n + 8 :]
    else:
        cap = buf.count(b"\n") + 1
        mem = np.empty(65 * cap, dtype=np.uint8)
        ua, ia = np.empty(n + 8, dtype=np.uint8), np.empty(n + 8, dtype=np.uint8)
    rows = mem[: 56 * cap].view(np.int64).reshape(7, cap)
    return mem[64 * cap : 65 * cap], mem[56 * cap : 64 * cap].view(np.int64), rows, ua, ia


def _parse_lines(buf: bytes, data: bytes, spec: _BlockSpec) -> _Block:
    """A block without the compiled scanner: every line through the per-line path."""
    n = buf.count(b"\n")
    starts = np.empty(n, dtype=np.int64)
    starts[0] = 0
    starts[1:] = np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 10)[:-1] + 1
    _rows, us, its, tv, blanks, bad = _slow_lines(data, starts, range(n), spec.line)
    return _Block(n, np.array(blanks, dtype=np.int64), bad, us, its, np.array(tv, dtype=np.int64))


def _slow_lines(data: bytes, starts: np.ndarray, which, line) -> tuple:
    """Lines ``which`` (block line indices, ascending) through the per-line path: (rows, users,
    items, timestamps) of the good ones, the blank ones, and the malformed (index, raw, reason)."""
    rows: list[int] = []
    us: list[str] = []
    its: list[str] = []
    tv: list[int] = []
    blanks: list[int] = []
    bad: list[tuple[int, bytes, str]] = []
    end = len(data)
    bounds = starts.tolist() + [end]
    for j in (which.tolist() if isinstance(which, np.ndarray) else which):
        raw = data[bounds[j]:min(bounds[j + 1], end)]
        out = line(raw)
        if out is None:
            blanks.append(j)
        elif type(out) is str:
            bad.append((j, raw, out))
        else:
            rows.append(j)
            us.append(out[0])
            its.append(out[1])
            tv.append(out[2])
    return rows, us, its, tv, blanks, bad


def _segments(ids: tuple, before: np.ndarray, extra: list[str]) -> list[tuple]:
    """The scanner's ids (block, begins, ends, hashes) with the per-line path's ids ``extra``
    placed among them (extra[k] after the first before[k] scanner rows), as segments of the
    same form in row order."""
    arr, begins, ends, hashes = ids
    out = []
    done = 0
    for k, value in enumerate(extra):
        if before[k] > done:
            out.append((arr, begins[done:before[k]], ends[done:before[k]], hashes[done:before[k]]))
            done = before[k]
        raw = _encode_id(value)
        out.append((np.frombuffer(raw, dtype=np.uint8), np.zeros(1, dtype=np.int64),
                    np.full(1, len(raw), dtype=np.int64), _NO_HASHES))
    if len(begins) > done:
        out.append((arr, begins[done:], ends[done:], hashes[done:]))
    return out


def _block_ids(intern, segments: list[tuple]) -> tuple:
    """(row -> block id index, the block's distinct ids' values, offsets and hashes), from the
    rows' ids: segments (vals, begins, ends, hashes or _NO_HASHES) of ids
    vals[begins[j]:ends[j]], in row order."""
    return _table_block(*_intern_segments(intern, _new_table(max(
        sum(len(seg[1]) for seg in segments), 16)), segments))


def _intern_segments(intern, state: tuple, segments: list[tuple]) -> tuple[tuple, np.ndarray]:
    """Code the segments' ids in order into the table ``state``: (new state, codes)."""
    parts = []
    for vals, begins, ends, hashes in segments:
        part = np.empty(len(begins), dtype=np.int64)
        state = intern(*state, vals, begins, ends, hashes, part)[:5]
        parts.append(part)
    return state, (parts[0] if len(parts) == 1 else np.concatenate(parts))


def _table_block(state: tuple, local: np.ndarray) -> tuple:
    """A block table as (row -> index, the distinct ids' values, offsets and hashes)."""
    _slots, hashes, arena, aoff, n = state
    arena = arena[:aoff[n]]
    arena.flags.writeable = False  # typed as the blocks are: one compiled version
    return local, arena, aoff[:n + 1], hashes[:n]


def _read_blocks(path: Path, is_gz: bool, spec: _BlockSpec, acc: _Accumulator, workers: int,
                 block_bytes: int) -> None:
    """Parse the file's blocks on ``workers`` threads (:func:`harness.datasets.blocks.map_blocks`:
    at most ``2 workers + 1`` in flight; a plain file read by the workers with ``os.pread``, a gzip
    file inflated by ISA-L on a thread of its own), accounting them in file order; the item
    table is filled on a helper thread meanwhile. Blocks read before a damaged part of the file
    are accounted before the error is raised."""
    from concurrent.futures import ThreadPoolExecutor

    def parse(data: bytes, _offset: int | None) -> _Block:
        return _parse_block(data, spec)

    try:
        with (ThreadPoolExecutor(1) as helper,
              contextlib.closing(map_blocks(path, parse, gz=is_gz, block_bytes=block_bytes,
                                            workers=workers, reuse_buffers=True)) as blocks):
            if spec.kernel is not None:
                acc.helper = helper
            for blk in blocks:
                acc.add(blk)
    except _GZ_ERRORS as exc:
        raise _read_error(path, acc.physical, exc) from None


def _gz_errors() -> tuple[type[BaseException], ...]:
    try:
        from isal.isal_zlib import error as isal_error
    except ImportError:  # pragma: no cover - isal is a dependency
        return _IO_ERRORS
    return (*_IO_ERRORS, isal_error)


_GZ_ERRORS = _gz_errors()


# --------------------------------------------------------------------------- compiled scanners
#
# Plain Python functions compiled on first use by numba (nogil, cached on disk). A scanner reads
# a block that ends with a newline, one line at a time, and gives per line its status (_GOOD:
# the three fields were extracted; _BLANK; _SLOW: anything else, decided by the per-line path)
# and start offset, and per good line its timestamp, the user's and the item's hashes and byte
# ranges in two arenas the scanner copies the ids into while the line is in cache (the id
# tables then read those compact arenas, not ids spread over megabytes of block). A line is
# _GOOD only where the per-line path would surely accept it with these same values; on any
# doubt it is _SLOW. The scanners and the id table hash ids with the one _id_hash (an id hashed
# by a scanner and the same id hashed by the table must get the same code).

_GOOD, _BLANK, _SLOW = 0, 1, 2


def _id_hash(vals, a, b):
    """The 64-bit hash of the id vals[a:b] (UTF-8 bytes): 8 bytes at a time, little-endian,
    mixed with splitmix64's constants. Compiled into the kernels (registered with numba by
    _kernels), not meant to be called from Python."""
    h = np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(b - a)
    while a + 8 <= b:
        w = (np.uint64(vals[a])
             | (np.uint64(vals[a + 1]) << np.uint64(8))
             | (np.uint64(vals[a + 2]) << np.uint64(16))
             | (np.uint64(vals[a + 3]) << np.uint64(24))
             | (np.uint64(vals[a + 4]) << np.uint64(32))
             | (np.uint64(vals[a + 5]) << np.uint64(40))
             | (np.uint64(vals[a + 6]) << np.uint64(48))
             | (np.uint64(vals[a + 7]) << np.uint64(56)))
        h = (h ^ w) * np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(31)
        a += 8
    w = np.uint64(0)
    sh = np.uint64(0)
    while a < b:
        w |= np.uint64(vals[a]) << sh
        sh += np.uint64(8)
        a += 1
    h = (h ^ w) * np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(29)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(32)
    return np.int64(h)

# inside a JSON string: 0 plain ASCII, 1 quote, 2 backslash, 3 control (< 0x20), 4 non-ASCII
_STR_CLASS = np.zeros(256, dtype=np.uint8)
_STR_CLASS[:32] = 3
_STR_CLASS[ord('"')] = 1
_STR_CLASS[ord("\\")] = 2
_STR_CLASS[128:] = 4
_HEX = np.zeros(256, dtype=np.uint8)
_HEX[np.frombuffer(b"0123456789abcdefABCDEF", dtype=np.uint8)] = 1
_ESCAPES = np.zeros(256, dtype=np.uint8)  # after a backslash, besides u
_ESCAPES[np.frombuffer(b'"\\/bfnrt', dtype=np.uint8)] = 1
# CSV: bytes of an id (printable ASCII but space, comma, quote) and of the rating (with space)
_CSV_ID = np.zeros(256, dtype=np.uint8)
_CSV_ID[0x21:0x7F] = 1
_CSV_ID[[ord(","), ord('"')]] = 0
_CSV_RATING = _CSV_ID.copy()
_CSV_RATING[0x20] = 1

# rows of a scanner's per-good-line output
_R_TS, _R_U0, _R_U1, _R_I0, _R_I1, _R_UH, _R_IH = range(7)


def _json_kernel(buf, status, starts, rows, ua, ia, ku, ki, kt, sc, hx, esc_ok):
    """Strict JSON (json.loads' grammar: whitespace is space, tab, CR; strings without control
    characters, with valid escapes and valid UTF-8 (no surrogates, no overlongs); numbers
    -?(0|[1-9]d*)(.d+)?([eE][+-]?d+)?; true/false/null) of one object per line. Good: the keys
    ku, ki at the top level hold non-empty strings without escapes, kt an integer of at most 18
    digits (each key's last occurrence). NaN/Infinity, nesting deeper than 60, escaped top-level
    keys and anything unexpected are _SLOW. Returns (lines, good lines, status, line starts,
    per good line rows _R_*, the user arena, the item arena). The outputs come in from
    :func:`_outputs` (``status``, ``starts``, ``rows``: room for the block's lines, grown here
    if it has more; ``ua``, ``ia``: the arenas, ``len(buf) + 8`` bytes each)."""
    n = len(buf)
    cap = len(status)
    uo = 0
    io = 0
    stack = np.empty(64, dtype=np.uint8)
    w64 = buf[:n - n % 8].view(np.uint64)
    nw = len(w64)
    nku, nki, nkt = len(ku), len(ki), len(kt)
    p = 0
    k = 0
    g = 0
    while p < n:
        if k == cap:
            cap *= 2
            grown_status = np.empty(cap, dtype=np.uint8)
            grown_starts = np.empty(cap, dtype=np.int64)
            for j in range(k):  # (loops, not slice copies: they compile much faster)
                grown_status[j] = status[j]
                grown_starts[j] = starts[j]
            status = grown_status
            starts = grown_starts
            grown_rows = np.empty((7, cap), dtype=np.int64)
            for r in range(7):
                for j in range(g):
                    grown_rows[r, j] = rows[r, j]
            rows = grown_rows
        start = p
        starts[k] = p
        st = 2
        c = buf[p]
        while c == 32 or c == 9 or c == 13 or c == 11 or c == 12:  # bytes.isspace()
            p += 1
            c = buf[p]
        if c == 10:
            st = 1
        else:
            p = start
            c = buf[p]
            while c == 32 or c == 9 or c == 13:
                p += 1
                c = buf[p]
            if c == 123:
                depth = 0
                # what comes next: 0 a value, 1 a key, 2 a key or '}', 3 a value or ']',
                # 4 ':', 5 ',' or the container's end
                expect = 0
                which = 0
                found = 0
                u0 = u1 = i0 = i1 = 0
                t = 0
                while True:
                    c = buf[p]
                    while c == 32 or c == 9 or c == 13:
                        p += 1
                        c = buf[p]
                    if c == 34:  # string
                        s = p + 1
                        p = s
                        esc = False
                        ok = True
                        while True:
                            # the plain run up to the next quote, backslash, control or
                            # non-ASCII byte, 8 bytes at a time from the word holding p (its
                            # bytes before p masked off); the first flagged byte is that one,
                            # or a plain one flagged by a borrow from a masked byte, which the
                            # byte loop below steps over
                            wi = p >> 3
                            while wi < nw:
                                x = w64[wi]
                                t1 = x ^ np.uint64(0x2222222222222222)  # '"'
                                t2 = x ^ np.uint64(0x5C5C5C5C5C5C5C5C)  # '\\'
                                sp = ((((t1 - np.uint64(0x0101010101010101)) & ~t1)
                                       | ((t2 - np.uint64(0x0101010101010101)) & ~t2)
                                       | ((x - np.uint64(0x2020202020202020)) & ~x) | x)
                                      & (np.uint64(0x8080808080808080)
                                         << np.uint64((p & 7) << 3)))
                                if sp != 0:  # the byte of the lowest flag
                                    p = (wi << 3) + np.int64(
                                        (((sp & (~sp + np.uint64(1))) >> np.uint64(7))
                                         * np.uint64(0x0001020304050607)) >> np.uint64(56))
                                    break
                                wi += 1
                                p = wi << 3
                            while sc[buf[p]] == 0:  # (after the last whole word: byte by byte)
                                p += 1
                            c = buf[p]
                            if c == 34:
                                break
                            if c == 92:
                                esc = True
                                d = buf[p + 1]
                                if d == 117:
                                    if (hx[buf[p + 2]] and hx[buf[p + 3]] and hx[buf[p + 4]]
                                            and hx[buf[p + 5]]):
                                        p += 6
                                    else:
                                        ok = False
                                        break
                                elif esc_ok[d]:
                                    p += 2
                                else:
                                    ok = False
                                    break
                            elif c >= 0xC2 and c < 0xE0:
                                if 0x80 <= buf[p + 1] <= 0xBF:
                                    p += 2
                                else:
                                    ok = False
                                    break
                            elif c >= 0xE0 and c < 0xF0:
                                d = buf[p + 1]
                                lo = 0xA0 if c == 0xE0 else 0x80
                                hi = 0x9F if c == 0xED else 0xBF
                                if lo <= d <= hi and 0x80 <= buf[p + 2] <= 0xBF:
                                    p += 3
                                else:
                                    ok = False
                                    break
                            elif c >= 0xF0 and c < 0xF5:
                                d = buf[p + 1]
                                lo = 0x90 if c == 0xF0 else 0x80
                                hi = 0x8F if c == 0xF4 else 0xBF
                                if (lo <= d <= hi and 0x80 <= buf[p + 2] <= 0xBF
                                        and 0x80 <= buf[p + 3] <= 0xBF):
                                    p += 4
                                else:
                                    ok = False
                                    break
                            else:  # control character, or a byte no UTF-8 sequence starts with
                                ok = False
                                break
                        if not ok:
                            break
                        e = p
                        p += 1
                        if expect == 1 or expect == 2:  # a key
                            if depth == 1:
                                if esc:
                                    break
                                ln = e - s
                                which = 0
                                if ln == nku:
                                    which = 1
                                    for j in range(ln):
                                        if buf[s + j] != ku[j]:
                                            which = 0
                                            break
                                if which == 0 and ln == nki:
                                    which = 2
                                    for j in range(ln):
                                        if buf[s + j] != ki[j]:
                                            which = 0
                                            break
                                if which == 0 and ln == nkt:
                                    which = 3
                                    for j in range(ln):
                                        if buf[s + j] != kt[j]:
                                            which = 0
                                            break
                            expect = 4
                            continue
                        if expect != 0 and expect != 3:
                            break
                        if depth == 1 and which != 0:
                            if which == 3 or esc or e == s:
                                break
                            if which == 1:
                                u0 = s
                                u1 = e
                            else:
                                i0 = s
                                i1 = e
                            found |= which
                            which = 0
                        expect = 5
                    elif c == 58:  # :
                        if expect != 4:
                            break
                        expect = 0
                        p += 1
                    elif c == 44:  # ,
                        if expect != 5:
                            break
                        expect = 1 if stack[depth - 1] == 123 else 0
                        p += 1
                    elif c == 123 or c == 91:  # { [
                        if expect != 0 and expect != 3:
                            break
                        if (depth == 1 and which != 0) or depth >= 60:
                            break
                        stack[depth] = c
                        depth += 1
                        expect = 2 if c == 123 else 3
                        p += 1
                    elif c == 125 or c == 93:  # } ]
                        if depth == 0 or stack[depth - 1] + 2 != c:
                            break
                        if not (expect == 5 or (c == 125 and expect == 2)
                                or (c == 93 and expect == 3)):
                            break
                        depth -= 1
                        p += 1
                        if depth == 0:
                            c = buf[p]
                            while c == 32 or c == 9 or c == 13:
                                p += 1
                                c = buf[p]
                            if c == 10 and found == 7:
                                st = 0
                                rows[0, g] = t
                                rows[1, g] = uo
                                for x in range(u0, u1):
                                    ua[uo] = buf[x]
                                    uo += 1
                                rows[2, g] = uo
                                rows[3, g] = io
                                for x in range(i0, i1):
                                    ia[io] = buf[x]
                                    io += 1
                                rows[4, g] = io
                                rows[5, g] = _id_hash(buf, u0, u1)
                                rows[6, g] = _id_hash(buf, i0, i1)
                                g += 1
                            break
                        expect = 5
                    elif c == 45 or (c >= 48 and c <= 57):  # number
                        if expect != 0 and expect != 3:
                            break
                        neg = c == 45
                        if neg:
                            p += 1
                            c = buf[p]
                        q = p
                        if c == 48:
                            p += 1
                        elif c >= 49 and c <= 57:
                            p += 1
                            while buf[p] >= 48 and buf[p] <= 57:
                                p += 1
                        else:
                            break
                        nd = p - q
                        is_int = True
                        c = buf[p]
                        if c == 46:
                            p += 1
                            r = p
                            while buf[p] >= 48 and buf[p] <= 57:
                                p += 1
                            if p == r:
                                break
                            is_int = False
                            c = buf[p]
                        if c == 101 or c == 69:
                            p += 1
                            c = buf[p]
                            if c == 43 or c == 45:
                                p += 1
                            r = p
                            while buf[p] >= 48 and buf[p] <= 57:
                                p += 1
                            if p == r:
                                break
                            is_int = False
                        if depth == 1 and which != 0:
                            if which != 3 or not is_int or nd > 18:
                                break
                            v = 0
                            for j in range(q, q + nd):
                                v = v * 10 + (buf[j] - 48)
                            t = -v if neg else v
                            found |= 4
                            which = 0
                        expect = 5
                    elif c == 116 or c == 102 or c == 110:  # true false null
                        if expect != 0 and expect != 3:
                            break
                        if depth == 1 and which != 0:
                            break
                        if c == 116 and buf[p + 1] == 114 and buf[p + 2] == 117 and buf[p + 3] == 101:
                            p += 4
                        elif (c == 102 and buf[p + 1] == 97 and buf[p + 2] == 108
                              and buf[p + 3] == 115 and buf[p + 4] == 101):
                            p += 5
                        elif (c == 110 and buf[p + 1] == 117 and buf[p + 2] == 108
                              and buf[p + 3] == 108):
                            p += 4
                        else:
                            break
                        expect = 5
                    else:
                        break
        status[k] = st
        if st != 0:
            p = start
            while buf[p] != 10:
                p += 1
        k += 1
        p += 1
    return k, g, status[:k], starts[:k], rows[:, :g], ua[:uo], ia[:io]


def _csv_kernel(buf, status, starts, rows, ua, ia, idc, ratc):
    """Good: item,user,rating,timestamp with item and user of printable ASCII without spaces,
    commas or quotes, a rating of printable ASCII without commas or quotes, and a timestamp of
    at most 18 digits (optionally negative), then an optional CR. Returns as _json_kernel."""
    n = len(buf)
    cap = len(status)
    uo = 0
    io = 0
    p = 0
    k = 0
    g = 0
    while p < n:
        if k == cap:
            cap *= 2
            grown_status = np.empty(cap, dtype=np.uint8)
            grown_starts = np.empty(cap, dtype=np.int64)
            for j in range(k):  # (loops, not slice copies: they compile much faster)
                grown_status[j] = status[j]
                grown_starts[j] = starts[j]
            status = grown_status
            starts = grown_starts
            grown_rows = np.empty((7, cap), dtype=np.int64)
            for r in range(7):
                for j in range(g):
                    grown_rows[r, j] = rows[r, j]
            rows = grown_rows
        start = p
        starts[k] = p
        st = 2
        c = buf[p]
        while c == 32 or c == 9 or c == 13 or c == 11 or c == 12:
            p += 1
            c = buf[p]
        if c == 10:
            st = 1
        else:
            p = start
            i0 = p
            while idc[buf[p]]:
                p += 1
            i1 = p
            if i1 > i0 and buf[p] == 44:
                p += 1
                u0 = p
                while idc[buf[p]]:
                    p += 1
                u1 = p
                if u1 > u0 and buf[p] == 44:
                    p += 1
                    while ratc[buf[p]]:
                        p += 1
                    if buf[p] == 44:
                        p += 1
                        neg = buf[p] == 45
                        if neg:
                            p += 1
                        q = p
                        v = 0
                        while buf[p] >= 48 and buf[p] <= 57:
                            v = v * 10 + (buf[p] - 48)
                            p += 1
                        nd = p - q
                        if buf[p] == 13:
                            p += 1
                        if nd >= 1 and nd <= 18 and buf[p] == 10:
                            st = 0
                            rows[0, g] = -v if neg else v
                            rows[1, g] = uo
                            for x in range(u0, u1):
                                ua[uo] = buf[x]
                                uo += 1
                            rows[2, g] = uo
                            rows[3, g] = io
                            for x in range(i0, i1):
                                ia[io] = buf[x]
                                io += 1
                            rows[4, g] = io
                            rows[5, g] = _id_hash(buf, u0, u1)
                            rows[6, g] = _id_hash(buf, i0, i1)
                            g += 1
        status[k] = st
        if st != 0:
            p = start
            while buf[p] != 10:
                p += 1
        k += 1
        p += 1
    return k, g, status[:k], starts[:k], rows[:, :g], ua[:uo], ia[:io]


def _intern_kernel(slots, hashes, arena, aoff, n, vals, begins, ends, hin, out):
    """Code each id vals[begins[j]:ends[j]] into out[j], new ids taking the next codes; returns
    the (possibly grown) table and a number to ignore. A slot holds the high 32 bits of an
    id's hash and its code (low 32 bits), -1 when empty (linear probing by the hash's low
    bits, at most half full); a code's id is arena[aoff[c]:aoff[c + 1]], its hash hashes[c];
    ids are compared byte for byte, their hash first. ``hin``: the ids' hashes if known
    (from a scanner), else empty. Ids go in batches whose first slot, code offsets and bytes are
    touched first (in a table larger than the caches): the misses then overlap."""
    rows = len(begins)
    hv = np.empty(min(rows, 64), dtype=np.int64)
    sink = 0
    for j0 in range(0, rows, 64):
        j1 = min(j0 + 64, rows)
        mask = len(slots) - 1
        for j in range(j0, j1):
            if len(hin) > 0:
                hv[j - j0] = hin[j]
            else:
                hv[j - j0] = _id_hash(vals, begins[j], ends[j])
        if mask >= 1 << 17:  # touch: slots, then the offsets and bytes of their codes
            for j in range(j0, j1):
                sink += slots[hv[j - j0] & mask]
            for j in range(j0, j1):
                c = slots[hv[j - j0] & mask]
                if c != -1:
                    sink += aoff[c & 0xFFFFFFFF]
            for j in range(j0, j1):
                c = slots[hv[j - j0] & mask]
                if c != -1:
                    sink += arena[aoff[c & 0xFFFFFFFF]]
        for j in range(j0, j1):
            a = begins[j]
            b = ends[j]
            ln = b - a
            h64 = hv[j - j0]
            i = h64 & mask
            while True:
                sl = slots[i]
                if sl == -1:
                    if n >= len(hashes):  # len(aoff) is always len(hashes) + 1
                        grown = np.empty(2 * len(hashes), dtype=np.int64)
                        for x in range(n):  # (loops, not slice copies: faster to compile)
                            grown[x] = hashes[x]
                        hashes = grown
                        grown_off = np.empty(len(grown) + 1, dtype=np.int64)
                        for x in range(n + 1):
                            grown_off[x] = aoff[x]
                        aoff = grown_off
                    m = aoff[n]
                    if m + ln > len(arena):
                        grown_arena = np.empty(2 * len(arena) + ln, dtype=np.uint8)
                        for x in range(m):
                            grown_arena[x] = arena[x]
                        arena = grown_arena
                    for x in range(a, b):
                        arena[m] = vals[x]
                        m += 1
                    aoff[n + 1] = m
                    hashes[n] = h64
                    slots[i] = ((h64 >> 32) << 32) | n
                    out[j] = n
                    n += 1
                    if 2 * n > mask + 1:  # rehash into twice the slots
                        old = slots
                        slots = np.empty(2 * len(old), dtype=np.int64)
                        for x in range(len(slots)):
                            slots[x] = -1
                        mask = len(slots) - 1
                        for r in range(len(old)):
                            if old[r] != -1:
                                q = hashes[old[r] & 0xFFFFFFFF] & mask
                                while slots[q] != -1:
                                    q = (q + 1) & mask
                                slots[q] = old[r]
                    break
                if (sl >> 32) == (h64 >> 32):
                    c = sl & 0xFFFFFFFF
                    s = aoff[c]
                    if aoff[c + 1] - s == ln:
                        same = True
                        for x in range(ln):
                            if arena[s + x] != vals[a + x]:
                                same = False
                                break
                        if same:
                            out[j] = c
                            break
                i = (i + 1) & mask
    return slots, hashes, arena, aoff, n, sink  # (sink keeps the touching loads)


@functools.cache
def _numba_jit() -> Callable | None:
    """numba's njit (nogil, cached on disk), with _id_hash registered for the kernels to call;
    None where numba is unavailable."""
    try:
        import numba
        from numba.extending import register_jitable
    except Exception as exc:  # noqa: BLE001 - a broken numba must not stop the reader
        logger.warning("numba unavailable (%s): Amazon reviews are parsed line by line", exc)
        return None
    register_jitable(_id_hash)
    return numba.njit(nogil=True, cache=True)


@functools.cache
def _jitted(fn: Callable) -> Callable | None:
    """One numba dispatcher per kernel (compiled or loaded on its first call), or None."""
    jit = _numba_jit()
    return None if jit is None else jit(fn)


_SAMPLES = {"json": (b'{"reviewerID": "u", "asin": "i", "unixReviewTime": 1}\n', "2018"),
            "csv": (b"i,u,5.0,1\n", "csv")}


@functools.cache
def _kernels(kind: str) -> tuple | None:
    """The compiled scanner of ``kind`` ("json": the 2014/2018/2023 one, or "csv") and the id
    table's kernel, or None where numba is unavailable (then every line takes the per-line
    path). Only what the format needs is compiled: on the first use on a machine (numba's
    on-disk cache; some seconds for the JSON scanner), then loaded in about a second."""
    scanner = _jitted(_json_kernel if kind == "json" else _csv_kernel)
    intern = _jitted(_intern_kernel)
    if scanner is None or intern is None:
        return None
    kernels = (scanner, intern)
    try:  # compile (or load) here, not on the workers
        data, fmt = _SAMPLES[kind]
        _HashCodes(intern).add(_parse_block(data, _BlockSpec(fmt, kernels)).user)
    except Exception as exc:  # noqa: BLE001 - as above (tests/test_amazon_readers.py insists)
        logger.warning("the compiled Amazon reviews scanner failed to build (%s): parsing line "
                       "by line", exc)
        return None
    return kernels


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
