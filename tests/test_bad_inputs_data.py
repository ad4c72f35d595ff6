"""Bad real data: every data family refuses a malformed data directory before any run starts,
with exit code 2 and one ``error:`` line naming the file or directory (``helpers.user_error``).

Each case starts from the synthetic writers' output in the real format (Amazon 2014 / 2018 /
2023 / ratings CSV, the multi-domain and evolving Amazon sets, the QG simulation's GLORYS
``daily/`` and ``hires/`` files), breaks one thing, and runs ``harness bench <b> --profile quick
--data <dir>`` in-process. Then the cache fixes: the forecast windows are checked with a cache
present, the time step, no ``.tmp-*`` left behind, and corrupt or unsafe caches set aside and
rebuilt without running their code.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xarray as xr
from helpers import user_error

from harness import cache, tracking
from harness.datasets import amazon, amazon_evo, amazon_seq, ocean, ocean_sim
from harness.errors import DataFormatError, UserError

REPO = Path(__file__).resolve().parents[1]
QUICK = ["--profile", "quick", "--no-progress", "--no-report"]
SIM = ocean_sim.EddySim(nx=32, spinup_nx=32, spinup_days=2, adjust_days=0, days=30,
                        hires_every_days=2, nx_daily=16)
DAILY, HIRES = "eddy_daily_2000.nc", "eddy_hires_2000.nc"
REVIEWS = {"2014": "reviews_Books_5.json.gz", "2018": "Books_5.json.gz", "2023": "Books.jsonl.gz",
           "csv": "Books.csv"}


# ----------------------------------------------------------------------------- shared data
@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small grids: one torch thread is several times faster than many on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mlflow_template(tmp_path_factory) -> Path:
    """An MLflow SQLite store, created once: each test starts from a copy (creating the tables
    takes seconds)."""
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    tracking.client(f"sqlite:///{db}")
    return db


@pytest.fixture
def wd(workdir: Path, mlflow_template: Path) -> Path:
    shutil.copy(mlflow_template, workdir / "mlflow.db")
    return workdir


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> tuple[list[dict], list[dict]]:
    """Reviews and meta records of a synthetic 2018-format category (``Books``)."""
    d = amazon.write_synthetic(tmp_path_factory.mktemp("amazon"),
                               amazon.SyntheticConfig(n_users=300, n_items=200, n_topics=5), "Books")
    read = lambda name: [json.loads(x) for x in gzip.open(d / name, "rt")]  # noqa: E731
    return read("Books_5.json.gz"), read("meta_Books.json.gz")


def _gz(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def write_amazon(d: Path, fmt: str, records: tuple[list[dict], list[dict]],
                 edit: Callable[[dict], dict | None] = lambda r: r) -> Path:
    """The category ``Books`` in format ``fmt`` (reviews ``edit``-ed record by record; ``None``
    drops one), with its meta file where the format has one."""
    d.mkdir(parents=True, exist_ok=True)
    reviews, meta = records
    rows = []
    for r in reviews:
        if fmt == "2014":
            r = {"reviewerID": r["reviewerID"], "asin": r["asin"], "helpful": [0, 0],
                 "reviewText": r["reviewText"], "overall": r["overall"], "summary": r["summary"],
                 "unixReviewTime": r["unixReviewTime"], "reviewTime": "05 13, 2014"}
        elif fmt == "2023":
            r = {"rating": r["overall"], "title": "t", "text": r["reviewText"], "asin": r["asin"],
                 "parent_asin": r["asin"], "user_id": r["reviewerID"],
                 "timestamp": r["unixReviewTime"] * 1000, "verified_purchase": True}
        r = edit(dict(r))
        if r is not None:
            rows.append(r)
    if fmt == "csv":
        (d / REVIEWS[fmt]).write_text("".join(
            f"{r['asin']},{r['reviewerID']},{r['overall']},{r['unixReviewTime']}\n" for r in rows))
        return d
    dump = repr if fmt == "2014" else json.dumps
    _gz(d / REVIEWS[fmt], [dump(r) for r in rows])
    if fmt == "2023":
        _gz(d / "meta_Books.jsonl.gz", [json.dumps({"parent_asin": m["asin"], "title": m["title"]})
                                        for m in meta])
    else:
        _gz(d / "meta_Books.json.gz", [dump({"asin": m["asin"], "title": m["title"]}) for m in meta])
    return d


@pytest.fixture(scope="module")
def seq_dir(tmp_path_factory) -> Path:
    return amazon_seq.write_multidomain(tmp_path_factory.mktemp("seq"), amazon_seq.MultiDomainConfig(
        domains=("Beauty", "Toys"), n_users=50, n_items=40))


@pytest.fixture(scope="module")
def evo_dir(tmp_path_factory) -> Path:
    return amazon_evo.write_evolving(tmp_path_factory.mktemp("evo"), "Toys",
                                     amazon_evo.EvoConfig(n_users=80, n_items=60))


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> dict[str, xr.Dataset]:
    """The QG simulation's two products (``daily``, ``hires``), loaded, and its directory."""
    d = ocean_sim.simulate(tmp_path_factory.mktemp("sim"), SIM, progress=False)
    out: dict[str, Any] = {"dir": d}
    for product, name in (("daily", DAILY), ("hires", HIRES)):
        with xr.open_dataset(d / product / name) as ds:
            out[product] = ds.load()
    return out


