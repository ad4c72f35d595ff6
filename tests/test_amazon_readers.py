"""Tests for the Amazon Reviews readers, preprocessing, splits, groups, and the raw-file
fingerprint (:func:`harness.cache.fingerprint`) the Amazon datasets key their caches by."""

from __future__ import annotations

import codecs
import gzip
import importlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from harness.cache import fingerprint
from harness.errors import DataFormatError, UserError

# Imported by name: ruff's isort sorts `harness.datasets` (mapped from datasets/) as third-party
# under the current config but first-party with known-first-party set; this works under both.
ar = importlib.import_module("harness.datasets.amazon_readers")

# (user, item, unix seconds)
ROWS = [("U1", "I1", 1_400_000_000), ("U2", "I1", 1_400_000_100), ("U1", "I2", 1_300_000_000)]


def write(path: Path, lines: list[str]) -> Path:
    text = "\n".join(lines) + "\n"
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def rec_2014(u: str, i: str, t: int) -> dict:
    return {"reviewerID": u, "asin": i, "helpful": [0, 0], "reviewText": "it's good",
            "overall": 5.0, "summary": "ok", "unixReviewTime": t, "reviewTime": "05 13, 2014"}


def line_2014(u: str, i: str, t: int) -> str:
    return repr(rec_2014(u, i, t))  # Python dict literal with single quotes, as in the dumps


def line_2018(u: str, i: str, t: int) -> str:
    return json.dumps({"overall": 4.0, "verified": True, "reviewTime": "05 13, 2014",
                       "reviewerID": u, "asin": i, "style": {"Format:": " Paperback"},
                       "reviewerName": "x", "reviewText": "fine", "summary": "s",
                       "unixReviewTime": t, "vote": "1,234"})


def line_2023(u: str, i: str, t: int) -> str:
    return json.dumps({"rating": 5.0, "title": "t", "text": "x", "images": [],
                       "asin": i + "-child", "parent_asin": i, "user_id": u,
                       "timestamp": t * 1000 + 999, "helpful_vote": 0,
                       "verified_purchase": True})


def line_csv(u: str, i: str, t: int) -> str:
    return f"{i},{u},5.0,{t}"


def triples(inter: ar.Interactions) -> list[tuple[str, str, int]]:
    return [(inter.user_ids[u], inter.item_ids[i], int(t))
            for u, i, t in zip(inter.user, inter.item, inter.timestamp, strict=True)]


def make(user, item, ts=None) -> ar.Interactions:
    user, item = np.asarray(user, dtype=np.int64), np.asarray(item, dtype=np.int64)
    ts = np.arange(len(user), dtype=np.int64) if ts is None else np.asarray(ts, dtype=np.int64)
    n_u = int(user.max()) + 1 if len(user) else 0
    n_i = int(item.max()) + 1 if len(item) else 0
    return ar.Interactions(user, item, ts,
                           np.array([f"u{k}" for k in range(n_u)], dtype=object),
                           np.array([f"i{k}" for k in range(n_i)], dtype=object))


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("name", "line", "fmt"),
    [
        ("reviews_Beauty_5.json.gz", line_2014, "2014"),
        ("reviews_Beauty.json", line_2014, "2014"),
        ("Beauty_5.json.gz", line_2018, "2018"),
        ("Beauty.json", line_2018, "2018"),
        ("Beauty.jsonl", line_2023, "2023"),
        ("Beauty.jsonl.gz", line_2023, "2023"),
        ("Beauty.csv", line_csv, "csv"),
        # ambiguous names: a 2014 file saved under the 2018 name, and the reverse
        ("Beauty_5.json.gz", line_2014, "2014"),
        ("reviews_Beauty_5.json", line_2018, "2018"),
    ],
)
def test_formats_detected_and_read(tmp_path, name, line, fmt):
    write(tmp_path / name, [line(*r) for r in ROWS] + [""])  # trailing blank line ignored
    got_fmt, reviews, meta = ar.find_files(tmp_path, "Beauty")
    assert (got_fmt, reviews, meta) == (fmt, tmp_path / name, None)
    inter, stats = ar.read_interactions(reviews, got_fmt)
    assert triples(inter) == ROWS  # 2023: milliseconds floored to seconds
    assert inter.timestamp.dtype == np.int64 and inter.user.dtype == np.int64
    assert (inter.n_users, inter.n_items, len(inter)) == (2, 2, 3)
    assert list(inter.user) == [0, 1, 0] and list(inter.item) == [0, 0, 1]
    assert stats == ar.ReadStats(lines=3, malformed=0, first_bad_line=None, first_bad_text=None)


def test_2014_json_style_lines_and_meta_found(tmp_path):
    # 2014 5-core files are often strict JSON; the "helpful" field marks them as 2014
    write(tmp_path / "Toys_5.json", [json.dumps(rec_2014(*r)) for r in ROWS])
    write(tmp_path / "meta_Toys.json.gz", [repr({"asin": "I1", "title": "A"})])
    fmt, reviews, meta = ar.find_files(tmp_path, "Toys")
    assert (fmt, meta) == ("2014", tmp_path / "meta_Toys.json.gz")
    assert triples(ar.read_interactions(reviews, fmt)[0]) == ROWS


