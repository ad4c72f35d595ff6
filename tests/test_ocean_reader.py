"""CF-aware ocean reader: GLORYS packed int16, calendars, HYCOM/NEMO layouts, multi-file dask sets."""

from __future__ import annotations

import datetime as dt

import cftime
import dask.array
import netCDF4
import numpy as np
import pytest

from harness.datasets.ocean_reader import open_ocean, write_glorys
from harness.errors import DataFormatError, UserError

pytestmark = pytest.mark.filterwarnings("error")  # the reader must not trigger (e.g. xarray) warnings

FILL = np.int16(-32767)


def _var(nc, name, dtype, dims, data=None, fill=None, **attrs):
    var = nc.createVariable(name, dtype, dims, fill_value=fill)
    var.set_auto_maskandscale(False)
    var.setncatts(attrs)
    if data is not None:
        var[:] = data
    return var


def _grid_file(
    path,
    *,
    lat=None,
    lon=None,
    depth=(0.5, 10.0, 50.0),
    time=(0.0, 24.0),
    names=None,
    time_attrs=None,
    data=None,
    coord_attrs=None,
    seed=0,
):
    """A hand-made float32 file with 1-D coords; ``names`` maps canonical -> file name (None: omit)."""
    lat = np.asarray([-30.0, -10.0, 10.0, 30.0] if lat is None else lat)
    lon = np.asarray([0.0, 90.0, 180.0, 270.0, 350.0] if lon is None else lon)
    depth, time = np.asarray(depth), np.asarray(time)
    names = names or {
        "time": "time",
        "depth": "depth",
        "lat": "latitude",
        "lon": "longitude",
        "thetao": "thetao",
    }
    attrs = {
        "time": {"standard_name": "time", "units": "hours since 1950-01-01", "axis": "T"},
        "depth": {"standard_name": "depth", "units": "m", "positive": "down", "axis": "Z"},
        "lat": {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"},
        "lon": {"standard_name": "longitude", "units": "degrees_east", "axis": "X"},
    }
    attrs.update(coord_attrs or {})
    if time_attrs:
        attrs["time"] = time_attrs
    rng = np.random.default_rng(seed)
    shape = (time.size, depth.size, lat.size, lon.size)
    out = {}
    with netCDF4.Dataset(path, "w") as nc:
        for kind, values in (("time", time), ("depth", depth), ("lat", lat), ("lon", lon)):
            nc.createDimension(names[kind], values.size)
            _var(nc, names[kind], "f8", (names[kind],), values, **attrs[kind])
        dims4 = tuple(names[k] for k in ("time", "depth", "lat", "lon"))
        dims3 = tuple(names[k] for k in ("time", "lat", "lon"))
        for canon, (std, units, lo, hi) in {
            "thetao": ("sea_water_potential_temperature", "degC", -2.0, 30.0),
            "so": ("sea_water_salinity", "1e-3", 30.0, 38.0),
            "uo": ("eastward_sea_water_velocity", "m s-1", -1.0, 1.0),
            "vo": ("northward_sea_water_velocity", "m s-1", -1.0, 1.0),
            "zos": ("sea_surface_height_above_geoid", "m", -1.0, 1.0),
        }.items():
            if names.get(canon) is None:
                continue
            dims = dims3 if canon == "zos" else dims4
            shp = shape[:1] + shape[2:] if canon == "zos" else shape
            values = (data or {}).get(canon)
            if values is None:
                values = rng.uniform(lo, hi, size=shp).astype(np.float32)
            out[canon] = values
            _var(nc, names[canon], "f4", dims, values, fill=np.float32(1e20), standard_name=std, units=units)
    return out


# 1 ------------------------------------------------------------------------------------------------


def test_packed_int16_roundtrip_fill_and_land_mask_per_depth(tmp_path):
    path = tmp_path / "packed.nc"
    nt, nz, ny, nx = 2, 3, 4, 5
    rng = np.random.default_rng(1)
    phys = rng.uniform(-1.5, 29.0, size=(nt, nz, ny, nx))
    land = np.zeros((nz, ny, nx), bool)
    land[:, 0, 0] = True  # coast at every depth
    land[1:, 1, 1] = True  # shelf: land from the second level down
    land[2, :, 4] = True  # deep: a whole column of land at the last level
    scale, offset = np.float32(0.001), np.float32(14.0)
    packed = np.rint((phys - offset) / scale).astype(np.int16)
    packed[:, land] = FILL
    with netCDF4.Dataset(path, "w") as nc:
        for name, values, attrs in (
            (
                "time",
                np.array([657000.0, 657024.0]),
                {"standard_name": "time", "axis": "T", "units": "hours since 1950-01-01"},
            ),
            (
                "depth",
                np.array([0.494, 47.37, 453.9]),
                {"standard_name": "depth", "positive": "down", "units": "m", "axis": "Z"},
            ),
            ("latitude", np.linspace(40, 43, ny), {"standard_name": "latitude", "units": "degrees_north"}),
            ("longitude", np.linspace(-10, -6, nx), {"standard_name": "longitude", "units": "degrees_east"}),
        ):
            nc.createDimension(name, values.size)
            _var(nc, name, "f4" if name != "time" else "f8", (name,), values, **attrs)
        _var(
            nc,
            "thetao",
            "i2",
            ("time", "depth", "latitude", "longitude"),
            packed,
            fill=FILL,
            scale_factor=scale,
            add_offset=offset,
            standard_name="sea_water_potential_temperature",
            units="degrees_C",
        )

    data = open_ocean(path, variables=["thetao"])
    assert data.variables == ("thetao",)
    assert data.ds.thetao.dims == ("time", "depth", "lat", "lon")
    assert data.ds.thetao.dtype == np.float32
    got = data.to_numpy("thetao")
    assert got.dtype == np.float32
    assert np.array_equal(np.isnan(got), np.broadcast_to(land, got.shape))  # fill -> NaN
    ocean = ~np.isnan(got)
    assert np.max(np.abs(got[ocean] - phys[ocean])) <= scale / 2 * 1.001 + 1e-5
    mask = data.land_mask
    assert mask.dims == ("depth", "lat", "lon") and mask.dtype == bool
    np.testing.assert_array_equal(mask.values, land)
    assert not np.array_equal(mask.values[0], mask.values[2])
    assert data.times[0] == np.datetime64("1950-01-01") + np.timedelta64(657000, "h")
    data.close()


# 2 ------------------------------------------------------------------------------------------------


def test_360_day_and_noleap_calendars_decode_to_cftime(tmp_path):
    path = tmp_path / "d360.nc"
    _grid_file(
        path,
        time=[0.0, 1.0, 359.0, 360.0],
        time_attrs={"standard_name": "time", "units": "days since 2000-01-01", "calendar": "360_day"},
    )
    data = open_ocean(path, variables=["thetao"])
    times = data.times
    assert all(isinstance(t, cftime.Datetime360Day) for t in times)
    assert times[2] == cftime.Datetime360Day(2000, 12, 30)
    assert times[3] == cftime.Datetime360Day(2001, 1, 1)
    assert times[1] == cftime.Datetime360Day(2000, 1, 2)
    sub = open_ocean(path, variables=["thetao"], time=("2000-12-01", "2000-12-30"))
    assert list(sub.times) == [cftime.Datetime360Day(2000, 12, 30)]

    path = tmp_path / "noleap.nc"
    _grid_file(
        path,
        time=[58.0, 59.0],
        time_attrs={"axis": "T", "units": "days since 2001-01-01", "calendar": "noleap"},
    )
    times = open_ocean(path, variables=["thetao"]).times
    assert isinstance(times[0], cftime.DatetimeNoLeap)
    assert times[1] == cftime.DatetimeNoLeap(2001, 3, 1)

    path = tmp_path / "standard.nc"
    _grid_file(path, time=[0.0, 24.0])
    times = open_ocean(path, variables=["thetao"]).times
    assert times.dtype.kind == "M" and times[1] == np.datetime64("1950-01-02")


# 3 ------------------------------------------------------------------------------------------------


def test_hycom_names_are_canonicalised(tmp_path):
    path = tmp_path / "hycom.nc"
    names = {
        "time": "time",
        "depth": "depth",
        "lat": "lat",
        "lon": "lon",
        "thetao": "water_temp",
        "so": "salinity",
        "uo": "water_u",
        "vo": "water_v",
        "zos": "surf_el",
    }
    written = _grid_file(path, names=names)
    with netCDF4.Dataset(path, "a") as nc:  # HYCOM's forecast offset: not a decodable CF time
        _var(nc, "tau", "f8", ("time",), [0.0, 3.0], units="hours since analysis")
    data = open_ocean(path)
    assert data.variables == ("thetao", "so", "uo", "vo", "zos")
    assert data.source_names["thetao"] == "water_temp" and data.source_names["zos"] == "surf_el"
    assert data.ds.zos.dims == ("time", "lat", "lon")
    for canon, values in written.items():
        np.testing.assert_array_equal(data.to_numpy(canon), values)
    assert data.land_mask.dims == ("depth", "lat", "lon")


def test_coordinates_found_by_cf_metadata_not_names(tmp_path):
    path = tmp_path / "odd.nc"
    names = {"time": "T", "depth": "Z", "lat": "Y", "lon": "X", "thetao": "temp_x"}
    written = _grid_file(
        path,
        names=names,
        coord_attrs={
            "lat": {"standard_name": "latitude"},  # only the standard_name
            "lon": {"units": "degrees_east"},  # only the units
            "depth": {"positive": "down", "units": "m"},  # only positive=down
        },
        time_attrs={"units": "hours since 1950-01-01"},  # only "... since ..."
    )
    data = open_ocean(path, variables=["thetao"])  # temp_x found by its standard_name
    assert data.ds.thetao.dims == ("time", "depth", "lat", "lon")
    np.testing.assert_allclose(data.ds.lat.values, [-30, -10, 10, 30])
    np.testing.assert_allclose(data.ds.depth.values, [0.5, 10, 50])
    np.testing.assert_array_equal(data.to_numpy("thetao"), written["thetao"])


# 4 ------------------------------------------------------------------------------------------------


def _nemo_file(path):
    nt, nz, ny, nx = 2, 3, 6, 7
    j, i = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    nav_lat = (-50.0 + 20.0 * j + 2.0 * i).astype(np.float32)  # skewed curvilinear grid
    nav_lon = (-30.0 + 10.0 * i + 1.5 * j).astype(np.float32)
    rng = np.random.default_rng(4)
    temp = rng.uniform(0, 25, size=(nt, nz, ny, nx)).astype(np.float32)
    temp[:, :, 0, 0] = np.float32(1e20)  # land
    temp[:, 2, :, 6] = np.float32(1e20)
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time_counter", None)
        nc.createDimension("deptht", nz)
        nc.createDimension("y", ny)
        nc.createDimension("x", nx)
        _var(nc, "nav_lat", "f4", ("y", "x"), nav_lat, standard_name="latitude", units="degrees_north")
        _var(nc, "nav_lon", "f4", ("y", "x"), nav_lon, standard_name="longitude", units="degrees_east")
        _var(nc, "deptht", "f4", ("deptht",), [0.5, 5.0, 20.0], units="m", positive="down", axis="Z")
        _var(
            nc,
            "time_counter",
            "f8",
            ("time_counter",),
            [0.0, 86400.0],
            axis="T",
            standard_name="time",
            units="seconds since 1900-01-01",
            calendar="gregorian",
        )
        _var(
            nc,
            "time_centered",
            "f8",
            ("time_counter",),
            [43200.0, 129600.0],
            standard_name="time",
            units="seconds since 1900-01-01",
            calendar="gregorian",
        )
        _var(
            nc,
            "votemper",
            "f4",
            ("time_counter", "deptht", "y", "x"),
            temp,
            fill=np.float32(1e20),
            units="degC",
            coordinates="time_centered deptht nav_lat nav_lon",
        )
    temp[temp > 1e19] = np.nan
    return nav_lat, nav_lon, temp


def test_nemo_2d_coordinates_region_and_weights(tmp_path):
    path = tmp_path / "nemo_grid_T.nc"
    nav_lat, nav_lon, temp = _nemo_file(path)
    data = open_ocean(path, variables=["thetao"])
    ds = data.ds
    assert data.curvilinear and data.horizontal_dims == ("y", "x")
    assert ds.thetao.dims == ("time", "depth", "y", "x")
    assert ds.lat.dims == ("y", "x") and ds.lon.dims == ("y", "x")
    np.testing.assert_array_equal(ds.lat.values, nav_lat)
    np.testing.assert_array_equal(data.to_numpy("thetao"), temp)
    assert data.times[1] == np.datetime64("1900-01-02")  # time_counter, not time_centered
    assert data.land_mask.dims == ("depth", "y", "x")
    np.testing.assert_array_equal(data.land_mask.values, np.isnan(temp[0]))

    weights = data.lat_weights()
    cos = np.cos(np.deg2rad(nav_lat.astype(np.float64)))
    ocean = ~np.isnan(temp[0, 0])
    np.testing.assert_allclose(weights.values, cos / cos[ocean].mean(), rtol=1e-12)
    assert weights.values[ocean].mean() == pytest.approx(1.0)

    region = (-15.0, 40.0, -5.0, 35.0)
    inside = (nav_lat >= -15) & (nav_lat <= 40) & (nav_lon >= -5) & (nav_lon <= 35)
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    sub = open_ocean(path, variables=["thetao"], region=region)
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    np.testing.assert_array_equal(sub.ds.lat.values, nav_lat[box])
    np.testing.assert_array_equal(sub.to_numpy("thetao"), temp[(slice(None), slice(None), *box)])
    assert 0 < sub.ds.sizes["y"] < nav_lat.shape[0] and 0 < sub.ds.sizes["x"] < nav_lat.shape[1]
    with pytest.raises(DataFormatError, match="no grid point"):
        open_ocean(path, variables=["thetao"], region=(80.0, 85.0, 0.0, 10.0))

    later = tmp_path / "nemo_grid_T_2.nc"
    _nemo_file(later)
    with netCDF4.Dataset(later, "a") as nc:
        nc["time_counter"][:] = [172800.0, 259200.0]
    both = open_ocean([later, path], variables=["thetao"], region=region)
    assert both.ds.thetao.chunks is not None and both.ds.sizes["time"] == 4
    np.testing.assert_array_equal(both.to_numpy("thetao", time=slice(0, 2)), sub.to_numpy("thetao"))


# 5 ------------------------------------------------------------------------------------------------


def test_missing_variable_error_lists_what_the_file_has(tmp_path):
    path = tmp_path / "only_t.nc"
    _grid_file(path)
    with pytest.raises(DataFormatError) as err:
        open_ocean(path, variables=["thetao", "so"])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path))  # one line, naming the file
    assert "'so'" in msg
    assert "thetao('time', 'depth', 'latitude', 'longitude')" in msg
    assert "sea_water_potential_temperature" in msg
    assert "latitude" in msg and "longitude" in msg
    with pytest.raises(DataFormatError):
        open_ocean(path)  # the default asks for all five
    assert open_ocean(path, variables=None).variables == ("thetao",)  # None: whatever is present


