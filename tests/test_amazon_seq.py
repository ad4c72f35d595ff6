"""Multi-domain synthetic data and the leave-one-out split with seeded candidate lists."""

import numpy as np

from harness.datasets import amazon_readers as ar
from harness.datasets.amazon_seq import MultiDomainConfig, sequential_split, write_multidomain

CFG = MultiDomainConfig(domains=("Beauty", "Toys"), n_users=120, n_items=80, seed=3)


def test_domains_share_words_but_no_users_or_items(tmp_path):
    write_multidomain(tmp_path, CFG)
    users, items, words, nouns = {}, {}, {}, {}
    for d in CFG.domains:
        fmt, reviews, meta = ar.find_files(tmp_path, d)
        assert fmt == "2018"
        inter, stats = ar.read_interactions(reviews, fmt)
        assert stats.malformed == 0
        users[d], items[d] = set(inter.user_ids), set(inter.item_ids)
        titles = ar.read_titles(meta, fmt)
        words[d] = {w for t in titles.values() for w in t.split()[:2]}
        nouns[d] = {t.split()[2] for t in titles.values()}
    a, b = CFG.domains
    assert not users[a] & users[b] and not items[a] & items[b]
    assert len(words[a] & words[b]) >= 10  # the shared attribute vocabulary
    assert not nouns[a] & nouns[b]  # domain-specific words


def test_next_title_repeats_words_of_the_previous(tmp_path):
    write_multidomain(tmp_path, CFG)
    split = sequential_split(tmp_path, "Beauty", n_candidates=10)
    words = [set(t.split()[:2]) for t in split.titles]
    pairs = [(s[k], s[k + 1]) for s in split.train for k in range(len(s) - 1)]
    shared = np.mean([bool(words[x] & words[y]) for x, y in pairs])
    rng = np.random.default_rng(0)
    rand = np.mean([bool(words[x] & words[y]) for x, y in
                    rng.integers(0, len(words), (2000, 2))])
    assert shared > 2 * rand  # titles carry the sequential signal


def test_split_candidates_are_seeded_and_valid(tmp_path):
    write_multidomain(tmp_path, CFG)
    a = sequential_split(tmp_path, "Toys", n_candidates=20, seed=1)
    b = sequential_split(tmp_path, "Toys", n_candidates=20, seed=1)
    c = sequential_split(tmp_path, "Toys", n_candidates=20, seed=2)
    assert a.test == b.test and a.test != c.test
    valid = {u: (hist, target) for u, hist, target, _, _ in a.valid}
    for (u, hist, target, cands, _), train in zip(a.test, a.train, strict=True):
        assert len(cands) == 20 == len(set(cands)) and cands[0] == target
        v_hist, v_target = valid[u]
        assert not set(cands[1:]) & (set(hist) | {target})  # negatives: never-touched items
        assert hist[-1] == v_target  # leave-one-out: test history ends at the valid target
        if len(train) < 50:
            assert v_hist == train and hist == train + [v_target]


def test_cold_items_never_reach_training(tmp_path):
    write_multidomain(tmp_path, CFG)
    split = sequential_split(tmp_path, "Beauty", n_candidates=10, cold_share=0.2)
    assert len(split.cold_items) == round(0.2 * len(split.titles))
    assert not any(i in split.cold_items for s in split.train for i in s)
    assert not any(i in split.cold_items for _, h, _, _, _ in split.test for i in h)
    cold = [row for row in split.test if row[4]]
    assert cold and all(row[2] in split.cold_items for row in cold)


def test_datamodule_serves_the_domains_a_stage_asks_for(tmp_path, monkeypatch):
    import pytest

    from harness.api import StageData
    from harness.datasets.amazon_seq import AmazonSeqDataModule
    from harness.errors import UserError

    monkeypatch.chdir(tmp_path)
    dm = AmazonSeqDataModule(domains=("Beauty", "Toys"), target="Toys", n_candidates=10,
                             synthetic={"n_users": 40, "n_items": 40}, pretrain={"steps": 2})

    def served():
        return [row for batch in dm.train_dataloader() for row in
                (batch if isinstance(batch, list) else batch["input_ids"].tolist())]

    n = {d: sum(min(len(s) - 1, dm.examples_per_user) for s in dm.info.splits[d].train
                if len(s) > 1) for d in dm.domains}
    assert len(served()) == n["Toys"]  # default: the target alone
    dm.use_stage_data(StageData(domains=("Beauty", "Toys")))
    assert len(served()) == n["Beauty"] + n["Toys"]
    dm.use_stage_data(StageData(part="unlabelled"))
    rows = served()
    assert len(rows) == len(dm.info.splits["Toys"].valid)
    assert all(len(r) == 2 and len(r[1]) == 10 for r in rows)  # (prompt, candidates), no label
    for bad in (StageData(part="base"), StageData(domains=("Books",)),
                StageData(part="unlabelled", domains=("Beauty",)),
                StageData(options={"keep": {}})):
        with pytest.raises(UserError):
            dm.use_stage_data(bad)