def test_2014_literal_is_never_evaluated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = ("{'reviewerID': __import__('os').system('touch PWNED'), 'asin': 'I9', "
            "'unixReviewTime': 1}")
    good = [line_2014(f"U{k}", "I1", 1_000 + k) for k in range(200)]
    path = write(tmp_path / "reviews_Beauty_5.json.gz", good[:100] + [evil] + good[100:])
    inter, stats = ar.read_interactions(path, "2014")
    assert not (tmp_path / "PWNED").exists()
    assert len(inter) == 200 and stats.malformed == 1
    assert stats.first_bad_line == 101 and stats.first_bad_text.startswith("{'reviewerID'")


def test_malformed_under_limit_skipped(tmp_path):
    lines = [line_2018(f"U{k}", f"I{k % 7}", 1_000 + k) for k in range(300)]
    lines[10] = lines[10][:-5]  # truncated JSON
    lines[20] = json.dumps({"reviewerID": "U", "asin": "I"})  # missing timestamp
    lines[30] = json.dumps({"reviewerID": "U", "asin": "I", "unixReviewTime": "soon"})
    lines.insert(5, "   ")  # blank: ignored, not counted, but shifts physical line numbers
    path = write(tmp_path / "Beauty.json.gz", lines)
    inter, stats = ar.read_interactions(path, "2018", max_malformed_frac=0.02)
    assert len(inter) == 297
    assert (stats.lines, stats.malformed, stats.first_bad_line) == (300, 3, 12)
    assert ar.read_interactions(path, "2018")[1].malformed == 3  # 3/300 = 1% is allowed


def test_malformed_over_limit_raises(tmp_path):
    lines = [line_2023(f"U{k}", "I1", 1_000 + k) for k in range(100)]
    lines[41] = "{not json"
    lines[77] = json.dumps({"user_id": "U", "asin": "no parent", "timestamp": 5})
    path = write(tmp_path / "Beauty.jsonl", lines)
    with pytest.raises(DataFormatError) as err:
        ar.read_interactions(path, "2023")
    msg = str(err.value)
    assert "Beauty.jsonl" in msg and "line 42" in msg and "{not json" in msg and "2 of 100" in msg
    assert isinstance(err.value, UserError)
    # within a looser limit the same file reads
    inter, stats = ar.read_interactions(path, "2023", max_malformed_frac=0.05)
    assert len(inter) == 98 and stats.first_bad_line == 42


def test_wrong_format_fails_early(tmp_path):
    # a 2014 literal file read as strict 2018 JSON: every line malformed
    lines = [line_2014(f"U{k}", "I1", k) for k in range(5000)]
    path = write(tmp_path / "x.json", lines)
    with pytest.raises(DataFormatError, match="first 1000 non-empty lines") as err:
        ar.read_interactions(path, "2018")
    assert "2014 format" in str(err.value)


