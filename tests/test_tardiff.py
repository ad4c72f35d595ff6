"""TarDiff's mechanisms (the influence and its gradient, the cached training gradient, the guided
DDIM step, the 1-D UNet), the shared evaluation (alpha chosen on validation, the discriminative
score), TimeVAE, and the benchmark's quick profile end to end."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness import tracking
from harness.cli import main
from harness.datasets.clinical import ClinicalInfo
from harness.errors import UserError
from harness.methods import tardiff as td

REPO = Path(__file__).resolve().parents[1]
T, C = 6, 7


def _info(n: int = 24, seed: int = 0) -> ClinicalInfo:
    g = torch.Generator().manual_seed(seed)
    data = {name: (torch.randn(n, T, C, generator=g), (torch.arange(n) % 4 == 0).float())
            for name in ("train", "val")}
    return ClinicalInfo(channels=[f"c{i}" for i in range(C)], units=["u"] * C, window=T, task="mortality",
                        n_train=n, n_val=n, n_test=n, train_positives=int(data["train"][1].sum()),
                        mean=[0.0] * C, std=[1.0] * C, source="test", arrays=lambda s: data[s])


def _tardiff(guidance: str = "influence", **kw) -> td.TarDiff:
    args = dict(model_channels=8, channel_mult=(1, 2), res_blocks=1, attention_levels=(1,), heads=2,
                classifier_hidden=4, classifier_layers=1, timesteps=50, sample_steps=5, guidance_scale=0.5)
    return td.TarDiff(_info(), guidance=guidance, **{**args, **kw})


# --------------------------------------------------------------------------- influence


def test_cached_gradient_is_the_normalised_sum_of_per_example_gradients():
    m = _tardiff()
    x, y = m.info.arrays("train")
    m.cache_train_gradient(x, y, batch=5)  # batches must not change the sum
    params = list(m.classifier.parameters())
    total = [torch.zeros_like(p) for p in params]
    for i in range(len(x)):
        with torch.enable_grad():
            for p in params:
                p.requires_grad_(True)
            loss = F.binary_cross_entropy_with_logits(m.classifier(x[i:i + 1]), y[i:i + 1])
            for t, g in zip(total, torch.autograd.grad(loss, params), strict=True):
                t += g
    norm = torch.sqrt(sum((t ** 2).sum() for t in total))
    for got, want in zip(m.train_grad(), total, strict=True):
        torch.testing.assert_close(got, want / norm, atol=1e-6, rtol=1e-4)
    assert abs(float(torch.sqrt(sum((g ** 2).sum() for g in m.train_grad()))) - 1) < 1e-4


def test_influence_is_the_cosine_with_the_cached_gradient():
    m = _tardiff().double()
    x, y = m.info.arrays("train")
    m.cache_train_gradient(x.double(), y.double())
    x0, y0 = torch.randn(3, T, C, dtype=torch.float64), torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    params = list(m.classifier.parameters())
    for p in params:
        p.requires_grad_(True)
    g = torch.autograd.grad(F.binary_cross_entropy_with_logits(m.classifier(x0), y0), params)
    flat = torch.cat([t.flatten() for t in g])
    cached = torch.cat([t.flatten() for t in m.train_grad()])
    with torch.enable_grad():
        got = m.guidance_objective(x0, y0)
    torch.testing.assert_close(got, flat @ cached / (flat.norm() + 1e-6), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("guidance", ["influence", "classifier"])
def test_guidance_gradient_matches_finite_differences(guidance):
    """The double-backward gradient of the influence (and of log p(y|x)) in x0, against central
    differences of the objective, in float64."""
    m = _tardiff(guidance).double()
    x, y = m.info.arrays("train")
    m.cache_train_gradient(x.double(), y.double())
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(3, T, C, generator=gen, dtype=torch.float64)
    y0 = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)
    grad = m.guidance_grad(x0, y0)
    scale = len(x0) if guidance == "influence" else 1
    eps = 1e-6
    for idx in [(0, 0, 0), (1, 3, 2), (2, T - 1, C - 1), (0, T - 1, 4)]:
        up, down = x0.clone(), x0.clone()
        up[idx] += eps
        down[idx] -= eps
        with torch.enable_grad():
            fd = (m.guidance_objective(up, y0) - m.guidance_objective(down, y0)) / (2 * eps)
        assert float(grad[idx].detach()) == pytest.approx(scale * fd.item(), rel=1e-4, abs=1e-8), idx
    assert grad.abs().sum() > 0


# --------------------------------------------------------------------------- sampling


def _plain_ddim(m: td.TarDiff, y: torch.Tensor, seed: int) -> torch.Tensor:
    """DDIM written out with diffusers' scheduler alone (no guidance code)."""
    from diffusers import DDIMScheduler

    h = m.hparams
    sched = DDIMScheduler(num_train_timesteps=h.timesteps, beta_start=h.beta_start, beta_end=h.beta_end,
                          beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                          steps_offset=1, timestep_spacing="leading")
    sched.set_timesteps(h.sample_steps)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((len(y), C, T), generator=gen)
    m.unet.eval()
    with torch.no_grad():
        for t in sched.timesteps:
            eps = m.unet(x, torch.full((len(x),), int(t)), y)
            x = sched.step(eps, t, x, eta=h.eta, generator=gen).prev_sample
    return x.transpose(1, 2)


