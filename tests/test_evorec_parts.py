"""EvoRec building blocks (issue #5, in progress): the evolving split and SASRec."""

import torch

from harness.datasets.amazon_evo import (
    UPDATE_START,
    EvoConfig,
    evolving_split,
    generate,
    write_evolving,
)
from harness.methods.sasrec import SASRec, train_sasrec

CFG = EvoConfig(n_users=120, n_items=80)


def test_drift_moves_active_users_only():
    w = generate(CFG)
    active = [u for u in range(CFG.n_users) if w.update[u]]
    assert 0.3 < len(active) / CFG.n_users < 0.7
    for u in range(CFG.n_users):
        changed = set(w.old_taste[u]) != set(w.new_taste[u])
        assert changed == (u in active)
    stale = sum(len(w.stale(u)) for u in active) / sum(len(w.base[u]) for u in active)
    assert 0.2 < stale < 0.8  # "some" of an active user's past stops fitting


def test_evolving_split_periods_and_groups(tmp_path):
    write_evolving(tmp_path, "Toys", CFG)
    s = evolving_split(tmp_path, "Toys", n_candidates=10, update_start=UPDATE_START)
    assert s.update and set(s.update) <= set(s.base)
    for rows in (s.valid, s.test):
        for u, history, target, cands, group in rows:
            assert cands[0] == target and len(set(cands)) == 10 and target not in history
            assert group == ("active" if u in s.update else "inactive")
            if group == "active":  # targets come from the update period, never trained on
                assert target not in s.update[u] and target not in s.base[u]
            else:
                assert target not in s.base[u]
    test = {u: t for u, _, t, _, _ in s.test}
    valid = {u: t for u, _, t, _, _ in s.valid}
    for u, new in s.update.items():  # update training data excludes validation and test items
        assert valid[u] not in new and test[u] not in new
    # the same seed gives the same candidates
    again = evolving_split(tmp_path, "Toys", n_candidates=10, update_start=UPDATE_START)
    assert [r[3] for r in again.test] == [r[3] for r in s.test]


def test_sasrec_batches_without_leaking_padding_and_learns_order():
    torch.manual_seed(0)
    m = SASRec(20, dim=16, dropout=0.0).eval()
    seqs = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [7]]
    with torch.no_grad():
        batched = m.encode(seqs)
        single = torch.cat([m.encode([s]) for s in seqs])
    assert torch.isfinite(batched).all() and torch.allclose(batched, single, atol=1e-5)
    # a deterministic successor (i -> i + 1 mod 20) is learnt
    cyc = [[(a + k) % 20 for k in range(8)] for a in range(20)] * 4
    m = train_sasrec(cyc, 20, epochs=30, dim=16, dropout=0.0)
    with torch.no_grad():
        pred = m.scores(m.encode([s[:5] for s in cyc[:20]])).argmax(1)
    assert (pred == torch.tensor([(a + 5) % 20 for a in range(20)])).float().mean() > 0.9


def test_evo_datamodule_serves_both_periods(tmp_path, monkeypatch):
    from harness.datasets.amazon_evo import AmazonEvoDataModule

    monkeypatch.chdir(tmp_path)
    dm = AmazonEvoDataModule(n_candidates=10, synthetic={"n_users": 120, "n_items": 80},
                             pretrain={"steps": 5})
    s = dm.info.split
    assert dm.stats()["users_active"] == len(s.update) > 0
    base, update = dm.base_examples(), dm.update_examples()
    assert len(update) == sum(len(v) for v in s.update.values())
    keep = {u: [] for u in s.update}  # Forget everything: histories start at the new items
    assert all(len(h) == k for (h, _), k in zip(
        dm.update_examples(keep), [k for v in s.update.values() for k in range(len(v))], strict=True))
    assert base and next(iter(dm.train_dataloader()))["input_ids"].shape[0] == dm.batch_size
    prompt, cands, group = next(iter(dm.val_dataloader()))
    assert group in ("active", "inactive") and len(cands) == 10 and prompt[0] == 2


def test_evo_datamodule_serves_the_part_a_stage_asks_for(tmp_path, monkeypatch):
    import pytest

    from harness.api import StageData
    from harness.datasets.amazon_evo import AmazonEvoDataModule
    from harness.errors import UserError

    monkeypatch.chdir(tmp_path)
    dm = AmazonEvoDataModule(n_candidates=10, synthetic={"n_users": 120, "n_items": 80},
                             pretrain={"steps": 5})
    base, update = dm.base_examples(), dm.update_examples()
    assert dm.stage_examples() == base  # the default request: the base period
    keep = {u: [] for u in dm.info.split.update}
    for request, expected in ((StageData(part="base"), base), (StageData(part="update"), update),
                              (StageData(part="update", options={"keep": keep}),
                               dm.update_examples(keep)),
                              (StageData(part="all"), base + update), (StageData(), base)):
        dm.use_stage_data(request)
        assert dm.stage_examples() == expected, request
    for bad in (StageData(part="unlabelled"), StageData(part="all", options={"keep": keep}),
                StageData(part="base", domains=("Books",))):
        with pytest.raises(UserError):
            dm.use_stage_data(bad)