def test_progress_logging(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(ar, "_PROGRESS_EVERY", 100)
    monkeypatch.setattr(ar, "_EARLY_FAIL_LINES", 100)
    path = write(tmp_path / "Beauty.csv", [line_csv(f"U{k}", "I", k) for k in range(250)])
    with caplog.at_level("INFO", logger=ar.__name__):
        ar.read_interactions(path, "csv", progress=True)
    msgs = [r.getMessage() for r in caplog.records]
    assert any("100 lines read" in m for m in msgs) and any("200 lines read" in m for m in msgs)


def test_bad_gzip_and_empty_file(tmp_path):
    bad = tmp_path / "Beauty_5.json.gz"
    bad.write_text(line_2018("U", "I", 1))
    with pytest.raises(DataFormatError, match="not a gzip file"):
        ar.read_interactions(bad, "2018")
    truncated = tmp_path / "t.json.gz"
    truncated.write_bytes(gzip.compress(("\n".join(line_2018("U", "I", 1)
                                                   for _ in range(2000))).encode())[:-40])
    with pytest.raises(DataFormatError, match="truncated or corrupted"):
        ar.read_interactions(truncated, "2018")
    empty = write(tmp_path / "e.csv", [""])
    with pytest.raises(DataFormatError, match="no readable reviews"):
        ar.read_interactions(empty, "csv")


def test_csv_with_quotes_and_bad_rows(tmp_path):
    lines = [line_csv(f"U{k}", f"I{k}", 100 + k) for k in range(200)]
    lines[3] = '"I3","U3","5.0","103"'
    lines[4] = "I4,U4,5.0"  # too few fields
    path = write(tmp_path / "Beauty.csv", lines)
    inter, stats = ar.read_interactions(path, "csv")
    assert len(inter) == 199 and stats.malformed == 1 and stats.first_bad_line == 5
    assert ("U3", "I3", 103) in triples(inter)


def test_missing_files_message(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "beauty_5.json.gz").write_bytes(b"")
    with pytest.raises(DataFormatError) as err:
        ar.find_files(tmp_path, "Beauty")
    msg = str(err.value)
    for name in ("reviews_Beauty_5.json.gz", "reviews_Beauty.json", "Beauty_5.json.gz",
                 "Beauty.json", "Beauty.jsonl", "Beauty.jsonl.gz", "Beauty.csv",
                 "meta_Beauty.json.gz", "meta_Beauty.jsonl"):
        assert name in msg
    assert "notes.txt" in msg and "beauty_5.json.gz" in msg
    for url in ("jmcauley.ucsd.edu/data/amazon", "nijianmo.github.io/amazon",
                "amazon-reviews-2023.github.io"):
        assert url in msg
    with pytest.raises(DataFormatError, match="does not exist"):
        ar.find_files(tmp_path / "nowhere", "Beauty")


def test_prefers_2023_and_finds_its_meta(tmp_path):
    write(tmp_path / "Beauty.csv", [line_csv(*r) for r in ROWS])
    write(tmp_path / "Beauty.jsonl.gz", [line_2023(*r) for r in ROWS])
    write(tmp_path / "meta_Beauty.jsonl", [json.dumps({"parent_asin": "I1", "title": "t"})])
    assert ar.find_files(tmp_path, "Beauty") == (
        "2023", tmp_path / "Beauty.jsonl.gz", tmp_path / "meta_Beauty.jsonl")


# --------------------------------------------------------------------------- titles


def test_read_titles_all_formats(tmp_path):
    m14 = write(tmp_path / "meta_A.json.gz", [
        repr({"asin": "I1", "title": "Lipstick &amp; Co", "related": {"also_bought": ["I2"]}}),
        repr({"asin": "I2", "categories": [["Beauty"]]}),  # no title
        repr({"asin": "I3", "title": "  "}),  # empty title
        repr({"asin": "I4", "title": "Brush", "price": 3.5}),
    ])
    assert ar.read_titles(m14, "2014") == {"I1": "Lipstick & Co", "I4": "Brush"}
    assert ar.read_titles(m14, "2014", keep={"I4", "I9"}) == {"I4": "Brush"}

    m18 = write(tmp_path / "meta_B.json", [
        json.dumps({"asin": "I1", "title": "Soap", "price": "$3.00", "main_cat": "Beauty"}),
        json.dumps({"asin": "I2", "title": ""}),
    ])
    assert ar.read_titles(m18, "2018") == {"I1": "Soap"}

    m23 = write(tmp_path / "meta_C.jsonl.gz", [
        json.dumps({"main_category": "All Beauty", "title": "Mask", "parent_asin": "P1"}),
        json.dumps({"title": "Cream", "parent_asin": "P2", "categories": []}),
    ])
    assert ar.read_titles(m23, "2023") == {"P1": "Mask", "P2": "Cream"}
    assert ar.read_titles(m23, "2023", keep={"P2"}) == {"P2": "Cream"}


def test_read_titles_malformed_rule(tmp_path):
    lines = [json.dumps({"asin": f"I{k}", "title": f"T{k}"}) for k in range(50)]
    lines[7] = "{broken"
    path = write(tmp_path / "meta_X.json", lines)
    with pytest.raises(DataFormatError, match="line 8"):
        ar.read_titles(path, "2018")
    assert len(ar.read_titles(path, "2018", max_malformed_frac=0.05)) == 49


# --------------------------------------------------------------------------- preprocessing


def test_subset_recodes_densely():
    inter = make([0, 1, 2, 2], [3, 1, 3, 0], [10, 20, 30, 40])
    sub = inter.subset(np.array([False, True, True, False]))
    assert list(sub.user) == [0, 1] and list(sub.user_ids) == ["u1", "u2"]
    assert list(sub.item) == [0, 1] and list(sub.item_ids) == ["i1", "i3"]
    assert list(sub.timestamp) == [20, 30]
    by_index = inter.subset([3, 0])
    assert list(by_index.user_ids[by_index.user]) == ["u2", "u0"]
    assert list(by_index.item_ids[by_index.item]) == ["i0", "i3"]
    assert (by_index.n_users, by_index.n_items, len(by_index)) == (2, 2, 2)


def test_dedupe_keeps_earliest():
    inter = make([0, 0, 1, 0, 1], [5, 5, 5, 6, 5], [30, 10, 7, 1, 7])
    out = ar.dedupe_keep_earliest(inter)
    got = sorted(zip(out.user_ids[out.user], out.item_ids[out.item], out.timestamp.tolist(),
                     strict=True))
    assert got == [("u0", "i5", 10), ("u0", "i6", 1), ("u1", "i5", 7)]


def test_k_core_is_iterative():
    # k=2. Item 2 has one row -> dropped; user 2 (items 1, 2) falls to one -> dropped;
    # item 1 (users 0, 2) falls to one -> dropped; user 0 (items 0, 1) falls to one ->
    # dropped; users 1 and 3 with items 0 and 3 remain.
    pairs = [(0, 0), (0, 1), (1, 0), (1, 3), (2, 1), (2, 2), (3, 0), (3, 3)]
    inter = make([p[0] for p in pairs], [p[1] for p in pairs])
    out = ar.k_core(inter, k=2)
    got = sorted(zip(out.user_ids[out.user], out.item_ids[out.item], strict=True))
    assert got == [("u1", "i0"), ("u1", "i3"), ("u3", "i0"), ("u3", "i3")]
    assert (out.n_users, out.n_items) == (2, 2)
    assert set(out.user.tolist()) == {0, 1} and set(out.item.tolist()) == {0, 1}
    assert len(ar.k_core(inter, k=3)) == 0


# --------------------------------------------------------------------------- splits


def split_inter() -> ar.Interactions:
    rng = np.random.default_rng(1)
    sizes = [1, 2, 3, 4, 10, 25]
    user = np.repeat(np.arange(len(sizes)), sizes)
    rng.shuffle(user)
    item = np.arange(len(user))
    ts = rng.integers(0, 50, size=len(user))
    return make(user, item, ts)


def check_partition(inter, parts):
    for p in parts:
        assert p.dtype == np.int64 and np.all(np.diff(p) > 0)
    allrows = np.concatenate(parts)
    assert len(allrows) == len(inter) and set(allrows.tolist()) == set(range(len(inter)))


def per_user_counts(inter, parts):
    return [np.bincount(inter.user[p], minlength=inter.n_users).tolist() for p in parts]


def test_split_ratio_counts():
    inter = split_inter()
    parts = ar.split_ratio(inter, seed=3)
    check_partition(inter, parts)
    # sizes 1,2,3,4,10,25 -> valid/test max(1, round(n/10)) for n >= 3 (25 * .1 = 2.5 -> 2)
    assert per_user_counts(inter, parts) == [
        [1, 2, 1, 2, 8, 21], [0, 0, 1, 1, 1, 2], [0, 0, 1, 1, 1, 2]]
    again = ar.split_ratio(inter, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = ar.split_ratio(inter, seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_split_temporal_is_chronological():
    inter = split_inter()
    train, valid, test = ar.split_temporal(inter)
    check_partition(inter, (train, valid, test))
    assert per_user_counts(inter, (train, valid, test))[2] == [0, 0, 1, 1, 1, 2]
    for u in range(inter.n_users):
        tr = inter.timestamp[train][inter.user[train] == u]
        va = inter.timestamp[valid][inter.user[valid] == u]
        te = inter.timestamp[test][inter.user[test] == u]
        if len(va):
            assert tr.max() <= va.min() and va.max() <= te.min()


def test_split_global_time():
    inter = make([0] * 10, list(range(10)), [5, 1, 9, 3, 7, 2, 8, 4, 10, 6])
    train, valid, test = ar.split_global_time(inter)
    check_partition(inter, (train, valid, test))
    assert sorted(inter.timestamp[train].tolist()) == list(range(1, 9))
    assert inter.timestamp[valid].tolist() == [9] and inter.timestamp[test].tolist() == [10]


def test_leave_one_out_picks_latest():
    # user 0: times 5, 1, 9, 3 -> test is the row with 9, valid the row with 5
    inter = make([0, 0, 1, 0, 0, 1], [0, 1, 2, 3, 4, 5], [5, 1, 7, 9, 3, 8])
    train, valid, test = ar.split_leave_one_out(inter)
    check_partition(inter, (train, valid, test))
    assert test.tolist() == [3] and valid.tolist() == [0]
    assert train.tolist() == [1, 2, 4, 5]  # user 1 has only 2 rows: all train


# --------------------------------------------------------------------------- groups


def test_item_and_user_groups():
    # item counts: 0 -> 1, 1 -> 3, 2 -> 3, 3 -> 0, 4 -> 2; share .4 of 5 -> 2 heads
    train_item = np.array([0, 1, 1, 1, 2, 2, 2, 4, 4])
    assert ar.item_groups(train_item, 5, head_share=0.4).tolist() == [
        False, True, True, False, False]
    # ceil(0.2 * 5) = 1: the tie between items 1 and 2 goes to the lower id
    assert ar.item_groups(train_item, 5).tolist() == [False, True, False, False, False]
    # user counts: 0 -> 2, 1 -> 1, 2 -> 2 ; 3 users, share .5 -> 2 active (0 and 2)
    assert ar.user_groups(np.array([0, 2, 1, 0, 2]), 3, active_share=0.5).tolist() == [
        True, False, True]
    # 15 users at share 0.2 -> exactly 3 (no float round-up to 4)
    assert ar.user_groups(np.arange(15), 15).sum() == 3


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint(tmp_path):
    a = write(tmp_path / "a.json", ["x" * 100])
    b = write(tmp_path / "b.json", ["y"])
    fp = fingerprint([a, b])
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert fingerprint([b, a]) == fp  # order-independent
    write(a, ["x" * 99 + "z"])  # same size, different content
    assert fingerprint([a, b]) != fp
    # large file: a change in the tail is seen
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 << 20))
    fp_big = fingerprint([big])
    with open(big, "r+b") as fh:
        fh.seek(-10, os.SEEK_END)
        fh.write(b"0123456789")
    assert fingerprint([big]) != fp_big


# --------------------------------------------------------------------------- block reader vs line by line
#
# read_interactions parses blocks of lines on threads (a compiled scanner on large files, the
# per-line path on small ones). It must give exactly what a plain line-by-line reader gives.


def reference_read(path: Path, fmt: str, max_frac: float = 0.01, log: list | None = None):
    """The plain line-by-line reader: (user, item, timestamp, user_ids, item_ids, stats), or the
    DataFormatError's message; ``log`` gets the line counts a progress log would report.

    Why a reference reader at all, and why this one: what the block reader can get wrong is not
    the per-line rules (ar._line_parser, the old reader's own rules; the tests above check them
    against expected values) but everything around them: blocks cut anywhere, threads, the
    compiled scanner's verdict on each line, ids coded in order of first appearance, and the
    counts, first bad line, early failure and progress logs at the right physical lines. Fuzzed
    files have no hand-written expected values; this loop, one line at a time through the same
    per-line rules with dicts for the ids, is the simplest honest statement of that contract.
    """
    tally = ar._Tally(path, "Amazon 2018 ratings CSV rows" if fmt == "csv"
                      else f"Amazon {fmt} review records", max_frac)
    line = ar._line_parser(fmt)
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    rows: list[tuple[int, int, int]] = []
    every, next_check = ar._PROGRESS_EVERY, ar._EARLY_FAIL_LINES
    lineno = blanks = 0
    try:
        try:
            with ar._open_binary(path) as fh:
                for raw in fh:
                    lineno += 1
                    out = line(raw)
                    if out is None:
                        blanks += 1
                        continue
                    tally.lines = lineno - blanks
                    if isinstance(out, str):
                        tally.bad(lineno, raw, out)
                        continue
                    rows.append((users.setdefault(out[0], len(users)),
                                 items.setdefault(out[1], len(items)), out[2]))
                    if lineno >= next_check:  # checked after a good line, as the old reader did
                        tally.check_early()
                        if log is not None and tally.lines >= every:
                            log.append(tally.lines)
                        next_check = (tally.lines // every + 1) * every
        except ar._IO_ERRORS as exc:
            raise ar._read_error(path, lineno, exc) from None
        tally.lines = lineno - blanks
        stats = tally.finish()
        if not rows:
            raise DataFormatError(
                f"{path} contains no readable reviews ({stats.lines} non-empty lines, "
                f"{stats.malformed} malformed). Check that it is the complete {fmt} reviews file.")
    except DataFormatError as exc:
        return str(exc)
    cols = np.array(rows, dtype=np.int64).reshape(-1, 3).T
    return cols[0], cols[1], cols[2], list(users), list(items), stats


def block_read(path: Path, fmt: str, max_frac: float = 0.01, *, compiled: bool, block: int,
               workers: int, monkeypatch, caplog=None):
    """read_interactions with the compiled scanner forced on or off, small blocks."""
    if compiled:
        scanner(fmt)
    monkeypatch.setattr(ar, "_FAST_MIN_BYTES", 0 if compiled else 1 << 62)
    monkeypatch.setattr(ar, "_BLOCK_BYTES", block)
    monkeypatch.setattr(ar, "_WORKERS", workers)
    try:
        inter, stats = ar.read_interactions(path, fmt, max_frac, progress=caplog is not None)
    except DataFormatError as exc:
        return str(exc)
    assert all(a.dtype == np.int64 for a in (inter.user, inter.item, inter.timestamp))
    assert all(type(x) is str for x in inter.user_ids) and all(type(x) is str for x in inter.item_ids)
    return (inter.user, inter.item, inter.timestamp, list(inter.user_ids), list(inter.item_ids),
            stats)


def scanner(fmt: str) -> tuple:
    """The compiled (scanner, id table) for fmt; compiled only for the tests that need it."""
    kernels = ar._kernels("csv" if fmt == "csv" else "json")
    assert kernels is not None, "numba is a dependency: the compiled scanner must load"
    return kernels


def same(got, want) -> bool:
    if isinstance(want, str) or isinstance(got, str):
        return got == want
    return (all(np.array_equal(a, b) for a, b in zip(got[:3], want[:3], strict=True))
            and got[3:] == want[3:])


def write_bytes(path: Path, lines: list[bytes], end: bytes = b"\n", bom: bool = False) -> Path:
    data = (codecs.BOM_UTF8 if bom else b"") + b"\n".join(lines) + end
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def edge_lines(fmt: str) -> list[bytes]:
    return csv_edge_lines() if fmt == "csv" else json_edge_lines(fmt)


def json_edge_lines(fmt: str) -> list[bytes]:
    """Good and bad lines of every kind the scanner must either get right or leave to the
    per-line path."""
    uk, ik, tk, _div = ar._REVIEW_FIELDS[fmt]

    def rec(u='"U1"', i='"I1"', t="1400000000", pre="", post="", sep=", ") -> bytes:
        parts = [f'"{uk}": {u}' if u is not None else None, f'"{ik}": {i}' if i is not None else None,
                 f'"{tk}": {t}' if t is not None else None]
        body = sep.join(p for p in parts if p is not None)
        return ("{" + pre + body + post + "}").encode("utf-8", "surrogateescape")  # \udcXX: byte XX

    good = [
        rec(), rec(sep=","), rec(u='"U2"', t="0"), rec(u='"U3"', t="-5"),
        rec(pre='"overall": 5.0, "verified": true, "style": {"Format:": " Paperback"}, ',
            post=', "vote": "1,234", "image": ["a", "b"], "n": null, "f": false'),
        b"  \t" + rec() + b" \t\r", rec() + b"\r",
        rec(pre=f'"nested": {{"{uk}": "X", "{ik}": ["Y", {{"{tk}": 1}}]}}, '),
        rec(pre='"deep": ' + "[" * 59 + "]" * 59 + ", "), rec(pre='"deeper": ' + "[" * 70 + "]" * 70 + ", "),
        rec(pre='"deepest": ' + "[" * 3000 + "]" * 3000 + ", "),
        rec(pre=f'"{ik}": "FIRST", '), rec(pre=f'"{ik}": 5, '), rec(post=f', "{uk}": "LAST"'),
        rec(post=f', "{uk}": 7'), rec(post=f', "{tk}": 1.5'), rec(post=f', "{tk}": 99'),
        rec(u='"\u00e9t\u00e9"'), rec(u='"\u65e5\u672c"'), rec(i='"\U0001F600x"'),
        rec(u='"\\u00e9t\\u00e9"'), rec(u='"\\ud83d\\ude00"'), rec(u='"\\ud800"'), rec(u='"a\\udc00b"'),
        rec(u='"A\\"B"'), rec(u='"A\\\\B"'), rec(u='"A\\/B"'), rec(u='"A/B"'), rec(u='"\\u0041"'),
        rec(u='"A"'), rec(u="123"), rec(u="-0"), rec(i="12345678901234567890123"),
        rec(u='"x\x7fy"'), rec(u='"tab\\tin"'),
        rec(t=str(10**18 - 1)), rec(t=str(10**18)), rec(t=str(2**62 - 1)), rec(t="-" + str(2**62 - 1)),
        rec(t="1.4e9"), rec(t="1400000000.0"), rec(t="-0.0"), rec(t="14E8"), rec(t='"1400000000"'),
        rec(t='" 12 "'), rec(t='"1_000"'), rec(t='"-7"'), rec(t="-1"), rec(t="-999"), rec(t="-1000"),
        rec(pre='"x": NaN, "y": Infinity, "z": -Infinity, '), rec(pre='"big": 1' + "0" * 40 + ", "),
        rec(pre='"e": [1e5, 1E+5, -1.5e-3, 0.0, 0, -0, 10], '),
        rec(pre='"s": "\\b\\f\\n\\r\\t\\"\\\\\\/ \\u00ff", '),
        rec(pre=f'"{uk}x": "no", "x{ik}": "no", "{tk[:-1]}": "no", '),
        rec(pre='"": "", '), rec(pre='"\\u0061": 1, '),
        b"{}", b"{ }",
    ]
    bad = [
        rec(u=None), rec(i=None), rec(t=None), rec(u=None, i=None, t=None),
        rec(t=str(2**62)), rec(t="-" + str(2**62)), rec(t="1400000000.5"), rec(t="1e400"),
        rec(t='"abc"'), rec(t='""'), rec(t="true"), rec(t="null"), rec(t="[]"), rec(t="{}"),
        rec(t="NaN"), rec(t="Infinity"), rec(t='"1.0"'),
        rec(u='""'), rec(i='""'), rec(u="null"), rec(u="true"), rec(u="1.5"), rec(u="[]"),
        rec(u='{"a": 1}'), rec(u="1e3"),
        rec(u='"tab\tin"'), rec(u='"nul\x00"'), rec(pre='"s": "a\x1fb", '),
        rec(pre='"s": "\\x41", '), rec(pre='"s": "\\u12", '), rec(pre='"s": "\\u00zz", '),
        rec(pre='"s": "\\', post='"'),
        rec()[:-1], rec()[:-5], rec()[:10], rec() + b",", rec() + b"}", rec() + rec(), rec() + b" " + rec(),
        rec() + b"x", rec() + b"\x0b", b"\x0b" + rec(), b"\x0c" + rec(), b"\xef\xbb\xbf" + rec(),
        rec(post=","), rec(pre=", "), rec(sep=" "), rec(sep=",,"),
        rec(pre='"a" 1, '), rec(pre='"a":: 1, '), rec(pre='"a": [1,], '), rec(pre='"a": [,1], '),
        rec(pre='"a": {"b"}, '), rec(pre='"a": {"b": 1,}, '), rec(pre='"a": [1 2], '), rec(pre='"a": ], '),
        rec(pre='"a": 01, '), rec(pre='"a": 1., '), rec(pre='"a": .5, '), rec(pre='"a": -, '),
        rec(pre='"a": +1, '), rec(pre='"a": 1e, '), rec(pre='"a": 1e+, '), rec(pre='"a": tru, '),
        rec(pre='"a": True, '), rec(pre='"a": nul, '), rec(pre='"a": falsey, '), rec(pre='"a": -Inf, '),
        rec(pre='"a": "\udcff", '), rec(pre='"a": "\udcc0\udc80", '),
        rec(pre='"a": "\udced\udca0\udc80", '), rec(pre='"a": "\udcf5\udc80\udc80\udc80", '),
        rec(pre='"a": "\udcf4\udc90\udc80\udc80", '), rec(pre='"a": "\udce0\udc80\udc80", '),
        rec(pre='"a": "\udcf0\udc80\udc80\udc80", '), rec(pre='"a": "\udcc3", '), rec(u='"\udce9"'),
        rec(pre='"a": "\udce2\udc82", '), rec(pre='"a": "\udcf0\udc9f\udc98", '),
        rec(pre='"a": "\udced\udc9f\udcbf\udcf4\udc8f\udcbf\udcbf", '),
        rec(pre='"a": ' + "[" * 60 + "]" * 59 + ", "),
        rec().replace(b'"' + uk.encode() + b'"', b"'" + uk.encode() + b"'"),
        b"[1, 2]", b'"str"', b"5", b"null", b"{", b"}", b"\x1c", b"\x85", b"\xc2\xa0",
        ("{" + f"'{uk}': 'U', '{ik}': 'I', '{tk}': 5" + "}").encode(),
        ("{" + f"'{uk}': 'U', '{ik}': 'I', '{tk}': 5, 'h': True, 'n': None, 't': (1, 2)" + "}").encode(),
        ("{" + f"'{uk}': 'U\\'x', '{ik}': \"I\", '{tk}': 5" + "}").encode(),
        ("[" + f"'{uk}'" + "]").encode(), b"{'a': __import__('os')}",
    ]
    blank = [b"", b"   ", b"\t", b"\r", b"\x0b", b"\x0c", b" \x0b\x0c\t\r "]
    return good + bad + blank


def csv_edge_lines() -> list[bytes]:
    good = [b"I1,U1,5.0,1400000000", b"I2,U2,5.0,1400000000\r", b"I3,U3,,5", b"I4,U4,5 .0 x,6",
            b"I5,U5,5.0,-3", b"I6,U6,5.0,007", b"I7,U7,5.0,-0", b" I8 , U8 ,5, 123 ", b"I9,U9,5,\t9",
            b'"I10","U10","5.0","10"', b'"I,11",U11,5,11', b"\xc3\xa9,\xc3\xbc,5,1", b"I12,U12,5,+12",
            b"I13,U13,5,1_3", b"I14,U14,5," + str(10**18).encode(), b"I15,U15,5," + str(2**62 - 1).encode(),
            b"I16\t,U16,5,1", b"I17,U17,5,\xef\xbc\x91", b"I18,U18,\xc3\xa9,1", b"\x1cI19,U19,5,1",
            b"I1,U2,5.0,1", b"I2,U1,5.0,2"]
    bad = [b"I,U,5.0", b"I,U,5.0,1,2", b",U,5,1", b"I,,5,1", b" ,U,5,1", b"I,U,5,", b"I,U,5,1.0",
           b"I,U,5,x", b"I,U,5," + str(2**62).encode(), b"I,U,5,1 2", b"\xff,U,5,1", b"I,\xed\xa0\x80,5,1",
           b'I"x,U,5,1', b'"I,U,5,1', b",,,", b"I,U", b"I;U;5;1", b"I,U,5,--1", b"I,U,5,-"]
    blank = [b"", b"  ", b"\t\r", b"\x0b\x0c", b"\x1c", b"\xc2\xa0", b"\xc2\x85", b"\xe2\x80\x83"]
    return good + bad + blank


def fuzz_lines(base: list[bytes], n: int, seed: int) -> list[bytes]:
    """Good-looking lines with random damage: bytes dropped, inserted, replaced, cut."""
    rng = np.random.default_rng(seed)
    noise = [b'"', b"\\", b"{", b"}", b"[", b"]", b",", b":", b" ", b"\t", b"\r", b"\x00", b"\x0b",
             b"\xc3", b"\xa9", b"\xff", b"\xed", b"0", b"9", b"e", b".", b"-", b"u", b"'", b"n"]
    out = []
    for _ in range(n):
        line = bytearray(base[rng.integers(len(base))])
        for _ in range(rng.choice([0, 0, 0, 1, 1, 2, 4])):
            if not line:
                break
            k = int(rng.integers(len(line)))
            op = rng.integers(4)
            if op == 0:
                del line[k]
            elif op == 1:
                line[k:k] = noise[rng.integers(len(noise))]
            elif op == 2:
                line[k:k + 1] = noise[rng.integers(len(noise))]
            else:
                del line[k:]
        out.append(bytes(line))
    return out


def varied_lines(fmt: str, n: int, seed: int) -> list[bytes]:
    """Realistic lines with repeated users and items (some non-ASCII)."""
    rng = np.random.default_rng(seed)
    users = [f"A{k:05d}" if k % 7 else f"\u00e9{k}" for k in range(n // 3 + 1)]
    items = [f"B{k:04d}" for k in range(n // 10 + 1)]
    out = []
    for _ in range(n):
        u, i = users[rng.integers(len(users))], items[int(rng.zipf(1.5)) % len(items)]
        t = int(rng.integers(10**9, 2 * 10**9))
        line = {"2014": line_2014, "2018": line_2018, "2023": line_2023, "csv": line_csv}[fmt](u, i, t)
        out.append(line.encode())
    return out


FORMATS = ["2014", "2018", "2023", "csv"]
# 2014 literals hold "\'" etc., which ast.literal_eval warns about
literal_warnings = pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")


@literal_warnings
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("file", "kw"), [("plain.txt", {}), ("gz.txt.gz", {}),
                                          ("bom-no-final-newline.txt", {"end": b"", "bom": True})])
def test_block_reader_equals_line_reader(tmp_path, monkeypatch, fmt, file, kw):
    edge = edge_lines(fmt)
    varied = varied_lines(fmt, 300, seed=1)
    middle = edge + fuzz_lines(varied + edge, 600, seed=2) + varied[100:]
    np.random.default_rng(3).shuffle(middle)
    path = write_bytes(tmp_path / file, varied[:100] + middle + varied[100:], **kw)
    want = reference_read(path, fmt, max_frac=1.0)
    assert not isinstance(want, str), want
    assert want[5].malformed > 50 and len(want[0]) > 300
    # a line per block, blocks cut mid-line, one block; the per-line path alone
    for compiled, block, workers in [(True, 1, 1), (True, 257, 3), (True, 1 << 20, 2), (False, 999, 2)]:
        got = block_read(path, fmt, max_frac=1.0, compiled=compiled, block=block, workers=workers,
                         monkeypatch=monkeypatch)
        assert same(got, want), (compiled, block, workers)


@literal_warnings
@pytest.mark.parametrize("fmt", FORMATS)
def test_block_reader_edge_lines_one_by_one(tmp_path, monkeypatch, fmt):
    # each edge line alone between two good lines: the scanner's verdict on that very line
    good = varied_lines(fmt, 2, seed=5)
    path = tmp_path / f"one.{fmt}"
    for line in edge_lines(fmt):
        write_bytes(path, [good[0], line, good[1]])
        got = block_read(path, fmt, max_frac=1.0, compiled=True, block=1 << 20, workers=1,
                         monkeypatch=monkeypatch)
        assert same(got, reference_read(path, fmt, max_frac=1.0)), line


@pytest.mark.parametrize("case", range(12))
def test_block_reader_counts_checks_and_logs_as_line_reader(tmp_path, monkeypatch, caplog, case):
    # progress every 7 lines, early check at 5: checkpoints fall on blank and malformed lines,
    # the early failure comes at a malformed line or at a checkpoint after a good one
    monkeypatch.setattr(ar, "_PROGRESS_EVERY", 7)
    monkeypatch.setattr(ar, "_EARLY_FAIL_LINES", 5)
    rng = np.random.default_rng([8, case])
    lines = []
    for g in varied_lines("2018", 60, seed=7):
        r = rng.random()
        if r < 0.15 * (case % 4):
            lines.append(b"")
        elif r < 0.15 * (case % 4) + 0.05 * (case // 4):
            lines.append(g[:-3])
        lines.append(g)
    if case == 11:  # bad from the start: fails early, at the first checkpoint after a good line
        lines = [b"{"] * 6 + lines
    path = write_bytes(tmp_path / "log.json", lines)
    for max_frac in (1.0, 0.01):
        log: list[int] = []
        want = reference_read(path, "2018", max_frac, log=log)
        for compiled, block in [(True, 1), (True, 301), (False, 1 << 20)]:
            caplog.clear()
            with caplog.at_level("INFO", logger=ar.__name__):
                got = block_read(path, "2018", max_frac, compiled=compiled, block=block, workers=2,
                                 monkeypatch=monkeypatch, caplog=caplog)
            logged = [int(m.group(1)) for r in caplog.records
                      if (m := re.match(r".*: (\d+) lines read", r.getMessage()))]
            assert same(got, want), (max_frac, compiled, block)
            assert logged == log, (max_frac, compiled, block)


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("cut", ["tail", "half"])
def test_block_reader_damaged_gzip(tmp_path, monkeypatch, compiled, cut):
    data = gzip.compress(b"\n".join(varied_lines("2018", 3000, seed=9)) + b"\n")
    path = tmp_path / "cut.json.gz"
    path.write_bytes(data[:-40] if cut == "tail" else data[:len(data) // 2])
    got = block_read(path, "2018", compiled=compiled, block=4096, workers=2, monkeypatch=monkeypatch)
    assert isinstance(got, str) and "truncated or corrupted" in got and "cut.json.gz" in got


def test_id_table_codes_in_first_appearance_order():
    # the compiled id table grows and rehashes; its codes follow first appearance like a dict
    intern = ar._jitted(ar._intern_kernel)
    assert intern is not None
    rng = np.random.default_rng(11)
    ids = [f"id{k}".encode() for k in rng.integers(0, 150_000, 400_000)]
    ids += [b"", "\ud800".encode("utf-8", "surrogatepass"), "\u00e9".encode(), b"x" * 70, b"id7"]
    table = ar._HashCodes(intern)
    codes = []
    for lo in range(0, len(ids), 65_536):
        chunk = ids[lo:lo + 65_536]
        offs = np.zeros(len(chunk) + 1, dtype=np.int64)
        np.cumsum([len(x) for x in chunk], out=offs[1:])
        vals = np.frombuffer(b"".join(chunk), dtype=np.uint8)
        codes.append(table.add((None, [(vals, offs[:-1], offs[1:], ar._NO_HASHES)])))
    want: dict[bytes, int] = {}
    want_codes = [want.setdefault(x, len(want)) for x in ids]
    assert np.concatenate(codes).tolist() == want_codes and len(table) == len(want)
    assert table.ids().tolist() == [x.decode("utf-8", "surrogatepass") for x in want]


@pytest.mark.parametrize("fmt", ["2018", "csv"])
def test_scanner_hashes_match_the_table(fmt):
    # ids hashed by a scanner and ids hashed by the table must be equal, or one id would get
    # two codes (a block with per-line rows is hashed by the table)
    ids = [("x" * k, "y" * (k + 3)) for k in range(1, 40)] + [(f"\u00e9t\u00e9{k}", "\U0001F600")
                                                                for k in range(20)]
    lines = [(line_csv(u, i, 5) if fmt == "csv" else
              json.dumps({"reviewerID": u, "asin": i, "unixReviewTime": 5}, ensure_ascii=False))
             .encode() for u, i in ids]
    spec = ar._BlockSpec(fmt, scanner(fmt))
    arr = np.frombuffer(b"\n".join(lines) + b"\n", dtype=np.uint8)
    out = ar._outputs(arr.tobytes(), len(arr), spec.per_line)
    _n, g, _status, _starts, rows, ua, ia = spec.kernel(arr, *out, *spec.args)
    assert g == len(lines) - (20 if fmt == "csv" else 0)  # (non-ASCII CSV ids: per-line path)
    good = [k for k, (u, i) in enumerate(ids) if fmt != "csv" or (u + i).isascii()]
    for vals, begin, end, hashes, col in ((ua, ar._R_U0, ar._R_U1, ar._R_UH, 0),
                                          (ia, ar._R_I0, ar._R_I1, ar._R_IH, 1)):
        # the scanner's copies of the ids, in line order
        assert [vals[a:b].tobytes().decode() for a, b in zip(rows[begin], rows[end], strict=True)] \
            == [ids[k][col] for k in good]
        local = ar._block_ids(spec.intern, [(vals, rows[begin], rows[end], rows[hashes])])
        again = ar._block_ids(spec.intern, [(vals, rows[begin], rows[end], ar._NO_HASHES)])
        assert np.array_equal(local[3], again[3]) and np.array_equal(local[0], again[0])