def test_missing_latitude_error_lists_coordinates(tmp_path):
    path = tmp_path / "nolat.nc"
    names = {"time": "time", "depth": "depth", "lat": "row", "lon": "longitude", "thetao": "thetao"}
    _grid_file(path, names=names, coord_attrs={"lat": {"long_name": "row index"}})
    with pytest.raises(DataFormatError, match="no lat coordinate") as err:
        open_ocean(path, variables=["thetao"])
    msg = str(err.value)
    assert "coordinates:" in msg and "\n" not in msg and str(path) in msg
    for name in ("time", "depth", "row", "longitude"):
        assert name in msg
    assert isinstance(err.value, UserError)  # the CLI prints it as one line


def test_bad_paths_files_and_selections_are_user_errors(tmp_path):
    with pytest.raises(DataFormatError, match="no such file or directory"):
        open_ocean(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match=r"no netCDF files \(\*\.nc\)"):
        open_ocean(tmp_path / "empty")
    bad = tmp_path / "bad" / "broken.nc"
    bad.parent.mkdir()
    bad.write_text("not a netCDF file")
    with pytest.raises(DataFormatError, match="cannot be read as netCDF") as err:
        open_ocean(bad, variables=["thetao"])
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    path = tmp_path / "ok.nc"
    _grid_file(path)
    for kwargs, match in (({"region": (0.0, 10.0)}, "region must be four numbers"),
                          ({"region": (10.0, 0.0, 0.0, 10.0)}, "lat_min"),
                          ({"depth": ("a", "b")}, "depth range"),
                          ({"depth": ["deep"]}, "depth levels"),
                          ({"time": ("2000-01-01",)}, "time must be"),
                          ({"time": ("not a date", "nor this")}, "ISO dates")):
        with pytest.raises(UserError, match=match):
            open_ocean(path, variables=["thetao"], **kwargs)
    with pytest.raises(DataFormatError, match="matches no time step") as err:
        open_ocean(path, variables=["thetao"], time=("1960-01-01", "1960-12-31"))
    assert str(path) in str(err.value)


