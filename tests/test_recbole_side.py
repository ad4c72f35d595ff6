"""The harness-side data steps of scripts/recbole_side_by_side.py (no RecBole, no torch needed)."""

import importlib.util
from pathlib import Path

import numpy as np

from harness.datasets import amazon_readers as ar

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "recbole_side_by_side.py"


def _script():
    """The script, imported by file path (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("recbole_side_by_side", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# a RecBole .inter file: columns in RecBole's own order (ml-100k's), float-typed timestamps
INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "196\t242\t3\t881250949\n"
    "186\t302\t3.0\t891717742.0\n"
    "196\t302\t5\t881250950\n"
    "\n"
    "22\t377\t1\t878887116\n"
)


def test_inter_to_amazon_csv_is_read_by_the_harness_reader(tmp_path):
    s = _script()
    inter = tmp_path / "ml.inter"
    inter.write_text(INTER)
    csv = tmp_path / "data" / "ml-100k.csv"
    assert s.write_amazon_csv(inter, csv) == 4
    assert csv.read_text().splitlines() == [
        "242,196,3.0,881250949", "302,186,3.0,891717742", "302,196,5.0,881250950",
        "377,22,1.0,878887116"]
    got, stats = ar.read_interactions(csv, "csv")
    assert stats.malformed == 0
    assert list(got.user_ids[got.user]) == ["196", "186", "196", "22"]
    assert list(got.item_ids[got.item]) == ["242", "302", "302", "377"]
    assert list(got.timestamp) == [881250949, 891717742, 881250950, 878887116]
    # the same content is not rewritten (the harness's fingerprint and cache stay valid)
    before = csv.stat().st_mtime_ns
    s.write_amazon_csv(inter, csv)
    assert csv.stat().st_mtime_ns == before


def test_split_written_as_recbole_benchmark_files(tmp_path):
    s = _script()
    rng = np.random.default_rng(0)
    n_users, n_items = 30, 20
    rows = [f"{u}\t{i}\t4\t{1000 + k}\n" for k, (u, i) in enumerate(
        {(int(u), int(i)) for u, i in zip(rng.integers(0, n_users, 400) * 7 + 1,
                                             rng.integers(0, n_items, 400) * 3 + 2, strict=True)})]
    inter = tmp_path / "ml.inter"
    inter.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(rows))
    s.write_amazon_csv(inter, tmp_path / "ml-100k.csv")
    # the harness's path: read, de-duplicate, 5-core, ratio split; per-user CSR as RecData has
    data, _ = ar.read_interactions(tmp_path / "ml-100k.csv", "csv")
    data = ar.k_core(ar.dedupe_keep_earliest(data), 5)
    parts = {}
    for name, idx in zip(s.PARTS, ar.split_ratio(data, seed=0), strict=True):
        u, i = data.user[idx], data.item[idx]
        order = np.lexsort((i, u))
        indptr = np.r_[0, np.cumsum(np.bincount(u, minlength=data.n_users))]
        parts[name] = s.csr_pairs(indptr, i[order])
        assert s.same_pairs(parts[name], (u, i))
    paths = s.write_recbole_split(tmp_path / "rb", "ml100k", parts, data.user_ids, data.item_ids)
    assert sorted(p.name for p in paths.values()) == [
        "ml100k.test.inter", "ml100k.train.inter", "ml100k.valid.inter"]
    raw = {tuple(r.split("\t")[:2]) for r in rows}
    seen = set()
    for name, path in paths.items():
        lines = path.read_text().splitlines()
        assert lines[0] == "user_id:token\titem_id:token"
        pairs = [tuple(line.split("\t")) for line in lines[1:]]
        assert len(pairs) == len(parts[name][0]) and not seen & set(pairs)
        seen |= set(pairs)
    # the three files hold exactly the k-cored interactions, under their original ids
    kept = {(data.user_ids[u], data.item_ids[i]) for u, i in zip(data.user, data.item, strict=True)}
    assert seen == kept and kept <= raw


def test_csr_pairs_and_same_pairs():
    s = _script()
    users, items = s.csr_pairs([0, 2, 2, 3], [4, 1, 0])
    assert users.tolist() == [0, 0, 2] and items.tolist() == [4, 1, 0]
    assert s.same_pairs((users, items), (np.array([2, 0, 0]), np.array([0, 1, 4])))
    assert not s.same_pairs((users, items), (np.array([2, 0, 0]), np.array([0, 1, 3])))
    assert not s.same_pairs((users, items), (users[:2], items[:2]))
