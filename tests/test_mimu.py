"""Mechanisms of the robustness family: metrics, MiMu's losses and mask, JTT, GroupDRO."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.api import StageData
from harness.datasets.robust_common import group_ids, group_names
from harness.datasets.robustness import RobustInfo, random_crop_flip
from harness.errors import UserError
from harness.methods.mimu import MiMu, alignment_loss, random_token_mask
from harness.methods.robust import ERM, JTT, GroupDRO, brier
from harness.metrics import robust as rm

SMALL = dict(hidden_size=16, layers=1, heads=2, patch_size=4, dropout=0.0)


def image_info(**kw) -> RobustInfo:
    base = dict(modality="image", dataset="toy", class_names=["a", "b"], attr_names=["place", "mark"],
                group_names=group_names(["a", "b"], ["place", "mark"]),
                train_counts=[40, 5, 5, 1, 1, 5, 5, 40],
                set_names=["test"], broken={}, collapse={}, train_size=102, resolution=16)
    base.update(kw)
    return RobustInfo(**base)


def text_info() -> RobustInfo:
    return RobustInfo(modality="text", dataset="toy", class_names=["e", "n", "c"], attr_names=["overlap"],
                      group_names=group_names(["e", "n", "c"], ["overlap"]), train_counts=[5] * 6,
                      set_names=["test", "hans"], broken={"overlap": "hans"}, collapse={"hans": [0, 1, 1]},
                      train_size=30, vocab_size=50, max_len=12)


# ---------------------------------------------------------------- metrics

def test_group_ids_and_names_agree():
    y = np.array([0, 0, 1, 1])
    attrs = np.array([[0, 1], [1, 0], [0, 0], [1, 1]])
    assert group_ids(y, attrs).tolist() == [1, 2, 4, 7]
    assert group_names(["a", "b"], ["place", "mark"])[7] == "b.place_1.mark_1"


def test_broken_weights_make_the_attribute_uniform_and_keep_the_rest():
    share = torch.tensor([40, 5, 5, 1, 1, 5, 5, 40], dtype=torch.float64)
    share = share / share.sum()
    w = rm.broken_weights(share, 2, 0).reshape(2, 2, 2)  # break place (the first attribute)
    assert torch.allclose(w[:, 0], w[:, 1])  # uniform over place given (y, mark)
    assert torch.allclose(w.sum(1), share.reshape(2, 2, 2).sum(1))  # P(y, mark) kept
    w_all = rm.broken_weights(share, 2, None).reshape(2, 4)
    assert torch.allclose(w_all, w_all[:, :1].expand(2, 4))
    assert torch.allclose(w_all.sum(1), share.reshape(2, 4).sum(1))


def test_a_shortcut_classifier_fails_only_where_its_shortcut_is_broken():
    """A 'model' that predicts y = place is perfect in distribution, at chance with place
    broken, and unaffected when only the mark is broken."""
    gen = np.random.default_rng(0)
    y = gen.integers(0, 2, 4000)
    place, mark = gen.integers(0, 2, 4000), gen.integers(0, 2, 4000)  # a balanced test set
    g = torch.as_tensor(group_ids(y, np.stack([place, mark], 1)))
    probs = F.one_hot(torch.as_tensor(place), 2).double()
    share = torch.tensor([45, 2, 2, 1, 1, 2, 2, 45], dtype=torch.float64)
    share = share / share.sum()
    out = rm.test_metrics(probs, torch.as_tensor(y), g, torch.zeros(4000, dtype=torch.long), ["test"],
                          share, ["place", "mark"], {}, {})
    assert out["acc"] == pytest.approx(0.5, abs=0.03)  # balanced test: plain mean at chance
    assert out["acc_weighted"] > 0.9  # weighted like training: the shortcut holds
    assert out["acc_broken_place"] == pytest.approx(0.5, abs=0.02)
    assert out["acc_broken_mark"] > 0.9
    assert out["acc_all_broken"] == pytest.approx(0.5, abs=0.02)
    assert out["worst_group_acc"] == 0.0


def test_explicit_broken_set_and_collapsed_labels():
    # three NLI classes scored on a two-class set: neutral + contradiction = non-entailment
    probs = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3], [0.3, 0.3, 0.4]])
    y = torch.tensor([1, 1, 1])
    out = rm.test_metrics(probs, y, torch.tensor([2, 2, 2]), torch.tensor([1, 1, 1]), ["test", "hans"],
                          torch.full((6,), 1 / 6, dtype=torch.float64), ["overlap"], {"overlap": "hans"},
                          {"hans": [0, 1, 1]})
    assert out["acc_set_hans"] == pytest.approx(2 / 3)
    assert out["acc_broken_overlap"] == out["acc_set_hans"]
    assert "worst_group_acc" not in out  # collapsed sets do not define groups


def test_validation_metrics_with_and_without_group_labels():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    y = torch.tensor([0, 0, 1, 1])
    g = torch.tensor([0, 1, 2, 3])
    out = rm.validation_metrics(probs, y, g, 4)
    assert out["acc"] == 0.75 and out["worst_group_acc"] == 0.0 and out["worst_class_acc"] == 0.5


def test_ece_matches_a_direct_computation():
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(500, 3, generator=gen) * 2, -1)
    y = torch.randint(0, 3, (500,), generator=gen)
    conf, pred = probs.max(1)
    edges = torch.linspace(0, 1, 16)
    direct = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            direct += sel.float().mean() * ((pred[sel] == y[sel]).float().mean() - conf[sel].mean()).abs()
    assert rm.ece(probs, y) == pytest.approx(float(direct), abs=1e-5)


# ---------------------------------------------------------------- MiMu

def test_brier_score():
    logits = torch.log(torch.tensor([[0.7, 0.3], [0.2, 0.8]]))
    assert float(brier(logits, torch.tensor([0, 0]))) == pytest.approx(((0.3**2 * 2) + (0.8**2 * 2)) / 2)


def test_random_mask_hides_the_share_of_valid_positions_only():
    torch.manual_seed(0)
    valid = torch.ones(4, 20, dtype=torch.bool)
    valid[2, 10:] = False
    m = random_token_mask(valid, 0.1)
    assert m.sum(1).tolist() == [2, 2, 1, 2]
    assert not (m & ~valid).any()
    assert not random_token_mask(valid, 0.0).any()
    assert not torch.equal(random_token_mask(valid, 0.5), random_token_mask(valid, 0.5))  # random


def test_alignment_penalises_the_largest_differences_on_kept_positions():
    a = torch.tensor([[0.25, 0.25, 0.25, 0.25]])
    b = torch.tensor([[0.55, 0.15, 0.15, 0.15]])
    keep = torch.ones(1, 4, dtype=torch.bool)
    assert float(alignment_loss(a, a, keep, 0.25)) == 0.0
    assert float(alignment_loss(a, b, keep, 0.25)) == pytest.approx(0.30)  # the largest one only
    assert float(alignment_loss(a, b, keep, 1.0)) == pytest.approx(0.15)
    keep[0, 0] = False  # the differing position masked: what remains is renormalised and equal
    assert float(alignment_loss(a, b, keep, 1.0)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("modality", ["image", "text"])
def test_masked_positions_are_hidden_from_the_target(modality):
    torch.manual_seed(0)
    info = image_info() if modality == "image" else text_info()
    model = MiMu(info, **SMALL).eval()
    if modality == "image":
        batch = {"x": torch.randn(2, 3, 16, 16)}
        masked = torch.zeros(2, 16, dtype=torch.bool)
        masked[:, 0] = True  # the top-left 4x4 patch
        changed = {"x": batch["x"].clone()}
        changed["x"][:, :, :4, :4] += 5.0
    else:
        ids = torch.randint(5, 50, (2, 10))
        batch = {"input_ids": ids, "attention_mask": torch.ones(2, 10, dtype=torch.long),
                 "token_type_ids": torch.zeros(2, 10, dtype=torch.long)}
        masked = torch.zeros(2, 9, dtype=torch.bool)
        masked[:, 3] = True  # token 4
        changed = dict(batch, input_ids=ids.clone())
        changed["input_ids"][:, 4] = 7
    with torch.no_grad():
        a, att = model.net(batch, masked=masked, attention=True)
        b, _ = model.net(changed, masked=masked)
        c, _ = model.net(changed)
        d, _ = model.net(batch)
    assert torch.allclose(a, b, atol=1e-5)  # the masked position cannot be seen
    assert not torch.allclose(c, d, atol=1e-5)  # unmasked, it can
    assert att.shape == masked.shape
    if modality == "text":  # a hidden token leaves the attention (an image patch becomes the mask token)
        assert float(att[:, 3].abs().max()) < 1e-6


def test_target_stage_freezes_the_source_and_restarts_the_target():
    torch.manual_seed(0)
    model = MiMu(image_info(), **SMALL)
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(1.0)  # "trained" source
    trained = {k: v.clone() for k, v in model.net.state_dict().items()}
    model.begin_stage("target")
    for k, v in model.source_net.state_dict().items():
        assert torch.equal(v, trained[k])
    assert all(not p.requires_grad for p in model.source_net.parameters())
    assert not torch.equal(next(iter(model.net.state_dict().values())), next(iter(trained.values())))
    batch = {"x": torch.randn(4, 3, 16, 16), "y": torch.tensor([0, 1, 0, 1])}
    loss = model.loss(batch)
    loss.backward()
    assert all(p.grad is None for p in model.source_net.parameters())


def test_target_loss_adds_distillation_and_alignment():
    torch.manual_seed(0)
    batch = {"x": torch.randn(8, 3, 16, 16), "y": torch.randint(0, 2, (8,))}

    def loss_of(**kw):
        torch.manual_seed(1)
        m = MiMu(image_info(), **SMALL, **kw)
        m.begin_stage("target")
        with torch.no_grad():
            for p in m.source_net.parameters():
                p.add_(0.3 * torch.randn_like(p))
        torch.manual_seed(2)
        return float(m.loss(batch))

    base = loss_of(kl_weight=0.0, align_weight=0.0, mask_ratio=0.0)
    assert loss_of(kl_weight=1.0, align_weight=0.0, mask_ratio=0.0) > base
    assert loss_of(kl_weight=0.0, align_weight=10.0, mask_ratio=0.0) > base


# ---------------------------------------------------------------- baselines

def test_groupdro_moves_weight_to_the_worst_group():
    torch.manual_seed(0)
    model = GroupDRO(image_info(), eta=1.0, **SMALL)
    q0 = model.q.clone()
    batch = {"x": torch.randn(16, 3, 16, 16), "y": torch.tensor([0] * 8 + [1] * 8),
             "g": torch.tensor([0] * 8 + [7] * 8)}
    with torch.no_grad():
        model.net.head.bias.copy_(torch.tensor([5.0, -5.0]))  # class 1 badly wrong
    model.loss(batch)
    assert model.q[7] > q0[7] and model.q[0] < model.q[7]
    assert float(model.q.sum()) == pytest.approx(1.0)


class _Loader:
    def __init__(self, batches):
        self.batches = batches

    def __call__(self):
        return iter(self.batches)


def test_jtt_error_set_is_the_misclassified_training_examples():
    torch.manual_seed(0)
    x = torch.randn(6, 3, 16, 16)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    batches = [{"x": x[:3], "y": y[:3], "g": y[:3], "idx": torch.arange(3)},
               {"x": x[3:], "y": y[3:], "g": y[3:], "idx": torch.arange(3, 6)}]
    model = JTT(image_info(train_eval_loader=_Loader(batches)), upweight=5, **SMALL)
    with torch.no_grad():
        model.net.head.weight.zero_()
        model.net.head.bias.copy_(torch.tensor([1.0, 0.0]))  # predicts class 0 everywhere
    first = {k: v.clone() for k, v in model.net.state_dict().items()}
    model.begin_stage("upweight")
    assert model.error_set.tolist() == [3, 4, 5]
    req = model.stage_data("upweight")
    assert req.options == {"upsample": [3, 4, 5], "factor": 5, "epoch_size": 102}  # the training split's size
    paper = JTT(image_info(train_eval_loader=_Loader(batches)), upweight=5, epoch_size="upsampled", **SMALL)
    paper.error_set = torch.tensor([3])
    assert paper.stage_data("upweight").options == {"upsample": [3], "factor": 5}
    assert not torch.equal(model.net.head.bias, first["head.bias"])  # a fresh model for stage 2


def test_upsampled_training_index_list():
    from harness.datasets.robustness import _RobustBase

    class Fake(_RobustBase):
        def __init__(self):
            self._upsample = None

        @property
        def table(self):
            class T:
                train = np.zeros(10)
            return T()

    ds = Fake()
    ds.use_stage_data(StageData(options={"upsample": [1, 7], "factor": 3}))
    counts = np.bincount(ds._upsample, minlength=10)
    assert counts[1] == 3 and counts[7] == 3 and counts.sum() == 14
    assert ds._epoch_size is None
    ds.use_stage_data(StageData())
    assert ds._upsample is None


def test_jtt_epoch_of_training_size_draws_from_the_upsampled_set():
    """``epoch_size``: each epoch is n draws from the upsampled list (the same steps as ERM),
    a fresh draw per epoch, and the upweighted examples keep their share."""
    from harness.datasets.robust_common import Split
    from harness.datasets.robustness import _RobustBase

    n = 100
    split = Split(y=np.zeros(n, dtype=np.int64), attrs=np.zeros((n, 1), dtype=np.int64))

    class Fake(_RobustBase):
        def __init__(self):
            self._upsample, self._epoch_size = None, None
            self.batch_size, self.num_workers, self.seed = 10, 0, 0

        @property
        def table(self):
            class T:
                train = split
            return T()

        def _split(self, name):
            return split

        def _arrays(self, name):
            return {"x": np.arange(n)}

        def _transform(self, train):
            return lambda b: b

    ds = Fake()
    ds.use_stage_data(StageData(options={"upsample": list(range(10)), "factor": 21, "epoch_size": n}))
    assert len(ds._upsample) == 300
    epochs = []
    for epoch in range(20):
        loader = ds.train_dataloader()
        loader.sampler.set_epoch(epoch)  # Lightning does this every epoch
        epochs.append(torch.cat([b["idx"] for b in loader]))
    assert all(len(e) == n for e in epochs)  # as many examples as the training split
    assert not torch.equal(epochs[0], epochs[1])
    share = float(torch.cat(epochs).lt(10).float().mean())  # 210 of the 300 upsampled entries
    assert abs(share - 0.7) < 0.05, share
    with pytest.raises(UserError, match="epoch_size"):
        ds.use_stage_data(StageData(options={"upsample": [1], "factor": 2, "epoch_size": 0}))


@pytest.mark.parametrize("n, batch, world", [(103, 10, 2), (103, 10, 3), (7, 4, 4), (64, 16, 2)])
def test_batch_plan_shards_every_global_batch_across_ranks(n, batch, world):
    """DDP: the ranks' shares of each global batch are the one-process batch; evaluation
    covers every example exactly once; in training every rank takes the same steps."""
    from harness.datasets.robustness import _BatchPlan

    for shuffle in (False, True):
        one = _BatchPlan(n, batch, shuffle, seed=3)
        one.set_epoch(5)
        shards = [_BatchPlan(n, batch, shuffle, seed=3, rank=r, world=world) for r in range(world)]
        for p in shards:
            p.set_epoch(5)
        ranks = [list(p) for p in shards]
        if shuffle:
            assert len({len(r) for r in ranks}) == 1  # the same number of steps on every rank
            assert all(len(b) for r in ranks for b in r)
        for b, rows in enumerate(one):
            merged = sorted(i for r in ranks if b < len(r) for i in r[b])
            if shuffle and len(rows) < world:
                assert not merged  # a last global batch too small to share is dropped
            else:
                assert merged == sorted(rows)
        seen = sorted(i for r in ranks for b in r for i in b)
        if not shuffle:
            assert seen == list(range(n))
    again = _BatchPlan(n, batch, True, seed=3)
    again.set_epoch(6)
    assert [list(b) for b in again] != [list(b) for b in one]  # a fresh order per epoch


def test_crop_and_flip_are_crops_of_the_padded_image():
    torch.manual_seed(0)
    x = torch.rand(6, 3, 8, 8)
    out = random_crop_flip(x, pad=1)
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    for i in range(6):
        crops = [c for dy in range(3) for dx in range(3)
                 for c in (padded[i, :, dy:dy + 8, dx:dx + 8], padded[i, :, dy:dy + 8, dx:dx + 8].flip(-1))]
        assert any(torch.equal(out[i], c) for c in crops)
    assert not torch.equal(out, x)


def test_erm_logs_every_declared_test_metric():
    torch.manual_seed(0)
    model = ERM(image_info(), **SMALL)
    assert set(model.metrics) >= {"acc", "worst_group_acc", "acc_all_broken", "ece"}


@pytest.mark.parametrize("modality", ["image", "text"])
def test_a_local_backbone_directory_is_loaded_with_its_attention(modality, tmp_path):
    """BACKBONE=<dir>: the paper's path (a pretrained ViT-L/16 or BERT saved locally), here a
    tiny random model saved the same way; its architecture comes from the directory."""
    from transformers import BertConfig, BertModel, ViTConfig, ViTModel

    torch.manual_seed(0)
    if modality == "image":
        ViTModel(ViTConfig(image_size=16, patch_size=4, hidden_size=24, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=48), add_pooling_layer=False
                 ).save_pretrained(tmp_path)
        info = image_info(backbone=str(tmp_path))
        batch = {"x": torch.randn(2, 3, 16, 16), "y": torch.tensor([0, 1])}
    else:
        BertModel(BertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=48, max_position_embeddings=12), add_pooling_layer=False
                  ).save_pretrained(tmp_path)
        info = text_info()
        info.backbone = str(tmp_path)
        batch = {"input_ids": torch.randint(5, 50, (2, 10)),
                 "attention_mask": torch.ones(2, 10, dtype=torch.long),
                 "token_type_ids": torch.zeros(2, 10, dtype=torch.long), "y": torch.tensor([0, 2])}
    model = MiMu(info, hidden_size=999, layers=9)  # ignored: the directory's config wins
    assert model.net.body.config.hidden_size == 24
    model.begin_stage("target")
    loss = model.loss(batch)
    assert torch.isfinite(loss)
    _, att = model.net(batch, attention=True)
    assert att.shape == (2, model.net.n_tokens(batch))