def _random_unet(m: td.TarDiff) -> None:
    with torch.no_grad():
        for p in m.unet.parameters():
            p.copy_(torch.randn_like(p) * 0.1)


@pytest.mark.parametrize("guidance", ["influence", "classifier", "none"])
def test_guided_step_with_zero_guidance_is_plain_ddim(guidance):
    m = _tardiff(guidance)
    _random_unet(m)
    x, y = m.info.arrays("train")
    m.cache_train_gradient(x, y)
    labels = torch.tensor([0, 1, 1, 0])
    want = _plain_ddim(m, labels, seed=5)
    got = m.sample(labels, torch.Generator().manual_seed(5), scale=0.0)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    if guidance != "none":  # and guidance moves it
        moved = m.sample(labels, torch.Generator().manual_seed(5), scale=0.5)
        assert (moved - want).abs().max() > 1e-3


def test_guided_step_adds_the_scaled_gradient_to_the_ddim_step(monkeypatch):
    """One sampling step: x_{t-1} = DDIM(x_t) + s * dI/dx0_hat, x0_hat the step's prediction."""
    m = _tardiff(sample_steps=1)
    _random_unet(m)
    seen = []

    def fake_grad(x0, y):
        seen.append(x0.clone())
        return torch.full_like(x0, 2.0)

    monkeypatch.setattr(m, "guidance_grad", fake_grad)
    labels = torch.tensor([1, 0])
    plain = _plain_ddim(m, labels, seed=1)
    got = m.sample(labels, torch.Generator().manual_seed(1), scale=0.25)
    torch.testing.assert_close(got, plain + 0.5)
    assert len(seen) == 1 and seen[0].shape == (2, T, C)


def test_unet_pads_odd_lengths_and_starts_at_zero():
    net = td.UNet1D(C, model_channels=8, channel_mult=(1, 2, 2), res_blocks=1, attention_levels=(2,), heads=2)
    x = torch.randn(3, C, 7)  # 7 is not a multiple of 4
    out = net(x, torch.tensor([0, 10, 199]), torch.tensor([0, 1, 0]))
    assert out.shape == x.shape and out.abs().max() == 0  # the output convolution starts at zero
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    a = net(x, torch.tensor([5, 5, 5]), torch.tensor([0, 0, 0]))
    b = net(x, torch.tensor([5, 5, 5]), torch.tensor([1, 1, 1]))
    assert (a - b).abs().max() > 0  # the label embedding conditions it


