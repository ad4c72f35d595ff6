"""EvoRec mechanisms: Locate picks the most-changed layers, updates touch only them, Forget
drops planted stale interactions, the proximal penalty acts, and the benchmark runs."""

import random
from types import SimpleNamespace

import torch

from harness import checkpoints
from harness.datasets.amazon_evo import AmazonEvoDataModule
from harness.methods.evorec import EvoLoRA, forget, item_log_prior, layer_changes, select_layers
from harness.methods.sasrec import train_sasrec


class _Stub(torch.nn.Module):
    """Hidden states of 4 layers; layer 2 reacts strongly to token 7, the others barely."""

    def forward(self, input_ids, output_hidden_states=True):
        x = input_ids.float()
        base = torch.stack([x.mean(), x.std() if x.numel() > 1 else x.mean(), x.max()])
        hs = [base.expand(1, x.shape[1], 3) + 1.0 for _ in range(5)]
        hs[3] = hs[3] + 50.0 * (input_ids == 7).any()  # hidden_states[3] = output of layer 2
        return SimpleNamespace(hidden_states=tuple(hs))


def test_locate_selects_the_layers_whose_hidden_states_moved_most():
    old = [[2, 3, 4], [5, 6, 4]]
    new = [o + [7, 4] for o in old]
    ch = layer_changes(_Stub(), old, new)
    assert ch.shape == (4,) and int(ch.argmax()) == 2
    assert select_layers(ch, 0.25) == [2]
    assert select_layers(torch.tensor([0.1, 0.9, 0.5, 0.8, 0.2, 0.3]), 0.3) == [1, 3]


def _clustered(n_users=240, size=20, clusters=3, length=8, seed=0):
    rng = random.Random(seed)
    seqs = []
    for u in range(n_users):
        c = u % clusters
        seqs.append(rng.sample(range(c * size, (c + 1) * size), length))
    return seqs


def test_forget_drops_interactions_planted_as_stale():
    seqs = _clustered()
    sasrec = train_sasrec(seqs, 60, epochs=40, dim=32)
    rng = random.Random(1)
    past, recent, stale = {}, {}, {}
    for u in range(30):  # moved from cluster A (0-19) to cluster B (20-39)
        a, b = rng.sample(range(0, 20), 5), rng.sample(range(20, 40), 5)
        past[u], recent[u], stale[u] = a + b, rng.sample(range(20, 40), 4), set(a)
    keep = forget(sasrec, past, recent, item_log_prior(seqs, 60))
    dropped = {u: set(past[u]) - set(keep[u]) for u in past}
    recall = sum(len(dropped[u] & stale[u]) for u in past) / sum(map(len, stale.values()))
    kept_fit = sum(len(set(keep[u]) - stale[u]) for u in past) / (5 * len(past))
    assert recall > 0.8 and kept_fit > 0.8, (recall, kept_fit)


DATA = {"n_candidates": 10, "synthetic": {"n_users": 120, "n_items": 80},
        "pretrain": {"steps": 10, "layers": 4, "hidden": 64, "intermediate": 128}}


def test_update_changes_only_the_located_lora_modules(workdir):
    dm = AmazonEvoDataModule(**DATA)
    torch.manual_seed(0)
    model = EvoLoRA(dm.info, mode="evorec", locate_share=0.5, sasrec_epochs=5, lr=0.01)
    model.begin_stage("base")
    model.begin_stage("update")
    assert len(model.located) == 2 and model.layer_change.shape == (4,)
    assert model.located == select_layers(model.layer_change, 0.5)
    assert abs(float(model.cost[1]) - 0.5) < 1e-6  # trainable_share
    assert model.keep is not None and set(model.keep) == set(dm.info.split.update)
    before = {n: p.detach().clone() for n, p in model.lora_params().items()}
    from harness.datasets.amazon_seq import collate_lm

    request = model.stage_data("update")
    assert request.part == "update" and request.options["keep"] is model.keep
    dm.use_stage_data(request)
    rows = [(dm.encode_prompt(h), dm.encode_title(t)) for h, t in dm.stage_examples()[:8]]
    opt = model.configure_optimizers()
    model.log = lambda *a, **k: None
    for _ in range(3):
        loss = model.training_step(collate_lm(rows), 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, p in model.lora_params().items():
        layer = int(n.split(".layers.")[1].split(".")[0])
        if layer in model.located:
            if "lora_B" in n:
                assert not torch.equal(p, before[n]), n
        else:
            assert torch.equal(p, before[n]), n  # bit-identical outside the located layers


def test_proximal_penalty_pulls_towards_the_base_lora(workdir):
    dm = AmazonEvoDataModule(**DATA)
    from harness.datasets.amazon_seq import collate_lm

    rows = [(dm.encode_prompt(h), dm.encode_title(t)) for h, t in dm.update_examples()[:4]]
    losses = {}
    for mode in ("finetune", "proximal"):
        torch.manual_seed(0)
        model = EvoLoRA(dm.info, mode=mode, proximal=10.0).eval()
        model.log = lambda *a, **k: None
        model.begin_stage("base")
        model.begin_stage("update")
        with torch.no_grad():
            for p in model.lora_params().values():
                p.add_(0.1)
        losses[mode] = model.training_step(collate_lm(rows), 0).item()
    n = sum(p.numel() for p in model.lora_params().values())
    assert abs(losses["proximal"] - losses["finetune"] - 0.5 * 10.0 * n * 0.01) < 1e-2 * n * 0.05


def test_evorec_quick_profile(workdir):
    from harness import tracking
    from harness.cli import main

    assert main(["bench", "evorec", "--profile", "quick", "--dataset", "toys", "--no-progress",
                 "--no-report"]) == 0
    mlf = tracking.client(tracking.tracking_uri())
    exp = mlf.get_experiment_by_name("evorec")
    runs = {r.data.tags["method"]: r.data.metrics for r in mlf.search_runs(
        [exp.experiment_id], filter_string="tags.`harness.complete` = '1'")}
    assert set(runs) == {"retrain", "finetune", "proximal", "evorec"}
    for name, m in runs.items():
        assert {"test/ndcg_3_active", "test/ndcg_3_inactive", "test/hr_3_active",
                "test/update_seconds"} <= set(m)
        if name != "evorec":
            assert m["test/trainable_share"] == 1.0
    assert 0.2 < runs["evorec"]["test/trainable_share"] < 0.45
    assert list((workdir / "runs" / "evorec" / "stages").glob("*/base/done"))  # base trained once
    (base,) = (workdir / "runs" / "evorec" / "stages").glob("*/base/best.ckpt")
    state = checkpoints.load(base)["state_dict"]  # weights only, as the runner reads it
    assert float(state["sasrec_fitted"]) == 1.0 and any(k.startswith("sasrec.") for k in state)
    assert all(k.startswith("sasrec") or "lora_" in k or k == "cost" for k in state)