def write_nc(path: Path, ds: xr.Dataset) -> Path:
    """``ds`` as netCDF, keeping each variable's packing but not its stored chunking."""
    ds = ds.copy()
    for v in ds.variables.values():
        for key in ("chunksizes", "preferred_chunks", "original_shape", "source", "contiguous"):
            v.encoding.pop(key, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path)
    return path


def put(ds: xr.Dataset, name: str, values: Any, dims: tuple[str, ...] | None = None) -> xr.Dataset:
    """``ds`` with variable ``name`` replaced (float, unpacked)."""
    ds = ds.copy()
    attrs = ds[name].attrs if name in ds else {}
    ds[name] = xr.Variable(dims or ds[name].dims, np.asarray(values, dtype=np.float32), attrs)
    return ds


def retime(ds: xr.Dataset, days: Any) -> xr.Dataset:
    """``ds`` with times ``2000-01-01 + days`` (fractional days allowed)."""
    t = np.datetime64("2000-01-01T00:00") + (np.asarray(days, float) * 1440).astype("timedelta64[m]")
    return ds.assign_coords(time=t)


# ----------------------------------------------------------------------------- Amazon (aurl)
def _no_field(field: str) -> Callable[[dict], dict]:
    return lambda r: {k: v for k, v in r.items() if k != field}


_USER = {"2014": "reviewerID", "2018": "reviewerID", "2023": "user_id"}
_TIME = {"2014": "unixReviewTime", "2018": "unixReviewTime", "2023": "timestamp"}