def test_schedule_is_the_public_codes_linear_in_sqrt_beta():
    m = _tardiff(timesteps=200)
    betas = m.schedulers()[0].betas.double()
    want = torch.linspace(5e-4 ** 0.5, 0.1 ** 0.5, 200, dtype=torch.float64) ** 2
    torch.testing.assert_close(betas, want, rtol=1e-5, atol=1e-8)
    ddim = m.schedulers()[1]
    ddim.set_timesteps(20)
    assert ddim.timesteps.tolist() == list(range(191, 0, -10))  # the public code's 1, 11, ..., 191


def test_bad_parameters_are_user_errors():
    with pytest.raises(UserError, match="guidance"):
        _tardiff("influence-ish")
    with pytest.raises(UserError, match="sample_steps"):
        _tardiff(sample_steps=100, timesteps=50)
    with pytest.raises(UserError, match="alphas"):
        td.RealOnly(_info(), alphas=(0.0, 0.5))
    with pytest.raises(UserError, match="clinical"):
        td.RealOnly(object())


# --------------------------------------------------------------------------- evaluation


def test_tsrtr_alpha_is_chosen_on_validation_and_tested_once(monkeypatch):
    m = td.RealOnly(_info(), alphas=(0.2, 0.6, 1.0), disc_steps=10)
    val_ap = {2: 0.1, 3: 0.7, 4: 0.3}  # the downstream model k's validation AUPRC (k = 2 + alpha index)
    calls = []

    def fake(x, y, k):
        calls.append((k, len(x)))
        model = td.GRUClassifier(C, 2, 1, 0.0)
        return model, val_ap.get(k, 0.0)

    monkeypatch.setattr(m, "_downstream", fake)
    monkeypatch.setattr(m, "generate", lambda counts: (torch.randn(10, T, C), torch.zeros(10)))
    monkeypatch.setattr(m, "_figure", lambda *a: None)
    logged = {}
    monkeypatch.setattr(m, "log", lambda k, v, **kw: logged.__setitem__(k, v))
    m._evaluate(torch.randn(8, T, C), torch.tensor([0, 1] * 4).float())
    assert logged["test/tsrtr_alpha"] == 0.6 and logged["test/tsrtr_val_auprc"] == 0.7
    n_real = m.info.n_train
    assert [c for c in calls if c[0] >= 2] == [(2, n_real + 2), (3, n_real + 6), (4, n_real + 10)]
    assert calls[0] == (1, 10)  # TSTR: synthetic only


def test_discriminative_score_tells_apart_what_differs():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(200, T, C, generator=g)
    same = torch.randn(200, T, C, generator=g)
    shifted = torch.randn(200, T, C, generator=g) + 2.0
    assert td.discriminative_score(real, same, seed=0, steps=300) < 0.15
    assert td.discriminative_score(real, shifted, seed=0, steps=300) > 0.4


def test_downstream_model_keeps_its_best_validation_epoch():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, T, C, generator=g)
    y = (x[:, -1, 0] > 0).float()
    model, best = td.fit_downstream(x, y, x, y, seed=0, hidden=8, layers=1, dropout=0.0, steps=20, lr=1e-2,
                                    batch_size=16, eval_every=3)
    ap, _ = td.auprc_auroc(td.predict(model, x), y)
    assert ap == pytest.approx(best)
    again, best2 = td.fit_downstream(x, y, x, y, seed=0, hidden=8, layers=1, dropout=0.0, steps=20, lr=1e-2,
                                     batch_size=16, eval_every=3)
    assert best2 == best  # its own seed: the same model twice


def test_timevae_samples_each_label_and_its_loss_trains():
    m = td.TimeVAE(_info(), hidden=(8, 8), latent_dim=3)
    x, y = m.info.arrays("train")
    xs, ys = m.generate({0: 5, 1: 2})
    assert xs.shape == (7, T, C) and ys.tolist() == [0.0] * 5 + [1.0] * 2
    opt = torch.optim.Adam(m.net.parameters(), lr=1e-2)
    torch.manual_seed(0)
    first = float(m.elbo_loss(x, y))
    for _ in range(60):
        loss = m.elbo_loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(m.elbo_loss(x, y)) < 0.8 * first


# --------------------------------------------------------------------------- end to end


