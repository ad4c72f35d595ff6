"""Tests for the Amazon Reviews readers, preprocessing, splits, groups, and the raw-file
fingerprint (:func:`harness.cache.fingerprint`) the Amazon datasets key their caches by."""

from __future__ import annotations

import gzip
import importlib
import json
import os
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