def amazon_case(fmt: str, kind: str, d: Path, records: Any) -> str:
    """Write ``Books`` in ``fmt`` with ``kind`` broken; returns the needle of the error line."""
    reviews = d / REVIEWS[fmt]
    if kind == "bad_time":
        write_amazon(d, fmt, records, lambda r: {**r, _TIME[fmt]: "yesterday"})
        return reviews.name
    if kind == "no_user":
        write_amazon(d, fmt, records, _no_field(_USER[fmt]))
        return reviews.name
    write_amazon(d, fmt, records)
    if kind == "missing":
        reviews.unlink()
        return str(d)
    if kind == "empty":
        reviews.write_bytes(b"")
    elif kind == "garbage":
        lines = [f"<html>error {i}: not a review</html>" for i in range(2000)]
        if fmt == "csv":
            reviews.write_text("\n".join(lines))
        else:
            _gz(reviews, lines)
    elif kind == "truncated":
        data = reviews.read_bytes()
        reviews.write_bytes(data[: len(data) // 2])
    elif kind == "not_gzip":
        reviews.write_bytes(gzip.decompress(reviews.read_bytes()))
    elif kind == "too_small":
        if fmt == "csv":
            reviews.write_text("".join(reviews.read_text().splitlines(True)[:30]))
        else:
            _gz(reviews, gzip.open(reviews, "rt").read().splitlines()[:30])
    return reviews.name


AMAZON_CASES = [(fmt, kind) for fmt in ("2014", "2018", "2023")
                for kind in ("missing", "empty", "garbage", "truncated", "not_gzip", "no_user",
                             "bad_time", "too_small")] + [
    ("csv", "missing"), ("csv", "empty"), ("csv", "garbage"), ("csv", "too_small")]


@pytest.mark.parametrize("fmt, kind", AMAZON_CASES, ids=[f"{f}-{k}" for f, k in AMAZON_CASES])
def test_amazon_bad_data(wd, capsys, records, fmt, kind):
    d = wd / "amazon"
    needle = amazon_case(fmt, kind, d, records)
    user_error(["bench", "aurl", *QUICK, "--data", str(d), "--dataset", "Books"], capsys, needle=needle)
    _nothing_started(wd)


def test_amazon_empty_split_is_refused(wd, capsys, records):
    """split_ratios without a validation share left val empty: metrics nan, run marked done."""
    d = write_amazon(wd / "amazon", "2018", records)
    bench = (REPO / "benchmarks" / "aurl.yaml").read_text().replace(
        "params: {category: Synthetic, k_core: 5, split: ratio}",
        "params: {category: Synthetic, k_core: 5, split: ratio, split_ratios: [0.9, 0.0, 0.1]}")
    (wd / "aurl0.yaml").write_text(bench.replace("name: aurl", "name: aurl0"))
    line = user_error(["bench", str(wd / "aurl0.yaml"), *QUICK, "--data", str(d), "--dataset", "Books"],
                      capsys, needle="Books_5.json.gz")
    assert "valid split is empty" in line and "split_ratios" in line
    _nothing_started(wd)


def test_amazon_synthetic_cache_key_holds_the_category(tmp_path):
    """The synthetic writer names its files after the category: one directory per category."""
    small = {"n_users": 60, "n_items": 50, "n_topics": 3}
    for category in ("Synthetic", "Other"):
        dm = amazon.AmazonDataModule(category=category, synthetic=small, cache_dir=str(tmp_path))
        dm.prepare_data()
        assert (dm.raw_dir() / f"{category}_5.json.gz").exists()


# ----------------------------------------------------------------------------- amazon-seq
def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def seq_case(kind: str, d: Path) -> str:
    meta = d / "meta_Toys.json.gz"
    if kind == "missing_reviews":
        (d / "Toys_5.json.gz").unlink()
        return str(d)
    if kind == "missing_meta":
        meta.unlink()
        return "meta_Toys.json"
    if kind == "empty_meta":
        meta.write_bytes(b"")
        return meta.name
    if kind == "meta_without_titles":
        _gz(meta, [json.dumps({"asin": json.loads(x)["asin"], "main_cat": "Toys"})
                   for x in gzip.open(meta, "rt")])
        return meta.name
    if kind == "garbage_meta":
        _gz(meta, [f"not json {i}" for i in range(500)])
        return meta.name
    if kind == "truncated_meta":
        data = meta.read_bytes()
        meta.write_bytes(data[: len(data) // 2])
        return meta.name
    if kind == "garbage_reviews":
        _gz(d / "Beauty_5.json.gz", [f"not json {i}" for i in range(500)])
        return "Beauty_5.json.gz"
    if kind == "too_small":
        reviews = d / "Toys_5.json.gz"
        _gz(reviews, gzip.open(reviews, "rt").read().splitlines()[:12])
        return reviews.name
    if kind == "too_few_items":  # 8 users x 8 items: a 5-core with fewer items than candidates
        lines = [json.dumps({"reviewerID": f"U{u}", "asin": f"I{i}", "unixReviewTime": 1_400_000_000 + i,
                             "verified": True, "overall": 5.0}) for u in range(8) for i in range(8)]
        _gz(d / "Toys_5.json.gz", lines)
        return "Toys_5.json.gz"
    raise AssertionError(kind)


SEQ_CASES = ["missing_reviews", "missing_meta", "empty_meta", "meta_without_titles", "garbage_meta",
             "truncated_meta", "garbage_reviews", "too_small", "too_few_items"]


@pytest.mark.parametrize("kind", SEQ_CASES)
def test_amazon_seq_bad_data(wd, capsys, seq_dir, kind):
    d = _copy(seq_dir, wd / "seq")
    needle = seq_case(kind, d)
    user_error(["bench", "weaverec", *QUICK, "--data", str(d), "--dataset", "single-source"], capsys,
               needle=needle)
    _nothing_started(wd)


def test_amazon_seq_cold_setting_without_cold_items_is_refused(wd, capsys, seq_dir):
    """The cold setting with cold_share 0 has no example to validate or test on."""
    d = _copy(seq_dir, wd / "seq")
    bench = (REPO / "benchmarks" / "molorec.yaml").read_text().replace("cold_share: 0.3", "cold_share: 0.0")
    bench = bench.replace("Beauty, Sports, Toys", "Beauty, Toys").replace("name: molorec", "name: molo0")
    (wd / "molo0.yaml").write_text(bench)
    line = user_error(["bench", str(wd / "molo0.yaml"), *QUICK, "--data", str(d), "--dataset", "cold"],
                      capsys, needle=str(d))
    assert "cold_share" in line and "valid split" in line
    _nothing_started(wd)


# ----------------------------------------------------------------------------- amazon-evo
EVO_CASES = ["missing_meta", "garbage_reviews", "truncated_reviews", "meta_without_titles",
             "too_small", "no_active_user", "no_inactive_user"]


@pytest.mark.parametrize("kind", EVO_CASES)
def test_amazon_evo_bad_data(wd, capsys, evo_dir, kind):
    d = _copy(evo_dir, wd / "evo")
    reviews, meta = d / "Toys_5.json.gz", d / "meta_Toys.json.gz"
    bench = "evorec"
    if kind == "missing_meta":
        meta.unlink()
        needle = "meta_Toys.json"
    elif kind == "garbage_reviews":
        _gz(reviews, ["{'not': 'json'" for _ in range(500)])
        needle = reviews.name
    elif kind == "truncated_reviews":
        data = reviews.read_bytes()
        reviews.write_bytes(data[: len(data) // 2])
        needle = reviews.name
    elif kind == "meta_without_titles":
        _gz(meta, [json.dumps({"asin": json.loads(x)["asin"]}) for x in gzip.open(meta, "rt")])
        needle = meta.name
    elif kind == "too_small":
        _gz(reviews, gzip.open(reviews, "rt").read().splitlines()[:9])
        needle = reviews.name
    else:  # the update period starts after every review, or before all of them
        start = 2_000_000_000 if kind == "no_active_user" else 0
        text = (REPO / "benchmarks" / "evorec.yaml").read_text().replace("name: evorec", "name: evo0")
        text = text.replace("beauty: {params: {n_candidates: 10,",
                            f"beauty: {{params: {{update_start: {start}, n_candidates: 10,")
        text = text.replace("toys: {params: {n_candidates: 10,",
                            f"toys: {{params: {{update_start: {start}, n_candidates: 10,")
        (wd / "evo0.yaml").write_text(text)
        bench, needle = str(wd / "evo0.yaml"), "update_start"
    line = user_error(["bench", bench, *QUICK, "--data", str(d), "--dataset", "Toys"], capsys, needle=needle)
    if kind.startswith("no_"):
        assert reviews.name in line and kind.removeprefix("no_").removesuffix("_user") in line
    _nothing_started(wd)


# ----------------------------------------------------------------------------- ocean: tsformer
def _station(ds: xr.Dataset) -> xr.Dataset:
    """Station data: latitude and longitude on one dimension."""
    n = ds.sizes["latitude"]
    th = ds.thetao.isel(longitude=0).values
    return xr.Dataset(
        {"thetao": (("time", "depth", "station"), th, ds.thetao.attrs),
         "uo": (("time", "depth", "station"), th, ds.uo.attrs),
         "vo": (("time", "depth", "station"), th, ds.vo.attrs),
         "zos": (("time", "station"), th[:, 0], ds.zos.attrs)},
        coords={"time": ds.time, "depth": ds.depth,
                "latitude": ("station", ds.latitude.values, ds.latitude.attrs),
                "longitude": ("station", ds.longitude.values[:n], ds.longitude.attrs)})


def _undecodable_time(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.assign_coords(time=np.arange(ds.sizes["time"], dtype=float))
    ds.time.attrs.update(units="days", standard_name="time", axis="T")
    return ds


def _string_variable(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.copy()
    ds["thetao"] = xr.Variable(ds.thetao.dims, np.full(ds.thetao.shape, "warm", dtype=object),
                               ds.thetao.attrs)
    return ds


def _day_of_nan(ds: xr.Dataset, var: str = "uo", day: int = 12) -> xr.Dataset:
    values = ds[var].values.copy()
    values[day] = np.nan
    return put(ds, var, values)


def _repeat_day(ds: xr.Dataset) -> xr.Dataset:
    days = np.arange(ds.sizes["time"], dtype=float)
    days[15] = 14
    return retime(ds, days)


def _swap_days(ds: xr.Dataset) -> xr.Dataset:
    days = np.arange(ds.sizes["time"], dtype=float)
    days[[10, 11]] = days[[11, 10]]
    return retime(ds, days)


def _irregular(ds: xr.Dataset) -> xr.Dataset:
    days = np.arange(ds.sizes["time"], dtype=float)
    days[20:] += 0.5
    return retime(ds, days)


def _split_time(ds: xr.Dataset, d: Path, b: Callable[[xr.Dataset], xr.Dataset] = lambda x: x,
                overlap: int = 0) -> str:
    """Two files, ``a.nc`` (days 0-14) and ``b.nc`` (the rest, ``b``-edited); returns b's name."""
    write_nc(d / "a.nc", ds.isel(time=slice(0, 15)))
    write_nc(d / "b.nc", b(ds.isel(time=slice(15 - overlap, None))))
    return "b.nc"


def daily_case(kind: str, ds: xr.Dataset, d: Path) -> str:
    """Write a broken ``daily`` directory ``d``; returns the needle of the error line."""
    d.mkdir(parents=True)
    f = d / DAILY
    edits: dict[str, Callable[[xr.Dataset], xr.Dataset]] = {
        "missing_thetao": lambda x: x.drop_vars("thetao"),
        "missing_zos": lambda x: x.drop_vars("zos"),
        "no_latitude": lambda x: x.drop_vars("latitude"),
        "no_time_units": _undecodable_time,
        "thetao_without_depth": lambda x: put(x, "thetao", x.thetao.isel(depth=0).values,
                                              ("time", "latitude", "longitude")),
        "zos_with_depth": lambda x: put(x, "zos", np.repeat(x.zos.values[:, None], 2, 1),
                                        ("time", "depth", "latitude", "longitude")),
        "thetao_static": lambda x: put(x, "thetao", x.thetao.isel(time=0).values,
                                       ("depth", "latitude", "longitude")),
        "extra_dimension": lambda x: put(x, "thetao", np.repeat(x.thetao.values[:, :, None], 2, 2),
                                         ("time", "depth", "member", "latitude", "longitude")),
        "staggered_grid": lambda x: put(x, "uo", x.uo.values, ("time", "depth", "latitude", "lon_u")),
        "station_data": _station,
        "string_values": _string_variable,
        "no_time_step": lambda x: x.isel(time=slice(0, 0)),
        "all_nan_thetao": lambda x: put(x, "thetao", np.full(x.thetao.shape, np.nan)),
        "nan_day": _day_of_nan,
        "constant_zos": lambda x: put(x, "zos", np.full(x.zos.shape, 0.25)),
        "repeated_day": _repeat_day,
        "days_out_of_order": _swap_days,
        "monthly": lambda x: retime(x, 30.44 * np.arange(x.sizes["time"])),
        "yearly": lambda x: retime(x, 365.25 * np.arange(x.sizes["time"])),
        "irregular": _irregular,
        "too_few_days": lambda x: x.isel(time=slice(0, 9)),
    }
    if kind in edits:
        write_nc(f, edits[kind](ds))
        return str(d) if kind == "too_few_days" else f.name
    if kind == "no_nc_files":
        (d / "README.txt").write_text("the data are elsewhere")
        return str(d)
    if kind == "empty_file":
        f.write_bytes(b"")
        return f.name
    if kind == "garbage_file":
        f.write_bytes(b"<html>404 Not Found</html>" * 40)
        return f.name
    if kind == "truncated_file":
        data = write_nc(f, ds).read_bytes()
        f.write_bytes(data[: len(data) // 2])
        return f.name
    if kind == "files_overlap":
        _split_time(ds, d, overlap=3)
        return "a.nc"  # both are named
    if kind == "files_other_grid":
        return _split_time(ds, d, lambda x: x.assign_coords(latitude=x.latitude + 0.5))
    if kind == "file_missing_variable":
        return _split_time(ds, d, lambda x: x.drop_vars("zos"))
    if kind == "file_out_of_order":
        return _split_time(ds, d, _swap_days)
    raise AssertionError(kind)


DAILY_CASES = ["no_nc_files", "empty_file", "garbage_file", "truncated_file", "missing_thetao",
               "missing_zos", "no_latitude", "no_time_units", "thetao_without_depth", "zos_with_depth",
               "thetao_static", "extra_dimension", "staggered_grid", "station_data", "string_values",
               "no_time_step", "all_nan_thetao", "nan_day", "constant_zos", "repeated_day",
               "days_out_of_order", "monthly", "yearly", "irregular", "too_few_days", "files_overlap",
               "files_other_grid", "file_missing_variable", "file_out_of_order"]
DAILY_WORDS = {"empty_file": "empty (0 bytes)", "garbage_file": "not a netCDF file",
               "truncated_file": "truncated", "no_time_units": "do not decode to dates",
               "thetao_without_depth": "var3",
               "zos_with_depth": "var2", "thetao_static": "no time dimension", "string_values": "not numbers",
               "no_time_step": "time dimension is empty", "all_nan_thetao": "all NaN",
               "nan_day": "2000-01-13", "constant_zos": "constant", "repeated_day": "appears twice",
               "days_out_of_order": "follows", "monthly": "expects 1D", "yearly": "expects 1D",
               "irregular": "irregular", "too_few_days": "t_in 3", "files_overlap": "b.nc",
               "file_out_of_order": "follows"}


@pytest.mark.parametrize("kind", DAILY_CASES)
def test_tsformer_bad_data(wd, capsys, sim, kind):
    d = wd / "glorys"
    needle = daily_case(kind, sim["daily"], d)
    line = user_error(["bench", "tsformer", *QUICK, "--data", str(d)], capsys, needle=needle)
    assert DAILY_WORDS.get(kind, "") in line
    _nothing_started(wd)


# ----------------------------------------------------------------------------- ocean: eddycnn
def hires_case(kind: str, ds: xr.Dataset, d: Path) -> str:
    d.mkdir(parents=True)
    f = d / HIRES
    cfg = json.loads(ds.attrs["qg_config"])
    edits: dict[str, Callable[[xr.Dataset], xr.Dataset]] = {
        "no_qg_config": lambda x: x.drop_attrs(deep=False),
        "bad_qg_config": lambda x: x.assign_attrs(qg_config='{"nx": 32, "depth": "deep"'),
        "qg_config_other_grid": lambda x: x.assign_attrs(qg_config=json.dumps({**cfg, "nx": 64})),
        "missing_vo": lambda x: x.drop_vars("vo"),
        "vo_one_layer": lambda x: put(x, "vo", x.vo.isel(depth=0).values, ("time", "latitude", "longitude")),
        "nan_point": lambda x: put(x, "uo", np.where(np.arange(x.uo.size).reshape(x.uo.shape) == 999,
                                                     np.nan, x.uo.values)),
        "all_nan_vo": lambda x: put(x, "vo", np.full(x.vo.shape, np.nan)),
        "repeated_snapshot": lambda x: x.assign_coords(time=np.r_[x.time.values[:5], x.time.values[4:-1]]),
        "snapshots_out_of_order": lambda x: x.isel(time=np.r_[1, 0, 2:x.sizes["time"]]),
        "too_few_snapshots": lambda x: x.isel(time=slice(0, 4)),
    }
    if kind in edits:
        write_nc(f, edits[kind](ds))
        return str(d) if kind in ("too_few_snapshots", "nan_point", "all_nan_vo") else f.name
    if kind == "no_nc_files":
        return str(d)
    if kind == "garbage_file":
        f.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 300)
        return f.name
    if kind == "truncated_file":
        data = write_nc(f, ds).read_bytes()
        f.write_bytes(data[: len(data) // 3])
        return f.name
    if kind == "reanalysis_file":  # a daily GLORYS-like file without the QG state
        write_nc(f, ds.drop_attrs(deep=False).isel(latitude=slice(0, 16), longitude=slice(0, 16)))
        return f.name
    if kind == "two_runs":
        write_nc(d / "a.nc", ds.isel(time=slice(0, 8)))
        write_nc(d / "b.nc", ds.isel(time=slice(8, None)).assign_attrs(
            qg_config=json.dumps({**cfg, "beta": 2e-11})))
        return "b.nc"
    if kind == "files_other_grid":
        write_nc(d / "a.nc", ds.isel(time=slice(0, 8)))
        write_nc(d / "b.nc", ds.isel(time=slice(8, None)).assign_coords(longitude=ds.longitude + 1.0))
        return "b.nc"
    raise AssertionError(kind)


HIRES_CASES = ["no_nc_files", "garbage_file", "truncated_file", "reanalysis_file", "no_qg_config",
               "bad_qg_config", "qg_config_other_grid", "missing_vo", "vo_one_layer", "nan_point",
               "all_nan_vo", "repeated_snapshot", "snapshots_out_of_order", "too_few_snapshots",
               "two_runs", "files_other_grid"]
HIRES_WORDS = {"nan_point": "NaN", "all_nan_vo": "(all of them)", "repeated_snapshot": "appears twice",
               "snapshots_out_of_order": "follows", "too_few_snapshots": "split empty",
               "two_runs": "qg_config", "vo_one_layer": "2 layers"}


@pytest.mark.parametrize("kind", HIRES_CASES)
def test_eddycnn_bad_data(wd, capsys, sim, kind):
    d = wd / "qg"
    needle = hires_case(kind, sim["hires"], d)
    line = user_error(["bench", "eddycnn", *QUICK, "--data", str(d)], capsys, needle=needle)
    assert HIRES_WORDS.get(kind, "") in line
    _nothing_started(wd)


def _nothing_started(wd: Path) -> None:
    """No training began (no checkpoint) and no temporary cache directory was left."""
    assert not list(wd.rglob("*.ckpt"))
    assert not list((wd / ".cache").rglob(".tmp*")), list((wd / ".cache").rglob(".tmp*"))


def test_the_unbroken_directories_are_accepted(tmp_path, records, seq_dir, evo_dir, sim):
    """Each case above breaks one thing of a directory that is read without complaint."""
    c = str(tmp_path / "cache")
    for fmt in ("2014", "2018", "2023", "csv"):
        d = write_amazon(tmp_path / fmt, fmt, records)
        amazon.AmazonDataModule(data_dir=str(d), category="Books", cache_dir=c).prepare_data()
    amazon_seq.AmazonSeqDataModule(data_dir=str(seq_dir), domains=("Beauty", "Toys"), target="Toys",
                                   n_candidates=10, cache_dir=c).prepare_data()
    amazon_evo.AmazonEvoDataModule(data_dir=str(evo_dir), category="Toys", n_candidates=10,
                                   cache_dir=c).prepare_data()
    for kind in ("split", "whole"):
        d = tmp_path / f"daily-{kind}"
        if kind == "split":
            d.mkdir()
            _split_time(sim["daily"], d)
        else:
            write_nc(d / DAILY, sim["daily"])
        dm = ocean.ForecastDataModule(data_dir=str(d), t_in=3, t_out=3, cache_dir=c)
        dm.setup()
        assert dm.stats()["days"] == 30 and dm.stats()["missing_days"] == 0
    eddy = ocean.EddyDataModule(data_dir=str(sim["dir"]), nx_lo=16, online_days=4,
                                online_discard_days=2, online_every_days=1, cache_dir=c)
    eddy.setup()
    assert eddy.stats()["snapshots"] == 15


# ----------------------------------------------------------------------------- cache keys
def test_forecast_windows_are_checked_with_a_cache_present(tmp_path, sim):
    """The processed cache does not depend on t_in / t_out, so its key leaves them out; the
    window check runs on every prepare_data (it used to run only while building the cache,
    and a longer window then left validation and test with zero windows: runs done, no
    metrics)."""
    data = write_nc(tmp_path / "glorys" / DAILY, sim["daily"]).parent
    c = str(tmp_path / "cache")
    short = ocean.ForecastDataModule(data_dir=str(data), t_in=3, t_out=3, cache_dir=c)
    short.setup()
    assert [p.name for p in (tmp_path / "cache" / "processed").iterdir()] == [short._processed_dir().name]
    longer = ocean.ForecastDataModule(data_dir=str(data), t_in=2, t_out=2, cache_dir=c)
    longer.setup()  # the same cache, windows recomputed
    assert longer._processed_dir() == short._processed_dir()
    assert len(longer.starts["val"]) == len(short.starts["val"]) + 2 > 0
    with pytest.raises(UserError, match=r"the val split .* no window of t_in 5 \+ t_out 5") as err:
        ocean.ForecastDataModule(data_dir=str(data), t_in=5, t_out=5, cache_dir=c).prepare_data()
    assert "ocean-forecast" in str(err.value) and str(data) in str(err.value)
    # every argument the processed data depend on is in its key
    base = dict(data_dir=str(data), cache_dir=c)
    keys = {ocean.ForecastDataModule(**base, **kw)._processed_dir() for kw in (
        {}, {"time_step": "2D"}, {"split": (0.5, 0.2)}, {"coarsen": 2}, {"var2": ()},
        {"region": (30, 35, 140, 145)}, {"depth": [250.0]}, {"time": ("2000-01-01", "2000-01-20")},
        {"clim_window": 3}, {"t_in": 9, "train_stride": 3}, {"sim": {"nx": 64, "spinup_nx": 64}})}
    assert len(keys) == 9  # t_in, strides and sim (unused with data_dir) do not change the data


# ----------------------------------------------------------------------------- time step
def test_time_step_is_checked_missing_days_are_allowed(tmp_path, sim, caplog):
    c = str(tmp_path / "cache")
    five = write_nc(tmp_path / "five" / DAILY, retime(sim["daily"], 5 * np.arange(30))).parent
    with pytest.raises(DataFormatError, match=r"time step is 5 days .* expects 1D \(1 day, time_step\)"):
        ocean.ForecastDataModule(data_dir=str(five), t_in=3, t_out=3, cache_dir=c).prepare_data()
    dm = ocean.ForecastDataModule(data_dir=str(five), t_in=3, t_out=3, time_step="5D", cache_dir=c)
    dm.setup()
    assert dm.stats()["days"] == 30
    with pytest.raises(UserError, match="time_step must be"):
        ocean.ForecastDataModule(time_step="weekly", cache_dir=c)
    # two days missing (a gap in a download): read, and no window straddles the gap
    days = np.r_[0:16, 18:32]
    gap = write_nc(tmp_path / "gap" / DAILY, retime(sim["daily"], days)).parent
    dm = ocean.ForecastDataModule(data_dir=str(gap), t_in=2, t_out=2, split=(0.7, 0.15), cache_dir=c)
    dm.setup()
    assert dm.stats()["missing_days"] == 2
    starts = dm.starts["train"]
    assert {12, 16} <= set(starts) and not set(starts) & {13, 14, 15}  # these would cross it
    assert "2 of 32 time steps (1D) are missing" in caplog.text


# ----------------------------------------------------------------------------- .tmp clean-up
def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_failed_prepare_data_leaves_no_tmp_directories(tmp_path, sim, monkeypatch):
    c = tmp_path / "cache"
    processed = c / "processed"
    processed.mkdir(parents=True)
    # what killed processes of this host left (a SIGKILL skips every clean-up), and an old-style name
    dead = _dead_pid()
    stale = [processed / f".tmp-{cache._host()}-{dead}-abc123", processed / f".tmp-{dead}-old_one",
             processed / f".ocean-eddy-0.pt.{cache._host()}-{dead}.tmp"]
    for p in stale[:2]:
        (p / "sub").mkdir(parents=True)
        (p / "sub" / "fields3.npy").write_bytes(b"x")
    stale[2].write_bytes(b"half")
    os.utime(stale[1], (0, 0))
    alive = processed / f".tmp-{cache._host()}-{os.getppid()}-writing"  # a live writer's
    alive.mkdir()
    other_host = processed / f".tmp-elsewhere-{dead}-writing"  # another host's, shared storage
    other_host.mkdir()
    # a day of NaN fails _process after its memory-mapped arrays were created in the temporary dir
    data = write_nc(tmp_path / "glorys" / DAILY, _day_of_nan(sim["daily"])).parent
    with pytest.raises(DataFormatError, match="2000-01-13"):
        ocean.ForecastDataModule(data_dir=str(data), t_in=3, t_out=3, cache_dir=str(c)).prepare_data()
    left = sorted(p.name for p in processed.iterdir())
    assert left == sorted([alive.name, other_host.name]), left
    # an interrupt while publishing (after write) removes the temporary directory too
    monkeypatch.setattr(cache, "publish", lambda tmp, out: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        cache.cached_dir(c / "synthetic" / "x", lambda tmp: (tmp / "f").write_text("1"))
    assert [p.name for p in (c / "synthetic").iterdir()] == []


# ----------------------------------------------------------------------------- corrupt caches
class _Evil:
    """Unpickling this runs ``touch <marker>``: what a planted cache file could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _plant(path: Path, how: str, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "unsafe":
        torch.save({"x": _Evil(marker), "n_train": 1}, path)
    elif how == "truncated":
        torch.save({"x": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_bytes(b"not a torch file\n" * 10)


@pytest.mark.parametrize("how", ["unsafe", "truncated", "garbage"])
def test_corrupt_or_unsafe_caches_are_set_aside_and_rebuilt(tmp_path, sim, capsys, how):
    marker = tmp_path / "marker"
    c = tmp_path / "cache"
    eddy = ocean.EddyDataModule(data_dir=str(sim["dir"]), nx_lo=16, online_days=4, online_discard_days=2,
                                online_every_days=1, cache_dir=str(c))
    rec = amazon.AmazonDataModule(category="Synthetic", synthetic={"n_users": 60, "n_items": 50,
                                                                   "n_topics": 3}, cache_dir=str(c))
    for dm in (eddy, rec):
        path = dm._processed_path()
        _plant(path, how, marker)
        dm.setup()
        err = capsys.readouterr().err
        warning = [ln for ln in err.splitlines() if ln.startswith("warning: cache")]
        assert len(warning) == 1 and str(path) in warning[0] and ".corrupt" in warning[0], err
        assert path.with_name(path.name + ".corrupt").exists()
        torch.load(path, weights_only=True)  # rebuilt, and plain data
        assert not marker.exists()
    assert eddy.stats()["snapshots"] == 15 and rec.stats()["users"] > 0


def test_corrupt_forecast_cache_is_set_aside_and_rebuilt(tmp_path, sim, capsys):
    """The forecast's processed directory: an unreadable meta.npz sets the directory aside."""
    c = tmp_path / "cache"
    data = write_nc(tmp_path / "glorys" / DAILY, sim["daily"]).parent
    fc = ocean.ForecastDataModule(data_dir=str(data), t_in=3, t_out=3, cache_dir=str(c))
    fc.prepare_data()
    d = fc._processed_dir()
    (d / "meta.npz").write_bytes(b"PK\x03\x04 broken")
    again = ocean.ForecastDataModule(data_dir=str(data), t_in=3, t_out=3, cache_dir=str(c))
    again.setup()
    assert "set aside" in capsys.readouterr().err and d.with_name(d.name + ".corrupt").is_dir()
    assert again.stats()["days"] == 30


def test_no_unsafe_torch_load_in_datasets_and_scripts():
    for path in [*REPO.joinpath("datasets").glob("*.py"), *REPO.joinpath("scripts").glob("*.py")]:
        assert "weights_only=False" not in path.read_text(), path
