"""The synthetic Amazon writer: real format, long tail, skewed users, informative titles."""

import gzip
import json

import numpy as np

from harness.datasets import amazon_readers as ar
from harness.datasets.amazon import AmazonDataModule, SyntheticConfig, gini, write_synthetic


def test_default_data_has_the_properties_debiasing_needs(tmp_path):
    dm = AmazonDataModule(cache_dir=str(tmp_path))
    dm.setup()
    d, stats = dm.info, dm.stats()
    assert stats["format"] == "2018" and stats["malformed"] == 0
    assert stats["item_gini"] >= 0.6  # a real long tail after 5-core filtering
    activity = np.diff(d.train_indptr.numpy())
    assert np.percentile(activity, 95) >= 2 * np.median(activity)  # skewed user activity
    assert activity.max() >= 5 * np.median(activity)
    head_share = d.item_popularity[d.head_item].sum() / d.item_popularity.sum()
    assert head_share > 0.6  # the top 20% of items hold most interactions
    # every split is non-empty and disjoint from training for each user
    assert stats["valid"] > 0 and stats["test"] > 0


def test_written_files_are_2018_format_and_deterministic(tmp_path):
    cfg = SyntheticConfig(n_users=200, n_items=120, n_topics=4)
    a = write_synthetic(tmp_path / "a", cfg, "Toys")
    b = write_synthetic(tmp_path / "b", cfg, "Toys")
    assert (a / "Toys_5.json.gz").read_bytes() == (b / "Toys_5.json.gz").read_bytes()
    fmt, reviews, meta = ar.find_files(a, "Toys")
    assert fmt == "2018" and meta is not None
    with gzip.open(reviews, "rt") as f:
        rec = json.loads(f.readline())
    assert {"reviewerID", "asin", "overall", "unixReviewTime", "verified"} <= set(rec)
    titles = ar.read_titles(meta, fmt)
    assert len(titles) == 120


def test_titles_carry_topic_signal(tmp_path):
    cfg = SyntheticConfig(n_users=300, n_items=200, n_topics=5)
    out = write_synthetic(tmp_path, cfg, "Toys")
    with gzip.open(out / "meta_Toys.json.gz", "rt") as f:
        meta = [json.loads(line) for line in f]
    topic = [m["category"][1] for m in meta]
    words = [set(m["title"].split()[1:3]) for m in meta]
    same = [len(words[i] & words[j]) for i in range(80) for j in range(80)
            if i != j and topic[i] == topic[j]]
    other = [len(words[i] & words[j]) for i in range(80) for j in range(80)
             if topic[i] != topic[j]]
    assert np.mean(same) > 0.2 and np.mean(other) == 0


def test_gini():
    assert gini(np.array([1, 1, 1, 1])) == 0.0
    assert abs(gini(np.array([0, 0, 0, 10])) - 0.75) < 1e-9