# 6 ------------------------------------------------------------------------------------------------


def test_multifile_set_is_lazy_time_ordered_and_stats_match_numpy(tmp_path):
    parts = []
    for k in range(3):
        values = _grid_file(
            tmp_path / f"part_{k}.nc",
            time=[48.0 * k, 48.0 * k + 24.0],
            seed=10 + k,
            names={
                "time": "time",
                "depth": "depth",
                "lat": "latitude",
                "lon": "longitude",
                "thetao": "thetao",
                "zos": "zos",
            },
        )
        values["thetao"][:, 1, 0, :2] = np.nan  # some land, saved as NaN in float files
        parts.append(values)
        with netCDF4.Dataset(tmp_path / f"part_{k}.nc", "a") as nc:
            nc["thetao"][:, 1, 0, :2] = np.float32(1e20)
    files = [tmp_path / "part_2.nc", tmp_path / "part_0.nc", tmp_path / "part_1.nc"]  # out of order
    data = open_ocean(files, variables=["thetao", "zos"], chunks={"time": 1})
    assert data.ds.thetao.chunks is not None and data.ds.zos.chunks is not None
    assert data.ds.sizes["time"] == 6
    assert np.all(np.diff(data.times) > np.timedelta64(0))
    thetao = np.concatenate([p["thetao"] for p in parts])
    zos = np.concatenate([p["zos"] for p in parts])
    np.testing.assert_array_equal(data.to_numpy("thetao"), thetao)

    stats = data.stats()
    assert isinstance(data.ds.thetao.data, dask.array.Array)  # still lazy: nothing loaded into the dataset
    np.testing.assert_allclose(stats["thetao"]["mean"], np.nanmean(thetao, axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(stats["thetao"]["std"], np.nanstd(thetao, axis=(0, 2, 3)), rtol=1e-5)
    assert stats["thetao"]["mean"].shape == (3,)
    assert stats["zos"]["mean"].shape == ()
    np.testing.assert_allclose(stats["zos"]["mean"], np.nanmean(zos), rtol=1e-5)
    np.testing.assert_allclose(stats["zos"]["std"], np.nanstd(zos), rtol=1e-5)

    by_dir = open_ocean(tmp_path, variables=["thetao"])  # a directory: all *.nc, sorted
    by_glob = open_ocean(str(tmp_path / "part_*.nc"), variables=["thetao"], time=("1950-01-03", "1950-01-05"))
    assert by_dir.ds.sizes["time"] == 6 and by_dir.ds.thetao.chunks is not None
    np.testing.assert_array_equal(by_glob.to_numpy("thetao"), thetao[2:5])


# 7 ------------------------------------------------------------------------------------------------


def test_region_and_depth_selection_with_0_360_longitudes(tmp_path):
    path = tmp_path / "global.nc"
    lon = np.arange(0.0, 360.0, 30.0)  # 0..330
    lat = np.array([-60.0, -30.0, 0.0, 30.0, 60.0])
    written = _grid_file(path, lat=lat, lon=lon, depth=[1.0, 10.0, 100.0, 1000.0])["thetao"]

    sub = open_ocean(path, variables=["thetao"], region=(-30.0, 30.0, -60.0, 60.0), depth=(5.0, 500.0))
    np.testing.assert_array_equal(sub.ds.lon.values, [-60, -30, 0, 30, 60])  # request's convention
    np.testing.assert_array_equal(sub.ds.lat.values, [-30, 0, 30])
    np.testing.assert_array_equal(sub.ds.depth.values, [10.0, 100.0])
    cols = [10, 11, 0, 1, 2]
    np.testing.assert_array_equal(sub.to_numpy("thetao"), written[:, 1:3][:, :, 1:4][..., cols])

    east = open_ocean(path, variables=["thetao"], region=(-90.0, 90.0, 170.0, 250.0), depth=[0.0, 900.0])
    np.testing.assert_array_equal(east.ds.lon.values, [180, 210, 240])
    np.testing.assert_array_equal(east.ds.depth.values, [1.0, 1000.0])  # nearest levels
    np.testing.assert_array_equal(east.to_numpy("thetao", time=0), written[0][[0, 3]][:, :, 6:9])

    dateline = open_ocean(path, variables=["thetao"], region=(-90.0, 90.0, 300.0, 30.0))  # crosses 0
    np.testing.assert_array_equal(dateline.ds.lon.values, [300, 330, 360, 390])

    whole = open_ocean(path, variables=["thetao"], chunks=None)
    assert whole.ds.thetao.chunks is None
    np.testing.assert_array_equal(whole.ds.lon.values, lon)  # no region: the file's convention


@pytest.mark.parametrize("pack", [False, True])
def test_write_glorys_roundtrip(tmp_path, pack):
    rng = np.random.default_rng(7)
    nt, nz, ny, nx = 3, 2, 4, 6
    time = np.array(["2020-01-01", "2020-01-02", "2020-01-03"], dtype="datetime64[ns]")
    depth, lat, lon = np.array([0.494, 1.54]), np.linspace(-1, 1, ny), np.linspace(-180, 175, nx)
    fields = {
        "thetao": rng.uniform(-2, 30, (nt, nz, ny, nx)),
        "so": rng.uniform(30, 38, (nt, nz, ny, nx)),
        "uo": rng.normal(0, 0.3, (nt, nz, ny, nx)),
        "vo": None,
        "zos": rng.normal(0, 0.5, (nt, ny, nx)),
    }
    for name in ("thetao", "so", "uo"):
        fields[name][:, :, 0, 0] = np.nan
        fields[name][:, 1, 2, 3] = np.nan
    fields["zos"][:, 0, 0] = np.nan
    path = write_glorys(
        tmp_path / "glorys.nc", **fields, time=time, depth=depth, lat=lat, lon=lon, pack_int16=pack
    )

    with netCDF4.Dataset(path) as nc:
        assert nc.Conventions == "CF-1.6"
        assert "vo" not in nc.variables
        assert nc["latitude"].units == "degrees_north" and nc["longitude"].units == "degrees_east"
        assert nc["depth"].positive == "down" and nc["depth"].axis == "Z" and nc["time"].axis == "T"
        assert nc["thetao"].standard_name == "sea_water_potential_temperature"
        assert nc["thetao"].filters()["zlib"]
        assert nc["thetao"].dtype == (np.int16 if pack else np.float32)
        scales = {n: float(getattr(nc[n], "scale_factor", 0.0)) for n in ("thetao", "so", "uo", "zos")}

    with open_ocean(path, variables=["thetao", "so", "uo", "zos"]) as data:
        np.testing.assert_array_equal(data.times, time)
        np.testing.assert_allclose(data.ds.depth.values, depth, rtol=1e-6)
        for name in ("thetao", "so", "uo", "zos"):
            got = data.to_numpy(name)
            want = fields[name]
            assert got.dtype == np.float32
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            ok = ~np.isnan(want)
            tol = scales[name] / 2 * 1.001 + 1e-6 * np.abs(want[ok]) if pack else 1e-6 * np.abs(want[ok])
            assert np.all(np.abs(got[ok] - want[ok]) <= tol), name
        assert data.land_mask.values[1, 2, 3] and not data.land_mask.values[0, 2, 3]


def test_write_glorys_non_standard_calendar(tmp_path):
    time = [cftime.Datetime360Day(2000, 2, 30), cftime.Datetime360Day(2000, 3, 1)]
    zos = np.zeros((2, 2, 3))
    path = write_glorys(
        tmp_path / "z.nc",
        zos=zos,
        time=time,
        lat=[0, 1],
        lon=[0, 1, 2],
        calendar="360_day",
        units="days since 2000-01-01",
    )
    data = open_ocean(path, variables=["zos"])
    assert list(data.times) == time
    assert data.land_mask.dims == ("lat", "lon")
    with pytest.raises(ValueError, match="shape"):
        write_glorys(tmp_path / "bad.nc", zos=np.zeros((2, 3, 3)), time=[0, 1], lat=[0, 1], lon=[0, 1, 2])
    dates = [dt.datetime(2001, 1, 1), dt.datetime(2001, 1, 2)]
    standard = write_glorys(tmp_path / "n.nc", zos=zos, time=dates, lat=[0, 1], lon=[0, 1, 2])
    assert open_ocean(standard, variables=["zos"]).times[0] == np.datetime64("2001-01-01")


# 8 ------------------------------------------------------------------------------------------------


def test_cos_lat_weights_mean_one_and_proportional(tmp_path):
    path = tmp_path / "w.nc"
    lat = np.array([-75.0, -45.0, 0.0, 20.0, 60.0, 85.0])
    values = np.random.default_rng(3).uniform(0, 1, (1, 2, 6, 4)).astype(np.float32)
    values[:, 0, 5, :] = np.nan  # land over the whole northern row at the surface
    values[:, 0, 0, 1] = np.nan
    _grid_file(
        path, lat=lat, lon=[0.0, 10.0, 20.0, 30.0], depth=[1.0, 2.0], time=[0.0], data={"thetao": values}
    )
    data = open_ocean(path, variables=["thetao"])
    w = data.lat_weights()
    assert w.dims == ("lat", "lon") and w.shape == (6, 4)
    ocean = ~np.isnan(values[0, 0])
    assert w.values[ocean].mean() == pytest.approx(1.0, rel=1e-12)
    ratio = w.values / np.cos(np.deg2rad(lat))[:, None]
    np.testing.assert_allclose(ratio, ratio[0, 0], rtol=1e-12)
    deep = data.lat_weights(depth_index=1)
    assert deep.values.mean() == pytest.approx(1.0, rel=1e-12)  # no land at depth 1
