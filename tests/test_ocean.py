"""Ocean pieces outside the QG solver and the Swin modules: metrics, the simulation writer,
the two DataModules, the eddy parameterizations and the forecast baselines, and how they
meet the engine's contract (harness.api)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import api
from harness.datasets import ocean, ocean_sim
from harness.datasets.qg import QGConfig, QGModel, coarsen
from harness.errors import DataFormatError, UserError
from harness.metrics import ocean as om

TINY = dict(nx=32, spinup_nx=32, spinup_days=20, adjust_days=0, days=60, hires_every_days=2,
            nx_daily=16)


# ----------------------------------------------------------------------------- metrics
def test_rmse_and_acc_match_hand_computation():
    w = torch.tensor([[1.0, 3.0]])
    p, t = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]])
    assert om.rmse(p, t, w).item() == pytest.approx(math.sqrt((1 * 1 + 3 * 4) / 4))
    c = torch.zeros(1, 2)
    assert om.acc(t + torch.tensor([[1.0, -1.0]]), torch.tensor([[2.0, -2.0]]), c, w).item() == \
        pytest.approx(1.0)
    assert om.acc(torch.tensor([[1.0, -1.0]]), torch.tensor([[-2.0, 2.0]]), c, w).item() == \
        pytest.approx(-1.0)


def test_online_score_is_zero_for_noparam_and_one_for_perfect():
    ref = np.abs(np.random.default_rng(0).normal(size=(2, 10))) + 1
    lo = ref * 2
    d0 = om.spectrum_distance(lo, ref, 8)
    assert np.allclose(om.online_score(d0, d0), 0)
    assert np.allclose(om.online_score(om.spectrum_distance(ref, ref, 8), d0), 1)
    assert (om.online_score(om.spectrum_distance(ref * 4, ref, 8), d0) < 0).all()


# ----------------------------------------------------------------------------- data
def test_streamfunction_and_pv_rebuilt_from_velocities():
    cfg = QGConfig(nx=32)
    m = QGModel(cfg)
    m.random_init(1, amplitude=1e-6)
    m.set_q(coarsen(m.q, 32, "sharp"))  # no Nyquist modes: velocities cannot carry them
    psi = ocean.psi_from_uv(m.u, m.v, m)
    assert torch.allclose(psi, m.psi, atol=1e-10 * m.psi.abs().max().item())
    q = ocean.q_from_psi(psi, cfg)
    assert torch.allclose(q, m.q, atol=1e-10 * m.q.abs().max().item())


def test_upsample_keeps_the_field_on_the_coarse_points():
    m = QGModel(QGConfig(nx=32))
    m.random_init(2, amplitude=1e-6)
    q = coarsen(m.q, 16, "sharp")
    up = ocean_sim.upsample(q, 32)
    assert torch.allclose(up[..., ::2, ::2], q, atol=1e-6 * q.abs().max().item())


def test_day_of_year_climatology_recovers_a_seasonal_cycle():
    days = np.arange(3 * 365)
    doy = (days % 365).astype(np.int16)
    season = np.sin(2 * np.pi * doy / 365)[:, None]
    x = (season + 0.01 * np.random.default_rng(0).normal(size=(len(days), 1))).astype(np.float32)
    clim = ocean._doy_climatology(x, doy, 3)
    assert clim.shape == (366, 1)
    assert np.abs(clim[:365, 0] - np.sin(2 * np.pi * np.arange(365) / 365)).max() < 0.02


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cache")
    return d


def test_forecast_datamodule_windows_normalisation_and_real_reader(sim_dir):
    dm = ocean.ForecastDataModule(sim=TINY, t_in=2, t_out=3, split=(0.5, 0.25), cache_dir=str(sim_dir))
    dm.setup()
    info = dm.info
    assert info.var3 == ("thetao", "uo", "vo") and info.mask3.shape == (2, 16, 16)
    assert info.weights.mean().item() == pytest.approx(1.0, rel=1e-5)
    x3, x2, y3, y2, doy = dm.train_dataloader().dataset[0]
    assert x3.shape == (2, 3, 2, 16, 16) and y3.shape == (3, 3, 2, 16, 16) and y2.shape == (3, 1, 16, 16)
    # the training windows are normalised with the training period's statistics
    a = np.load(dm._processed_dir() / "fields3.npy", mmap_mode="r")
    n_train = dm.stats()["train_days"]
    assert abs(float(np.asarray(a[:n_train]).mean())) < 1e-3
    # windows follow each other in time: target day 0 of window 0 is input day 0 of window t_in
    x3b = dm.train_dataloader().dataset[2][0]
    assert torch.equal(x3b[0], y3[0])
    # the synthetic files read back through the real reader hold what the simulation wrote
    from harness.datasets.ocean_reader import open_ocean

    d = open_ocean(dm.raw_dir(), variables=("thetao", "uo", "vo", "zos"))
    assert d.ds.thetao.dims == ("time", "depth", "lat", "lon") and d.ds.sizes["time"] == 60
    assert float(d.ds.thetao.isel(depth=0).mean()) > float(d.ds.thetao.isel(depth=1).mean())
    # the simulation is periodic (roll augmentation allowed), a data directory is not;
    # validation can be thinned without touching the test windows
    assert info.periodic and not ocean.ForecastDataModule(data_dir=str(sim_dir)).periodic
    thin = ocean.ForecastDataModule(sim=TINY, t_in=2, t_out=3, split=(0.5, 0.25), val_stride=3,
                                    cache_dir=str(sim_dir))
    thin.setup()
    assert np.diff(thin.starts["val"]).tolist() == [3] * (len(thin.starts["val"]) - 1)
    assert np.array_equal(thin.starts["test"], dm.starts["test"])
    assert len(thin.starts["val"]) == -(-len(dm.starts["val"]) // 3)


def test_eddy_datamodule_targets_are_the_subgrid_forcing(sim_dir):
    dm = ocean.EddyDataModule(sim=TINY, nx_lo=16, online_days=4, online_discard_days=2,
                              online_every_days=1, cache_dir=str(sim_dir))
    dm.setup()
    info = dm.info
    x, y = dm.x, dm.y
    assert x.shape[1:] == (4, 16, 16) and y.shape == x.shape
    stats = dm.stats()
    assert stats["train"] + stats["val"] + stats["test"] == len(x) == stats["snapshots"]
    # targets have (near) zero domain mean: the exact forcing conserves momentum
    assert (y.double().mean(dim=(2, 3)).abs() < 1e-3 * y.double().std(dim=(2, 3))).all()
    # the no-parameterization run's score is 0 by definition, and the reference is high-res
    assert info.scores(info.noparam)["ke_spectrum_score"] == pytest.approx(0.0)
    assert info.reference.spectrum.shape == (2, 8)
    # the metadata runs the online test: without a parameterization it is the no-param run
    again = info.run_online()
    assert np.allclose(again.spectrum, info.noparam.spectrum, rtol=1e-12, atol=0)
    assert info.qg_model(dtype=torch.float32).cfg == info.cfg_lo


# ----------------------------------------------------------------------------- eddy methods
def _info(n=16):
    cfg = QGConfig(nx=n)
    stats = ocean.OnlineStats(np.ones((2, n // 2)), np.ones((2, 10)), np.zeros((1, 2)))
    return ocean.EddyInfo(cfg_lo=cfg, in_names=("a", "b", "c", "d"), out_names=("e", "f", "g", "h"),
                          in_scale=torch.ones(4), out_scale=torch.ones(4),
                          online_q0=torch.zeros(1, 2, n, n), online={"kmax": 4, "days": 1,
                                                                     "discard_days": 0,
                                                                     "every_days": 1},
                          reference=stats, noparam=stats)


def test_hard_constraint_gives_zero_domain_mean_and_soft_penalises_it():
    from harness.methods.eddycnn import EddyCNN

    torch.manual_seed(0)
    x = torch.randn(3, 4, 16, 16)
    hard = EddyCNN(_info(), constraint="hard", width=0.25).eval()
    none = EddyCNN(_info(), constraint="none", width=0.25).eval()
    none.load_state_dict(hard.state_dict())
    with torch.no_grad():
        mh, mn = hard.forcing(x).mean(dim=(2, 3)), none.forcing(x).mean(dim=(2, 3))
    assert mn.abs().max() > 1e-3
    # the mean the network would give is removed to float32 round-off (eps 1.2e-7 of it)
    assert mh.abs().max() < 1e-5 * mn.abs().max()
    # the soft penalty is part of the loss: same weights, larger loss than the unconstrained one
    soft = EddyCNN(_info(), constraint="soft", lam=10.0, width=0.25)
    soft.load_state_dict(none.state_dict())
    none.train()
    soft.log = none.log = lambda *a, **k: None
    y = torch.zeros_like(x)
    assert soft.training_step((x, y), 0) > none.training_step((x, y), 0)


def test_fcnn_is_translation_equivariant_on_the_periodic_domain():
    from harness.methods.eddycnn import FCNN

    torch.manual_seed(0)
    net = FCNN(width=0.125).eval()
    x = torch.randn(1, 4, 16, 16)
    with torch.no_grad():
        a = torch.roll(net(x), shifts=(3, 5), dims=(2, 3))
        b = net(torch.roll(x, shifts=(3, 5), dims=(2, 3)))
    assert torch.allclose(a, b, atol=1e-5)


def test_smagorinsky_removes_kinetic_energy():
    from harness.methods.eddycnn import Smagorinsky

    m = QGModel(QGConfig(nx=32))
    m.random_init(3, amplitude=1e-5)
    smag = Smagorinsky(_info(32))
    x = torch.cat([m.u, m.v], 0)[None].float()
    s = smag.forcing(x)[0].double()
    work = (x[0].double() * s).sum()  # d(KE)/dt contribution, summed over layers and points
    assert work < 0
    off = Smagorinsky(_info(32), constant=0.0).forcing(x)
    assert off.abs().max() == 0


def test_offline_metrics():
    from harness.methods.eddycnn import EddyParameterization

    torch.manual_seed(0)
    true = torch.randn(5, 4, 8, 8)
    out = EddyParameterization.offline_metrics(true.clone(), true)
    assert out["r2_upper"] == pytest.approx(1.0) and out["corr_lower"] == pytest.approx(1.0)
    out = EddyParameterization.offline_metrics(torch.zeros_like(true), true)
    assert out["r2_upper"] < 0.01 and out["conservation_error"] == 0.0
    shifted = true + 1.0
    assert EddyParameterization.offline_metrics(shifted, true)["conservation_error"] > 0.5


# ----------------------------------------------------------------------------- forecasters
def _finfo(t_in=2, t_out=3):
    d, h, w = 2, 8, 8
    return ocean.ForecastInfo(
        var3=("thetao", "uo", "vo"), var2=("zos",), depth=np.array([1.0, 2.0]), lat=np.arange(h),
        lon=np.arange(w), t_in=t_in, t_out=t_out, mean3=torch.zeros(3, d), std3=torch.ones(3, d) * 2,
        mean2=torch.zeros(1), std2=torch.ones(1), mask3=torch.ones(d, h, w, dtype=torch.bool),
        mask2=torch.ones(h, w, dtype=torch.bool), weights=torch.ones(h, w),
        clim3=torch.zeros(366, 3, d, h, w), clim2=torch.zeros(366, 1, h, w))


def test_persistence_and_climatology_errors():
    from harness.methods.tsformer import Climatology, Persistence

    info = _finfo()
    x3 = torch.randn(4, 2, 3, 2, 8, 8)
    x2 = torch.randn(4, 2, 1, 8, 8)
    doy = torch.zeros(4, 5, dtype=torch.long)  # t_in + t_out days
    p = Persistence(info)
    t3 = x3[:, -1:].expand(-1, 3, -1, -1, -1, -1)  # a constant future: persistence is exact
    t2 = x2[:, -1:].expand(-1, 3, -1, -1, -1)
    p.test_step((x3, x2, t3, t2, doy), 0)
    out = p.summarise("test")
    assert out["rmse_thetao_d3"] == pytest.approx(0.0, abs=1e-6) and out["acc_zos_d1"] == pytest.approx(1.0)
    c = Climatology(info)
    c.test_step((x3, x2, t3, t2, doy), 0)
    out = c.summarise("test")
    # climatology 0 (normalised), std 2: RMSE = 2 * rms of the normalised target
    expect = 2 * t3[:, :, 0].pow(2).mean().sqrt().item()
    assert out["rmse_thetao"] == pytest.approx(expect, rel=1e-4)
    assert out["acc_thetao"] == pytest.approx(0.0)
    assert {"rmse_thetao_l0", "rmse_thetao_l1", "forecast_seconds", "rmse"} <= set(out)


def test_unet_ar_trains_one_day_and_forecasts_by_rollout(monkeypatch):
    from harness.methods import tsformer as ts

    info = _finfo()
    model = ts.UNetAR(info, base=8)
    calls = []
    real = model.net.forward
    monkeypatch.setattr(model.net, "forward", lambda *a: (calls.append(1), real(*a))[1])
    doy = torch.zeros(2, 5, dtype=torch.long)
    y3, y2 = model.forecast(torch.randn(2, 2, 3, 2, 8, 8), torch.randn(2, 2, 1, 8, 8), doy)
    assert y3.shape == (2, 3, 3, 2, 8, 8) and len(calls) == 3
    calls.clear()
    t = ts.TSformer(info, dim=8, heads=2, window=(2, 2, 2, 2))
    monkeypatch.setattr(t.net, "forward", lambda *a: (calls.append(1), t.net.__class__.forward(t.net, *a))[1])
    y3, _ = t.forecast(torch.randn(2, 2, 3, 2, 8, 8), torch.randn(2, 2, 1, 8, 8), doy)
    assert y3.shape == (2, 3, 3, 2, 8, 8) and len(calls) == 1


def test_anomaly_forecasters_remove_and_restore_the_climatology(monkeypatch):
    from harness.methods import tsformer as ts

    info = _finfo()
    info.clim3 = torch.arange(366.0)[:, None, None, None, None].expand(366, 3, 2, 8, 8).clone()
    info.clim2 = torch.arange(366.0)[:, None, None, None].expand(366, 1, 8, 8).clone() * 2
    model = ts.TSformer(info, dim=8, heads=2, window=(2, 2, 2, 2), anomalies=True)
    seen = {}

    def fake(x3, x2, doy):  # persistence of the anomaly
        seen["x3"] = x3
        return x3[:, -1:].expand(-1, 3, -1, -1, -1, -1), x2[:, -1:].expand(-1, 3, -1, -1, -1)

    monkeypatch.setattr(model, "net_forecast", fake)
    doy = torch.tensor([[10, 11, 12, 13, 14]])
    x3 = info.clim3[doy[:, :2]] + 0.5  # inputs: climatology of their days plus 0.5
    x2 = info.clim2[doy[:, :2]] - 1.0
    y3, y2 = model.forecast(x3, x2, doy)
    assert torch.allclose(seen["x3"], torch.full_like(x3, 0.5))  # the network saw anomalies
    assert torch.allclose(y3, info.clim3[doy[:, 2:]] + 0.5)  # climatology of the targets restored
    assert torch.allclose(y2, info.clim2[doy[:, 2:]] - 1.0)


def test_anomalies_can_be_limited_to_named_variables():
    from harness.methods import tsformer as ts

    info = _finfo()
    info.clim3 = torch.arange(366.0)[:, None, None, None, None].expand(366, 3, 2, 8, 8).clone()
    info.clim2 = torch.ones(366, 1, 8, 8)
    model = ts.UNetAR(info, base=8, anomalies=[info.var3[1]])
    doy = torch.tensor([[10, 11, 12]])
    a3, a2 = model._shift(torch.zeros(1, 3, 3, 2, 8, 8), torch.zeros(1, 3, 1, 8, 8), doy, -1.0)
    assert torch.allclose(a3[:, :, 1], -info.clim3[doy][:, :, 1])  # the named variable: anomaly
    assert a3[:, :, [0, 2]].abs().max() == 0 and a2.abs().max() == 0  # the others untouched
    with pytest.raises(UserError, match="unknown variables"):
        ts.UNetAR(info, base=8, anomalies=["salinity"])


def test_roll_augment_shifts_inputs_and_targets_together(monkeypatch):
    from harness.methods import tsformer as ts

    info = _finfo()
    info.periodic = True
    info.clim3 = torch.arange(366.0)[:, None, None, None, None].expand(366, 3, 2, 8, 8).clone()
    model = ts.TSformer(info, dim=8, heads=2, window=(2, 2, 2, 2), anomalies=["thetao"], roll_augment=True)
    seen = {}

    def persist(a3, a2):  # persistence of the (anomaly) input: exact on the batch below
        seen["a3"] = a3
        return a3[:, -1:].expand(-1, 3, -1, -1, -1, -1), a2[:, -1:].expand(-1, 3, -1, -1, -1)

    monkeypatch.setattr(model, "train_forward", persist)
    torch.manual_seed(0)
    anom3, x2 = torch.randn(4, 1, 3, 2, 8, 8), torch.randn(4, 2, 1, 8, 8)
    doy = torch.arange(5)[None].expand(4, -1)
    c3 = info.clim3[doy] * torch.tensor([1.0, 0, 0])[:, None, None, None]  # thetao's cycle only
    x3, t3 = anom3 + c3[:, :2], anom3 + c3[:, 2:]  # a frozen anomaly on a seasonal cycle
    t2 = x2[:, -1:].expand(-1, 3, -1, -1, -1)
    loss = model.training_step((x3, x2, t3, t2, doy), 0)
    assert float(loss) == pytest.approx(0.0, abs=1e-10)  # targets moved with their inputs
    moved = [not torch.equal(seen["a3"][b, -1], anom3[b, 0]) for b in range(4)]
    assert any(moved)  # ... and they did move
    assert ts.UNetAR(info, base=8, roll_augment="auto").roll_augment
    info.mask3[0, 0, 0] = False
    with pytest.raises(UserError, match="has land"):
        ts.UNetAR(info, base=8, roll_augment=True)
    info.periodic = False  # a regional sea: refused when asked for, off under "auto"
    with pytest.raises(UserError, match="not marked periodic"):
        ts.UNetAR(info, base=8, roll_augment=True)
    assert not ts.UNetAR(info, base=8, roll_augment="auto").roll_augment


def test_loss_weights_values_or_variables():
    from harness.methods import tsformer as ts

    info = _finfo()  # 3 three-D variables on 2 levels + 1 surface variable
    y3, y2 = torch.zeros(2, 3, 3, 2, 8, 8), torch.zeros(2, 3, 1, 8, 8)
    t2 = torch.full_like(y2, 2.0)  # an error of 2 on the surface variable only
    by_value = ts.UNetAR(info, base=8)._loss(y3, y2, y3, t2)
    by_variable = ts.UNetAR(info, base=8, loss_weights="variables")._loss(y3, y2, y3, t2)
    assert float(by_value) == pytest.approx(4.0 * 1 / 7)  # 1 of 7 value planes
    assert float(by_variable) == pytest.approx(4.0 / 4)  # 1 of 4 variables
    with pytest.raises(UserError, match="loss_weights"):
        ts.UNetAR(info, base=8, loss_weights="levels")


def test_simulation_config_key_changes_with_arguments():
    a = ocean_sim.EddySim(**TINY)
    assert a.key() == ocean_sim.EddySim(**TINY).key()
    assert a.key() != dataclasses.replace(a, days=61).key()


# ----------------------------------------------------------------------------- the contract
EDDY_METHODS = ("NoParameterization", "Smagorinsky", "EddyCNN")
FORECAST_METHODS = ("Persistence", "Climatology", "UNetAR", "TSformer")


def test_classes_meet_the_contract_and_save_every_hyperparameter():
    from harness.methods import eddycnn, tsformer

    for dm in (ocean.EddyDataModule, ocean.ForecastDataModule):
        api.check_dataset(dm)
        # DATA=<dir> points data_dir at it and keeps the rest (``sim`` is unused there)
        params = dm.for_real_data({"sim": {"nx": 64}, "batch_size": 4}, Path("/data/ocean"))
        assert params == {"sim": {"nx": 64}, "batch_size": 4, "data_dir": "/data/ocean"}
    small = {"EddyCNN": {"width": 0.125}, "UNetAR": {"base": 8},
             "TSformer": {"dim": 8, "heads": 2, "window": (2, 2, 2, 2)}}
    for module, names, info in ((eddycnn, EDDY_METHODS, _info()), (tsformer, FORECAST_METHODS, _finfo())):
        for name in names:
            cls = getattr(module, name)
            api.check_method(cls, name)
            model = cls(info, **small.get(name, {}))
            assert api.hidden_hyperparameters(model) == [], name
            assert not hasattr(cls, "family")
    assert dict(eddycnn.Smagorinsky(_info(), constant=0.2).hparams) == {"constant": 0.2, "online": True}
    assert eddycnn.NoParameterization.stages == () and tsformer.Climatology.stages == ()
    t = tsformer.TSformer(_finfo(), dim=8, heads=2, window=(2, 2, 2, 2), loss_weights="variables")
    assert t.hparams["loss_weights"] == "variables" and t.hparams["window"] == (2, 2, 2, 2)


def test_methods_import_only_the_datasets_metadata():
    import ast
    import inspect

    from harness.methods import eddycnn, tsformer

    allowed = {"LAYERS", "EddyInfo", "OnlineStats", "ForecastInfo"}
    for module in (eddycnn, tsformer):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("harness.datasets"):
                assert node.module == "harness.datasets.ocean", (module.__name__, node.module)
                assert {a.name for a in node.names} <= allowed, (module.__name__, node.names)


def test_bad_parameters_are_user_errors(tmp_path):
    from harness.methods import eddycnn, tsformer

    with pytest.raises(UserError, match="constraint must be one of"):
        eddycnn.EddyCNN(_info(), constraint="medium", width=0.125)
    with pytest.raises(UserError, match="filter must be one of"):
        ocean.EddyDataModule(filter="box", cache_dir=str(tmp_path))
    with pytest.raises(UserError, match="nx_lo"):
        ocean.EddyDataModule(nx_lo=15, cache_dir=str(tmp_path))
    with pytest.raises(UserError, match="split"):
        ocean.EddyDataModule(split=(0.9, 0.2), cache_dir=str(tmp_path))
    with pytest.raises(UserError, match="unknown settings"):
        ocean.ForecastDataModule(sim={"nx": 64, "resolution": 3}, cache_dir=str(tmp_path))
    with pytest.raises(UserError, match="nx_daily"):
        ocean.ForecastDataModule(sim={"nx": 64, "nx_daily": 128}, cache_dir=str(tmp_path))
    with pytest.raises(UserError, match="t_out"):
        ocean.ForecastDataModule(t_out=0, cache_dir=str(tmp_path))
    with pytest.raises(UserError, match="split"):
        ocean.ForecastDataModule(split=[0.5], cache_dir=str(tmp_path))
    with pytest.raises(UserError, match="region"):
        ocean.ForecastDataModule(region=[10, 20], cache_dir=str(tmp_path))
    with pytest.raises(UserError, match="roll_augment must be one of"):
        tsformer.UNetAR(_finfo(), base=8, roll_augment="sometimes")
    with pytest.raises(UserError, match="padding_mode must be one of"):
        tsformer.UNetAR(_finfo(), base=8, padding_mode="circular")
    with pytest.raises(UserError, match="divisible"):
        tsformer.TSformer(_finfo(), dim=10, heads=4)
    with pytest.raises(UserError, match="window"):
        tsformer.TSformer(_finfo(), dim=8, heads=2, window=(2, 2))


def test_bad_data_directories_are_data_format_errors(tmp_path):
    from harness.datasets.ocean_reader import write_glorys

    with pytest.raises(DataFormatError, match="does not exist"):
        ocean.ForecastDataModule(data_dir=str(tmp_path / "absent")).fingerprint()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="no netCDF files"):
        ocean.EddyDataModule(data_dir=str(tmp_path / "empty")).fingerprint()
    data = tmp_path / "reanalysis"
    data.mkdir()
    uo = np.zeros((2, 2, 4, 4))
    write_glorys(data / "a.nc", uo=uo, vo=uo, time=np.array(["2020-01-01", "2020-01-02"], "datetime64[D]"),
                 depth=[1.0, 2.0], lat=np.arange(4.0), lon=np.arange(4.0))
    dm = ocean.EddyDataModule(data_dir=str(data), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataFormatError, match="no 'qg_config' attribute"):
        dm.setup()
    with pytest.raises(DataFormatError, match=r"variable\(s\) \['thetao'\] not found"):
        ocean.ForecastDataModule(data_dir=str(data), var3=("thetao",), var2=(),
                                 cache_dir=str(tmp_path / "cache")).setup()
