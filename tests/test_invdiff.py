"""InvDiff's mechanisms (the simplex projection, the group-variance loss, the identification,
the zero-initialised delta), the judge, and the benchmark end to end: the quick profile, and the
paper profile's latent path on a tiny random pipeline saved as a local directory."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO

from harness import tracking
from harness.cli import main
from harness.datasets import robust_images as ri
from harness.datasets.robust_judge import load_judge
from harness.datasets.robustness import RobustImages
from harness.diffusion import write_tiny_pipeline
from harness.errors import UserError
from harness.methods.invdiff import (
    InvDiff,
    group_variance_loss,
    identify_groups,
    project_simplex,
    random_groups,
    spread_objective,
)

TINY = {"unet_channels": [8, 16], "delta_channels": [8, 8], "sample_steps": 2, "samples_per_class": 8}


# --------------------------------------------------------------------------- simplex projection


def _project_by_bisection(v: torch.Tensor) -> torch.Tensor:
    """Reference: w = max(v - theta, 0) with theta found by bisection so that sum w = 1."""
    lo, hi = v.min() - 1.0, v.max()
    for _ in range(200):
        mid = (lo + hi) / 2
        if (v - mid).clamp_min(0).sum() > 1:
            lo = mid
        else:
            hi = mid
    return (v - (lo + hi) / 2).clamp_min(0)


def test_project_simplex_hand_cases():
    v = torch.tensor([[0.8, 0.6], [2.0, 0.0], [0.2, 0.2], [-1.0, 3.0]], dtype=torch.float64)
    want = torch.tensor([[0.6, 0.4], [1.0, 0.0], [0.5, 0.5], [0.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(project_simplex(v), want)
    # not the clamp-and-renormalise of the public code: [0.8, 0.6] would become [0.571, 0.429]
    assert not torch.allclose(project_simplex(v[:1]), v[:1] / v[:1].sum())


def test_project_simplex_matches_bisection_and_is_idempotent():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(50, 7, generator=g, dtype=torch.float64) * 2
    w = project_simplex(v)
    assert (w >= 0).all() and torch.allclose(w.sum(1), torch.ones(50, dtype=torch.float64))
    ref = torch.stack([_project_by_bisection(row) for row in v])
    assert torch.allclose(w, ref, atol=1e-9)
    assert torch.allclose(project_simplex(w), w)


# --------------------------------------------------------------------------- group-variance loss


def test_group_variance_loss_hand_computed():
    loss = torch.tensor([1.0, 2.0, 3.0, 4.0])
    hard = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]], dtype=torch.float)
    total, mean, var = group_variance_loss(loss, hard, lam=2.0)
    # group means 1.5 and 3.5 (the empty third group is left out): mean 2.5, unbiased var 2.0
    assert mean.item() == pytest.approx(2.5) and var.item() == pytest.approx(2.0)
    assert total.item() == pytest.approx(2.5 + 2.0 * 2.0)
    soft = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    # group 0: (0.5*1 + 2) / 1.5 = 5/3; group 1: (0.5*1 + 3 + 4) / 2.5 = 3
    total, mean, var = group_variance_loss(loss, soft, lam=1.0)
    m0, m1 = 5 / 3, 3.0
    assert mean.item() == pytest.approx((m0 + m1) / 2)
    assert var.item() == pytest.approx((m0 - m1) ** 2 / 2)
    # one group present: its mean alone, no variance
    total, _, var = group_variance_loss(loss, torch.ones(4, 1), lam=5.0)
    assert total.item() == pytest.approx(2.5) and var.item() == 0


def test_group_variance_loss_balances_groups_not_examples():
    # 9 majority examples at loss 1 and 1 minority example at loss 3: the group mean gives the
    # minority half the weight, the plain mean a tenth
    loss = torch.tensor([1.0] * 9 + [3.0], requires_grad=True)
    w = torch.tensor([[1.0, 0.0]] * 9 + [[0.0, 1.0]])
    total, _, _ = group_variance_loss(loss, w, lam=0.0)
    total.backward()
    assert loss.grad[-1].item() == pytest.approx(0.5) and loss.grad[0].item() == pytest.approx(0.5 / 9)


# --------------------------------------------------------------------------- identification


def test_identification_finds_the_high_loss_minority():
    g = torch.Generator().manual_seed(0)
    n, n_min = 400, 40
    loss = torch.cat([1.0 + 0.05 * torch.randn(n - n_min, generator=g),
                      2.0 + 0.05 * torch.randn(n_min, generator=g)])
    minority = torch.arange(n) >= n - n_min
    w = identify_groups(loss, groups=4, steps=300, lr=0.01, keep_weight=3.0,
                        generator=torch.Generator().manual_seed(1))
    assert (w >= 0).all() and torch.allclose(w.sum(1), torch.ones(n, dtype=w.dtype), atol=1e-6)
    start = random_groups(n, 4, torch.Generator().manual_seed(1))
    assert spread_objective(loss, w, 3.0) < spread_objective(loss, start, 3.0) - 0.1
    top = ((loss.double().reshape(-1, 1) * w).sum(0) / w.sum(0)).argmax()
    mass = w[:, top]
    # the group with the highest mean loss holds the minority's mass and little else
    assert mass[minority].sum() / mass.sum() > 0.9
    assert mass[minority].mean() > 5 * mass[~minority].mean()


# --------------------------------------------------------------------------- the method


@pytest.fixture(scope="module")
def tiny_info(tmp_path_factory):
    root = tmp_path_factory.mktemp("invdiff")
    dm = RobustImages(resolution=16, pretrained=False, augment=False, batch_size=16, cache_dir=str(root),
                      synthetic={"n_train": 64, "n_val": 16, "n_test": 16, "background_rate": 0.9},
                      judge={"epochs": 1, "channels": 8, "feature_dim": 8})
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_zero_initialised_delta_leaves_the_output_unchanged(tiny_info):
    torch.manual_seed(0)
    model = InvDiff(tiny_info.info, mode="invdiff", **TINY)
    z = torch.randn(4, 3, 16, 16)
    t = torch.tensor([10, 200, 500, 900])
    y = torch.tensor([0, 1, 0, 1])
    frozen = model.den.predict(model.den.unet, z, t, y)
    model.begin_stage("debias")
    assert torch.equal(model.eps(z, t, y), frozen)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("delta.") for n in trainable)
    # one step on the delta moves the output (so the delta is wired in), the frozen part stays
    opt = model.configure_optimizers()
    model.eps(z, t, y).pow(2).mean().backward()
    opt.step()
    assert not torch.allclose(model.eps(z, t, y), frozen)
    assert torch.equal(model.den.predict(model.den.unet, z, t, y), frozen)
    assert 0 < model.trainable_share() < 1


def test_sampling_in_chunks_draws_the_same_images(tiny_info):
    torch.manual_seed(0)
    model = InvDiff(tiny_info.info, mode="biased", **TINY).eval()
    whole, cls = model.sample(7, torch.Generator().manual_seed(5))
    model.hparams.sample_batch = 3
    chunked, cls2 = model.sample(7, torch.Generator().manual_seed(5))
    assert torch.equal(cls, cls2) and whole.shape == (14, 3, 16, 16)
    assert torch.allclose(whole, chunked, atol=1e-5)


def test_oracle_weights_are_class_times_attribute(tiny_info):
    model = InvDiff(tiny_info.info, mode="oracle", **TINY)
    batch = next(iter(tiny_info.train_dataloader()))
    w = model._weights(batch)
    place = (batch["g"] >> 1) & 1  # attributes (place, mark): place is the high bit
    assert torch.equal(w.argmax(1), batch["y"] * 2 + place) and torch.equal(w.sum(1), torch.ones(len(w)))


def test_bad_parameters_are_user_errors(tiny_info):
    with pytest.raises(UserError, match="mode"):
        InvDiff(tiny_info.info, mode="debias", **TINY)
    with pytest.raises(UserError, match="groups"):
        InvDiff(tiny_info.info, mode="oracle", groups=2, **TINY)
    with pytest.raises(UserError, match="delta_ratio"):
        InvDiff(tiny_info.info, delta_ratio=0.0, **TINY)


def test_judge_metadata(tiny_info):
    judge, meta = load_judge(tiny_info.info.judge)
    assert meta["attribute"] == "place" and meta["attribute_index"] == 0
    assert {"val_attr_acc", "val_attr_worst_group_acc", "val_class_acc"} <= set(meta)
    with torch.no_grad():
        c, a, f = judge(torch.zeros(2, 3, 40, 40))  # any resolution: resized to its own
    assert c.shape == (2, 2) and a.shape == (2, 2) and f.shape == (2, 8)


# --------------------------------------------------------------------------- end to end


def test_quick_invdiff_bench(workdir, capsys):
    assert main(["bench", "invdiff", "--profile", "quick", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| group-oracle (ref.) |" in out
    with open(workdir / "reports" / "invdiff.csv") as f:
        cells = {(r["method"], r["metric"]) for r in csv.DictReader(f)}
    for row in ("biased", "finetune", "invdiff", "invdiff-random", "group-oracle"):
        for metric in ("bias_score", "fd_cnn", "precision_cnn", "recall_cnn", "trainable_share",
                       "sample_seconds", "judge_attr_acc"):
            assert (row, metric) in cells, (row, metric)
    for row in ("invdiff", "invdiff-random", "group-oracle"):
        assert (row, "group_ari") in cells
    mlf = tracking.client(tracking.tracking_uri())
    exp = mlf.get_experiment_by_name("invdiff")
    runs = mlf.search_runs([exp.experiment_id], filter_string="tags.`harness.complete` = '1'")
    assert len(runs) == 5
    shared = {r.data.tags.get("harness.stage.biased") for r in runs}
    assert len(shared) == 1 and None not in shared  # one biased model for every row
    by = {r.data.tags["method"]: r for r in runs}
    assert by["invdiff"].data.metrics["test/trainable_share"] < 1
    assert by["finetune"].data.metrics["test/trainable_share"] == 1
    arts = mlf.list_artifacts(by["invdiff"].info.run_id)
    assert any(a.path == "samples.png" for a in arts)


def test_paper_profile_runs_on_a_tiny_local_pipeline(workdir, tmp_path, capsys):
    """The paper profile's latent path (a text-conditioned UNet on a VAE's latents, one prompt
    per class, a local pipeline directory) end to end on CPU: the profile as written, shrunk
    only in size (resolution, epochs, samples, widths, the judge) and run in 32-bit on CPU."""
    pipe = write_tiny_pipeline(tmp_path / "sd-tiny")
    data = tmp_path / "data"
    ri.write_synthetic_waterbirds(data, ri.SyntheticImages(n_train=32, n_val=16, n_test=16, size=16))
    bench = yaml.safe_load((REPO / "benchmarks" / "invdiff.yaml").read_text())
    paper = bench["profiles"]["paper"]
    small = {"delta_channels": [16, 16], "biased_epochs": 1, "debias_epochs": 1, "identify_steps": 10,
             "identify_timesteps": [500], "sample_steps": 2, "samples_per_class": 8}
    for row in paper["methods"].values():
        row["params"] = {**row["params"], **small}
    paper["datasets"]["waterbirds"]["params"].update(
        resolution=16, batch_size=8, judge={"resolution": 16, "epochs": 1, "channels": 8, "feature_dim": 4})
    path = workdir / "invdiff.yaml"
    path.write_text(yaml.safe_dump(bench))
    argv = ["bench", str(path), "--profile", "paper", "--no-progress", "--data", str(data),
            "--dataset", "waterbirds", "--backbone", str(pipe), "--accelerator", "cpu",
            "--precision", "32-true", "--seeds", "1"]
    assert main(argv) == 0, capsys.readouterr().err
    mlf = tracking.client(tracking.tracking_uri())
    exp = mlf.get_experiment_by_name("invdiff")
    runs = mlf.search_runs([exp.experiment_id], filter_string="tags.`harness.complete` = '1'")
    assert len(runs) == 5
    by = {r.data.tags["method"]: r for r in runs}
    assert by["invdiff"].data.params["hparams.delta_channels"] == "[16, 16]"
    assert 0 < by["invdiff"].data.metrics["test/trainable_share"] < 1
    for r in runs:
        assert r.data.tags["dataset"] == "waterbirds" and "test/bias_score" in r.data.metrics


def test_class_bird_hues_keep_the_layout_and_any_is_unchanged(tmp_path):
    cfg = ri.SyntheticImages(n_train=8, n_val=4, n_test=8, size=16, bird_hue="class")
    table = ri.read_waterbirds(ri.write_synthetic_waterbirds(tmp_path / "c", cfg))
    assert len(table.train) == 8 and table.attr_names == ["place", "mark"]
    # "any" draws exactly as before the option existed (the digests of the writer before it,
    # commit 2c43416), so MiMu's data and run keys are unchanged
    for (seed, y, place, mark, size), digest in [((3, 1, 0, 1, 16), "57092f24d8fd248d"),
                                                  ((5, 0, 1, 0, 64), "79444801163f081f")]:
        img = ri._render(np.random.default_rng(seed), y, place, mark, size, bird_hue="any")
        assert hashlib.sha256(img.tobytes()).hexdigest()[:16] == digest
    c = ri._render(np.random.default_rng(3), 1, 0, 1, 16, bird_hue="class")
    assert hashlib.sha256(c.tobytes()).hexdigest()[:16] != "57092f24d8fd248d"
    with pytest.raises(UserError, match="bird_hue"):
        ri.SyntheticImages(bird_hue="red")