def test_quick_tardiff_bench(workdir, capsys):
    assert main(["bench", "tardiff", "--profile", "quick", "--no-progress"]) == 0
    with open(workdir / "reports" / "tardiff.csv") as f:
        cells = {(r["method"], r["metric"]): float(r["mean"]) for r in csv.DictReader(f) if r["mean"]}
    for row in ("timevae", "diffusion", "classifier-guided", "tardiff"):
        for metric in ("tstr_auprc", "tstr_auroc", "tsrtr_auprc", "tsrtr_auroc", "discriminative_score"):
            assert (row, metric) in cells, (row, metric)
            assert np.isfinite(cells[(row, metric)])
    assert ("real", "tsrtr_auprc") in cells and ("real", "tstr_auprc") not in cells
    assert cells[("real", "tsrtr_alpha")] == 0
    mlf = tracking.client(tracking.tracking_uri())
    exp = mlf.get_experiment_by_name("tardiff")
    runs = mlf.search_runs([exp.experiment_id], filter_string="tags.`harness.complete` = '1'")
    assert len(runs) == 5
    by = {r.data.tags["method"]: r for r in runs}
    samplers = ("diffusion", "classifier-guided", "tardiff")
    shared = {by[k].data.tags.get("harness.stage.diffusion") for k in samplers}
    assert len(shared) == 1 and None not in shared  # one diffusion model for the three samplers
    arts = {a.path for a in mlf.list_artifacts(by["tardiff"].info.run_id)}
    assert "series.png" in arts


def test_paper_profile_reads_each_layout_from_data(tmp_path):
    """The paper profile: DATASET= picks one of the five layouts, DATA= becomes its data_dir and
    the synthetic generator's arguments go; the MIMIC-III one reads real-format tables from DATA
    (here the synthetic writer's, as a stand-in) without writing any."""
    from harness.datasets.clinical import ClinicalSeries
    from harness.datasets.clinical_mimic import SyntheticMimic, write_synthetic_mimic3
    from harness.spec import load

    write_synthetic_mimic3(tmp_path / "mimic", SyntheticMimic(n_stays=120))
    for label, layout, window in (("mimic3", "mimic3", 24), ("mimic4", "mimic4", 24), ("eicu", "eicu", 24),
                                  ("mimic3-benchmarks", "mimic3-benchmarks", 48),
                                  ("physionet2012", "physionet2012", 48)):
        bench = load("tardiff", profile="paper", data_dir=str(tmp_path / "mimic"), dataset=label)
        params = {r.dataset_params["layout"] for r in bench.runs}
        assert params == {layout} and len(bench.runs) == 5 * 3
        run = bench.runs[0]
        assert run.dataset_params["data_dir"] == str(tmp_path / "mimic")
        assert "synthetic" not in run.dataset_params
        assert run.dataset_params["window"] == window
    tardiff_row = next(r for r in bench.runs if r.method == "tardiff")
    assert tardiff_row.params["model_channels"] == 64 and tardiff_row.params["norm_groups"] == 32
    assert tardiff_row.params["classifier_layers"] == 2 and tardiff_row.params["downstream_layers"] == 2
    # the grid that picked the scales ran the default rows' exact settings
    grid = {r.label: r.params for r in load(str(REPO / "scripts" / "tardiff_grid.yaml")).runs}
    default = {r.label: r.params for r in load("tardiff").runs}
    pairs = (("influence-0.1", "tardiff"), ("classifier-0.1", "classifier-guided"), ("unguided", "diffusion"))
    for label, row in pairs:
        assert grid[label] == default[row], label
    bench = load("tardiff", profile="paper", data_dir=str(tmp_path / "mimic"), dataset="mimic3")
    dm = ClinicalSeries(**{**bench.runs[0].dataset_params, "cache_dir": str(tmp_path / "cache")})
    dm.prepare_data()
    assert dm.info.n_train + dm.info.n_val + dm.info.n_test == dm.grid["stay_ids"].numel()
    assert not (tmp_path / "cache" / "synthetic").exists()
