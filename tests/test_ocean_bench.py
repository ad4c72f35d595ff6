"""The ocean benchmarks' quick profiles end to end, and the forecast benchmark on a directory of
hand-made reanalysis-style files (the real-data path)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from harness import tracking
from harness.cli import main


def _runs(name: str) -> list:
    mlf = tracking.client(tracking.tracking_uri())
    exp = mlf.get_experiment_by_name(name)
    return mlf.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.TAG_KIND}` = 'run'")


def _csv(path) -> dict[tuple[str, str], float]:
    with open(path) as f:
        return {(r["method"], r["metric"]): float(r["mean"]) for r in csv.DictReader(f)}


def test_eddycnn_quick(workdir):
    assert main(["bench", "eddycnn", "--profile", "quick", "--no-progress"]) == 0
    table = _csv(workdir / "reports" / "eddycnn.csv")
    rows = ("no-param", "smagorinsky", "cnn", "cnn-soft", "cnn-hard")
    for row in rows:
        for m in ("r2_upper", "r2_lower", "corr_upper", "conservation_error", "ke_spectrum_score",
                  "ke_distribution_score"):
            assert (row, m) in table, (row, m)
    assert table[("cnn-hard", "conservation_error")] < 1e-6  # hard constraint: round-off
    assert table[("cnn", "conservation_error")] > 1e-4
    assert table[("no-param", "ke_spectrum_score")] == 0.0
    runs = {r.data.tags["method"]: r for r in _runs("eddycnn")}
    mlf = tracking.client(tracking.tracking_uri())
    for row in rows:
        arts = [a.path for a in mlf.list_artifacts(runs[row].info.run_id)]
        assert "ke_spectra.png" in arts, (row, arts)


def test_tsformer_quick(workdir):
    assert main(["bench", "tsformer", "--profile", "quick", "--no-progress"]) == 0
    table = _csv(workdir / "reports" / "tsformer.csv")
    assert {m for m, _ in table} == {"persistence", "climatology", "unet-ar", "tsformer"}
    assert (workdir / "reports" / "tsformer-curves.png").stat().st_size > 0
    md = (workdir / "reports" / "tsformer.md").read_text()  # directions from metric_prefixes
    assert "rmse_thetao_d3 ↓" in md and "acc_thetao ↑" in md
    for run in _runs("tsformer"):
        m = run.data.metrics
        for var in ("thetao", "uo", "vo", "zos"):
            for lead in (1, 2, 3):
                assert f"test/rmse_{var}_d{lead}" in m and f"test/acc_{var}_d{lead}" in m
        assert m["test/rmse_thetao"] == pytest.approx(
            np.mean([m[f"test/rmse_thetao_d{t}"] for t in (1, 2, 3)]), rel=1e-6)
    # persistence: error grows with lead on an evolving ocean
    per = {r.data.tags["method"]: r.data.metrics for r in _runs("tsformer")}["persistence"]
    assert per["test/rmse_thetao_d1"] < per["test/rmse_thetao_d3"]


def test_tsformer_reads_a_reanalysis_directory(workdir):
    """HYCOM-like names in several yearly files, a land mask, packed int16: DATA=dir."""
    from harness.datasets.ocean_reader import write_glorys

    data = workdir / "reanalysis"
    data.mkdir()
    rng = np.random.default_rng(0)
    n, h, w = 60, 12, 14
    lat, lon = np.linspace(10, 20, h), np.linspace(110, 122, w)
    t = np.arange(n)
    base = np.sin(lat[:, None] / 3 + lon[None, :] / 4)
    field = base[None, None] + 0.1 * np.sin(t / 5)[:, None, None, None] + 0.01 * rng.normal(
        size=(n, 2, h, w))
    field[:, :, :3, :3] = np.nan  # land
    field[:, 1, :5, :5] = np.nan  # more land at depth
    times = np.datetime64("2020-01-01") + t.astype("timedelta64[D]")
    for part, sl in (("a", slice(0, 30)), ("b", slice(30, n))):
        write_glorys(data / f"glorys_{part}.nc", thetao=20 + field[sl], uo=0.1 * field[sl],
                     vo=-0.1 * field[sl], zos=0.2 * field[sl, 0], time=times[sl],
                     depth=np.array([0.5, 50.0]), lat=lat, lon=lon, pack_int16=True)
    argv = ["bench", "tsformer", "--profile", "quick", "--no-progress", "--data", str(data)]
    assert main(argv) == 0
    runs = _runs("tsformer")
    assert len(runs) == 4
    stats = runs[0].data.tags
    assert stats["data.grid"] == f"2x{h}x{w}" and stats["data.days"] == str(n)
    assert all(np.isfinite(r.data.metrics["test/rmse_thetao"]) for r in runs)
