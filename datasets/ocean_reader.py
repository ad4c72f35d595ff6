"""CF-aware reader (and writer) for CMEMS GLORYS12-style ocean reanalysis netCDF files.

The reader also understands the HYCOM (``lat``/``lon``/``water_temp``...) and NEMO (2-D ``nav_lat``/
``nav_lon`` on dims ``y, x``, ``time_counter``, ``deptht``, ``votemper``...) layouts. Coordinates are
found from CF metadata (``standard_name``, ``units``, ``axis``, ``positive``), with common names only as
a last resort, and variables by name, then by known aliases, then by CF ``standard_name``.

What a caller must know:

* Output names are canonical: ``thetao, so, uo, vo, zos`` (any other requested name is kept as is).
  Units are passed through from the file unchanged.
* Output dims are canonical. With 1-D coordinates: ``(time, depth, lat, lon)`` (2-D fields
  ``(time, lat, lon)``), ``lat``/``lon`` being 1-D index coordinates. With 2-D coordinates (NEMO
  curvilinear grids): ``(time, depth, y, x)``, with ``lat``/``lon`` 2-D coordinates on ``(y, x)``.
* Decoding is CF mask-and-scale: packed int16 variables become float32 with NaN where the file holds
  ``_FillValue``; land is NaN. (With ``chunks=None`` the dtype is xarray's decoded one, float64 when
  the file's ``scale_factor`` is float64, so that opening does not load the data; ``to_numpy`` always
  returns float32.) Times use xarray's ``CFDatetimeCoder``: ``numpy.datetime64`` for the
  standard calendars, ``cftime`` objects for non-standard ones (``360_day``, ``noleap``...).
* Longitude convention: without ``region`` the file's values are kept (0..360 or -180..180). With a
  ``region`` the request may use either convention; the longitudes of the result are expressed in the
  frame of the request, ``lon_min + (lon - lon_min) mod 360`` (ascending), so a -10..10 request on a
  0..360 file returns longitudes -10..10. On 2-D grids the region is the bounding box, in index space,
  of the points that fall inside (rows/columns with any point inside); longitudes are not rewritten.
* ``depth``: a ``tuple`` ``(min, max)`` selects the levels in that closed range; a list/array of
  values selects the nearest levels.
* With ``chunks`` (default ``{"time": 32}``, keys in canonical dim names) arrays are dask-backed and
  nothing is read until computed; with ``chunks=None`` a single file is lazily indexed but not
  dask-backed (several files are always dask-backed, with the files' own chunking).
* Times must decode to dates and increase strictly (a repeated or backward step is an error, in one
  file or across files). With ``time_step`` (e.g. ``"1D"``) their spacing is checked too
  (:func:`time_index`): missing steps are allowed and counted (``OceanData.time_index``); irregular
  spacing, or a typical spacing other than ``time_step`` (monthly or yearly files read as daily),
  is an error naming both.
* Errors: a missing path, no ``.nc`` file, an unreadable file, a missing variable or coordinate, a
  variable that is not numeric or not on the time axis, bad times (above), files that differ from
  the first in variables, grid or times, or a selection that matches nothing raise
  :class:`~harness.errors.DataFormatError`, one line naming the file (and what it holds) and what to
  do; a malformed ``region``, ``depth``, ``time`` or ``time_step`` raises
  :class:`~harness.errors.UserError`.
"""

from __future__ import annotations

import glob as _glob
import math
import os
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from harness.errors import DataFormatError, UserError
from harness.lazy import lazy_import

# a second or more to import: paid only when a reader runs, not by every `harness` command
xr = lazy_import("xarray")
dask = lazy_import("dask")
cftime = lazy_import("cftime")

__all__ = [
    "CANONICAL_VARIABLES",
    "VARIABLE_ALIASES",
    "OceanData",
    "open_ocean",
    "parse_time_step",
    "time_index",
    "write_glorys",
]

PathLike = str | os.PathLike[str]

CANONICAL_VARIABLES: tuple[str, ...] = ("thetao", "so", "uo", "vo", "zos")

# canonical name -> (alternative names, CF standard_names), searched in this order.
VARIABLE_ALIASES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "thetao": (
        ("water_temp", "votemper", "toce"),
        ("sea_water_potential_temperature", "sea_water_temperature", "sea_water_conservative_temperature"),
    ),
    "so": (
        ("salinity", "vosaline", "soce"),
        ("sea_water_salinity", "sea_water_practical_salinity", "sea_water_absolute_salinity"),
    ),
    "uo": (("water_u", "vozocrtx", "uoce"), ("eastward_sea_water_velocity",)),
    "vo": (("water_v", "vomecrty", "voce"), ("northward_sea_water_velocity",)),
    "zos": (
        ("surf_el", "sossheig", "ssh"),
        ("sea_surface_height_above_geoid", "sea_surface_elevation", "sea_surface_height_above_sea_level"),
    ),
}

_CF_ATTRS: dict[str, tuple[str, str, str]] = {  # name -> (standard_name, units, long_name)
    "thetao": ("sea_water_potential_temperature", "degrees_C", "Temperature"),
    "so": ("sea_water_salinity", "1e-3", "Salinity"),
    "uo": ("eastward_sea_water_velocity", "m s-1", "Eastward velocity"),
    "vo": ("northward_sea_water_velocity", "m s-1", "Northward velocity"),
    "zos": ("sea_surface_height_above_geoid", "m", "Sea surface height"),
}

_CF_KIND = {"lat": "latitude", "lon": "longitude", "depth": "depth", "time": "time"}
_LAT_UNITS = {"degrees_north", "degree_north", "degrees_n", "degree_n", "degreesn", "degreen"}
_LON_UNITS = {"degrees_east", "degree_east", "degrees_e", "degree_e", "degreese", "degreee"}
_FALLBACK_NAMES = {
    "lat": ("latitude", "lat", "nav_lat"),
    "lon": ("longitude", "lon", "nav_lon"),
    "depth": ("depth", "deptht", "lev"),
    "time": ("time", "time_counter"),
}
DEFAULT_CHUNKS: Mapping[str, int] = MappingProxyType({"time": 32})
_INT16_FILL = np.int16(-32767)
_FLOAT_FILL = np.float32(1.0e20)
_PACK_HALF_RANGE = 32766  # packed values lie in [-32766, 32766]; -32767 is the fill value


# --------------------------------------------------------------------------------------------------
# discovery helpers


def _describe(ds: xr.Dataset) -> str:
    """What a dataset holds, on one line: variables with dims and standard_names, coordinates,
    dimensions."""
    names = [f"{name}{tuple(var.dims)} standard_name={var.attrs.get('standard_name')!r}"
             for name, var in ds.data_vars.items()]
    coords = ", ".join(f"{name}{tuple(c.dims)}" for name, c in ds.coords.items()) or "(none)"
    dims = ", ".join(f"{d}={n}" for d, n in ds.sizes.items()) or "(none)"
    return f"variables: {', '.join(names) or '(none)'}; coordinates: {coords}; dimensions: {dims}"


def _where(files: Sequence[str]) -> str:
    """The files named in an error: the file, or the directory and count of several."""
    if len(files) == 1:
        return str(files[0])
    parents = {os.path.dirname(f) for f in files}
    if len(parents) == 1:
        return f"the {len(files)} files in {parents.pop() or '.'}"
    return f"{files[0]} and {len(files) - 1} more files"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _bounds_names(ds: xr.Dataset) -> set[Hashable]:
    return {v.attrs["bounds"] for v in ds.variables.values() if isinstance(v.attrs.get("bounds"), str)}


def _attr(var: xr.Variable, key: str) -> str:
    value = var.attrs.get(key, var.encoding.get(key, ""))
    return str(value).strip() if value is not None else ""


def _coord_score(kind: str, name: Hashable, var: xr.Variable) -> int:
    """How strongly ``var`` looks like a ``kind`` coordinate (0: not at all)."""
    sn = _attr(var, "standard_name").lower()
    axis = _attr(var, "axis").upper()
    units = _attr(var, "units").lower()
    lname = str(name).lower()
    if kind == "lat":
        checks = (sn == "latitude", units in _LAT_UNITS, axis == "Y")
    elif kind == "lon":
        checks = (sn == "longitude", units in _LON_UNITS, axis == "X")
    elif kind == "depth":
        checks = (sn == "depth", axis == "Z", _attr(var, "positive").lower() == "down")
    else:  # time
        is_time = " since " in units or np.issubdtype(var.dtype, np.datetime64)
        checks = (sn == "time", axis == "T", is_time)
    for rank, ok in zip((4, 3, 2), checks, strict=True):
        if ok:
            return rank
    return 1 if lname in _FALLBACK_NAMES[kind] else 0


def _find_coord(
    ds: xr.Dataset, kind: str, allowed_dims: set[Hashable], ndims: tuple[int, ...], exclude: set[Hashable]
) -> Hashable | None:
    """The best ``kind`` coordinate whose dims all lie in ``allowed_dims`` (coords preferred to data)."""
    best: tuple[tuple[int, int, int], Hashable] | None = None
    for name, var in ds.variables.items():
        if name in exclude or var.ndim not in ndims or not set(var.dims) <= allowed_dims:
            continue
        score = _coord_score(kind, name, var)
        if score == 0:
            continue
        key = (score, int(name in var.dims), int(name in ds.coords))
        if best is None or key > best[0]:
            best = (key, name)
    return None if best is None else best[1]


def _find_variable(ds: xr.Dataset, wanted: str) -> Hashable | None:
    """Source name of ``wanted``: by exact name, then alias names, then CF standard_name."""
    names, standard_names = VARIABLE_ALIASES.get(wanted, ((), ()))
    candidates = {k: v for k, v in ds.data_vars.items() if v.ndim >= 2}
    for name in (wanted, *names):
        if name in candidates:
            return name
    for sn in standard_names:
        hits = [k for k, v in candidates.items() if v.attrs.get("standard_name") == sn]
        if hits:
            return max(hits, key=lambda k: candidates[k].ndim)
    return None


@dataclass(frozen=True)
class _Layout:
    """Where things are in a source file and what they become."""

    variables: dict[str, Hashable]  # canonical -> source name
    time: Hashable
    lat: Hashable
    lon: Hashable
    depth: Hashable | None
    dims: dict[Hashable, str]  # source dim -> canonical dim
    curvilinear: bool

    @property
    def keep(self) -> list[Hashable]:
        extra = [self.time, self.lat, self.lon] + ([self.depth] if self.depth is not None else [])
        return list(dict.fromkeys([*self.variables.values(), *extra]))


def _discover(ds: xr.Dataset, variables: Sequence[str] | None, where: str) -> _Layout:
    """Find the requested variables and the time/depth/lat/lon coordinates of the file ``where``,
    or raise DataFormatError."""
    if variables is None:
        found = {v: _find_variable(ds, v) for v in CANONICAL_VARIABLES}
        found = {k: v for k, v in found.items() if v is not None}
        if not found:
            raise DataFormatError(
                f"{where}: none of the variables {list(CANONICAL_VARIABLES)} found (by name, alias "
                f"or CF standard_name); give the file one of them. The file has {_describe(ds)}"
            )
    else:
        if isinstance(variables, str):
            variables = (variables,)
        found = {v: _find_variable(ds, v) for v in variables}
        missing = [k for k, v in found.items() if v is None]
        if missing:
            raise DataFormatError(
                f"{where}: variable(s) {missing} not found (by name, alias or CF standard_name); "
                f"request only variables the files hold (var3/var2) or add them. The file has "
                f"{_describe(ds)}"
            )
    found_src: dict[str, Hashable] = {k: v for k, v in found.items() if v is not None}

    var_dims: set[Hashable] = set()
    for src in found_src.values():
        var_dims |= set(ds[src].dims)
    exclude = set(found_src.values()) | _bounds_names(ds)

    def need(kind: str, ndims: tuple[int, ...], allowed: set[Hashable]) -> Hashable:
        name = _find_coord(ds, kind, allowed, ndims, exclude)
        if name is None:
            raise DataFormatError(
                f"{where}: no {kind} coordinate found (CF standard_name/units/axis) on the dims "
                f"{sorted(map(str, allowed))} of {list(found_src.values())}; give it CF metadata "
                f"(e.g. standard_name={_CF_KIND[kind]!r}). The file has {_describe(ds)}"
            )
        return name

    lat = need("lat", (1, 2), var_dims)
    lon = need("lon", (1, 2), var_dims)
    for kind, name in (("latitude", lat), ("longitude", lon)):
        if ds[name].dtype.kind not in "iuf":
            raise DataFormatError(f"{where}: {kind} {name!r} holds {ds[name].dtype} values, not "
                                  "degrees; store it as numbers")
    lat_dims, lon_dims = ds[lat].dims, ds[lon].dims
    if ds[lat].ndim == 1 and ds[lon].ndim == 1:
        if lat_dims == lon_dims:
            raise DataFormatError(
                f"{where}: latitude {lat!r} and longitude {lon!r} share the dimension "
                f"{lat_dims[0]!r}: unstructured/station data is not supported; regrid it onto a "
                "latitude-longitude grid"
            )
        ydim, xdim = lat_dims[0], lon_dims[0]
        dims: dict[Hashable, str] = {ydim: "lat", xdim: "lon"}
        curvilinear = False
    elif ds[lat].ndim == 2 and set(lat_dims) == set(lon_dims):
        ydim, xdim = lat_dims
        dims = {ydim: "y", xdim: "x"}
        curvilinear = True
    else:
        raise DataFormatError(
            f"{where}: latitude {lat!r}{lat_dims} and longitude {lon!r}{lon_dims} do not form a "
            "grid; they must be 1-D on two dimensions or 2-D on the same two"
        )
    time = need("time", (1,), var_dims)
    tdim = ds[time].dims[0]
    dims[tdim] = "time"
    for canon, src in found_src.items():
        var = ds[src]
        if var.dtype.kind not in "iuf":
            raise DataFormatError(
                f"{where}: variable {src!r} (for {canon!r}) holds {var.dtype} values, not numbers; "
                "store it as float or packed int16 (scale_factor/add_offset), as CMEMS files do"
            )
        if tdim not in var.dims:
            raise DataFormatError(
                f"{where}: variable {src!r}{var.dims} (for {canon!r}) has no time dimension "
                f"{tdim!r}; every variable must be a time series on the time axis {time!r}"
            )

    depth = None
    zdims: set[Hashable] = set()
    for canon, src in found_src.items():
        vdims = ds[src].dims
        if ydim not in vdims or xdim not in vdims:
            raise DataFormatError(
                f"{where}: variable {src!r}{vdims} (for {canon!r}) is not on the horizontal grid "
                f"({ydim!r}, {xdim!r}); request variables on the grid only"
            )
        extra = [d for d in vdims if d not in (tdim, ydim, xdim)]
        if len(extra) > 1:
            raise DataFormatError(
                f"{where}: variable {src!r}{vdims} has more than one non-horizontal, non-time "
                f"dimension {extra}; select one level of the others first"
            )
        zdims.update(extra)
    if len(zdims) > 1:
        raise DataFormatError(
            f"{where}: the variables use different vertical dimensions {sorted(map(str, zdims))}; "
            "open them separately"
        )
    if zdims:
        zdim = next(iter(zdims))
        depth = need("depth", (1,), {zdim})
        dims[zdim] = "depth"
    return _Layout(found_src, time, lat, lon, depth, dims, curvilinear)


def _canonicalise(ds: xr.Dataset, layout: _Layout) -> xr.Dataset:
    """A lazy dataset with canonical variable/dim names, float32 data and clean coordinates."""
    out = ds[list(layout.variables.values())]
    out = out.drop_vars(list(out.coords))
    out = out.rename_vars({s: c for c, s in layout.variables.items() if s != c})
    out = out.rename_dims({s: c for s, c in layout.dims.items() if s != c})
    for name in layout.variables:
        out[name].attrs["source_name"] = str(layout.variables[name])
        if out[name].dtype != np.float32 and out[name].chunks is not None:  # lazy only with dask
            out[name] = out[name].astype(np.float32)

    hdims = ("y", "x") if layout.curvilinear else None
    coords: dict[str, Any] = {}
    sources = {"time": layout.time, "depth": layout.depth, "lat": layout.lat, "lon": layout.lon}
    for kind, src in sources.items():
        if src is None:
            continue
        var = ds[src].variable
        attrs = {k: v for k, v in var.attrs.items() if k not in ("bounds", "_CoordinateAxisType")}
        values = np.asarray(var.values)
        if kind in ("lat", "lon") and hdims is not None:
            cdims = tuple(layout.dims[d] for d in var.dims)
            coords[kind] = xr.Variable(cdims, values, attrs).transpose(*hdims)
        else:
            coords[kind] = xr.Variable((kind,), values, attrs)
    defaults = {
        "lat": {"standard_name": "latitude", "units": "degrees_north"},
        "lon": {"standard_name": "longitude", "units": "degrees_east"},
        "depth": {"standard_name": "depth", "units": "m", "positive": "down", "axis": "Z"},
        "time": {"standard_name": "time", "axis": "T"},
    }
    for kind, var in coords.items():
        var.attrs.update(defaults[kind])
        if not layout.curvilinear and kind in ("lat", "lon"):
            var.attrs["axis"] = "Y" if kind == "lat" else "X"
    out = out.assign_coords(coords)
    order = ["time", "depth", *(("y", "x") if layout.curvilinear else ("lat", "lon"))]
    return out.transpose(*order, missing_dims="ignore")


# --------------------------------------------------------------------------------------------------
# selection helpers


def _as_index(idx: np.ndarray) -> slice | np.ndarray:
    """A slice when the sorted integer indices are contiguous, else the indices."""
    if idx.size and np.all(np.diff(idx) == 1):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def _lon_mask(lon: np.ndarray, lon_min: float, lon_max: float) -> np.ndarray:
    """Longitudes within [lon_min, lon_max], any convention, across the antimeridian too."""
    if lon_max - lon_min >= 360.0:
        return np.isfinite(lon)
    width = (lon_max - lon_min) % 360.0
    return ((lon - lon_min) % 360.0) <= width


def _select_region(ds: xr.Dataset, region: Sequence[float], curvilinear: bool, where: str) -> xr.Dataset:
    try:
        lat_min, lat_max, lon_min, lon_max = (float(r) for r in region)
    except (TypeError, ValueError):
        raise UserError(f"region must be four numbers (lat_min, lat_max, lon_min, lon_max), "
                        f"got {region!r}") from None
    if lat_min > lat_max:
        raise UserError(f"region: lat_min {lat_min} > lat_max {lat_max}; give the southern edge first")
    lat = np.asarray(ds["lat"].values, dtype=np.float64)
    lon = np.asarray(ds["lon"].values, dtype=np.float64)
    if curvilinear:
        inside = (lat >= lat_min) & (lat <= lat_max) & _lon_mask(lon, lon_min, lon_max)
        rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
        if rows.size == 0:
            raise DataFormatError(f"{where}: region {tuple(region)} contains no grid point; "
                                  "choose a region inside the files' grid")
        return ds.isel(y=slice(rows[0], rows[-1] + 1), x=slice(cols[0], cols[-1] + 1))
    rows = np.flatnonzero((lat >= lat_min) & (lat <= lat_max))
    cols = np.flatnonzero(_lon_mask(lon, lon_min, lon_max))
    if rows.size == 0 or cols.size == 0:
        raise DataFormatError(
            f"{where}: region {tuple(region)} contains no grid point "
            f"(lat {lat.min():g}..{lat.max():g}, lon {lon.min():g}..{lon.max():g}); choose a region "
            "inside the files' grid"
        )
    shifted = lon_min + (lon[cols] - lon_min) % 360.0
    order = np.argsort(shifted, kind="stable")
    cols, shifted = cols[order], shifted[order]
    out = ds.isel(lat=_as_index(rows), lon=_as_index(cols))
    if not np.array_equal(shifted, lon[cols]):
        out = out.assign_coords(lon=("lon", shifted.astype(ds["lon"].dtype), ds["lon"].attrs))
    return out


def _select_depth(ds: xr.Dataset, depth: tuple[float, float] | Sequence[float], where: str) -> xr.Dataset:
    if "depth" not in ds.dims:
        return ds
    values = np.asarray(ds["depth"].values, dtype=np.float64)
    if isinstance(depth, tuple):
        if len(depth) != 2:
            raise UserError(f"depth range must be (min, max), got {depth!r}; pass a list for levels")
        try:
            lo, hi = float(depth[0]), float(depth[1])
        except (TypeError, ValueError):
            raise UserError(f"depth range must be two numbers (min, max) in m, got {depth!r}") from None
        idx = np.flatnonzero((values >= lo) & (values <= hi))
    else:
        try:
            wanted = np.atleast_1d(np.asarray(depth, dtype=np.float64))
        except (TypeError, ValueError):
            raise UserError(f"depth levels must be numbers (m), got {depth!r}") from None
        idx = np.unique(np.abs(values[None, :] - wanted[:, None]).argmin(axis=1))
    if idx.size == 0:
        raise DataFormatError(f"{where}: depth selection {depth!r} matches no level (levels "
                              f"{values.tolist()}); choose levels the files hold")
    return ds.isel(depth=_as_index(idx))


def _select_time(ds: xr.Dataset, time: tuple[Any, Any], where: str) -> xr.Dataset:
    if isinstance(time, str) or len(time) != 2:
        raise UserError(f"time must be (start, end), got {time!r}")
    if not ds.indexes["time"].is_monotonic_increasing:
        ds = ds.sortby("time")
    try:
        out = ds.sel(time=slice(time[0], time[1]))
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"time {time!r} is not a (start, end) pair of dates the files' calendar "
                        f"understands ({_first_line(exc)}); use ISO dates such as '2020-01-31'") from None
    if out.sizes["time"] == 0:
        raise DataFormatError(
            f"{where}: time range {time!r} matches no time step ({ds['time'].values[0]} .. "
            f"{ds['time'].values[-1]}); choose dates inside that period"
        )
    return out


_NETCDF_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n")


def _open(path: str, **kwargs: Any) -> xr.Dataset:
    """``xr.open_dataset``, a file it cannot read reported as a DataFormatError saying why: empty,
    not netCDF at all (its first bytes), or truncated / corrupted."""
    try:
        return xr.open_dataset(path, **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        try:
            with open(path, "rb") as fh:
                head = fh.read(8)
        except OSError:
            head = None
        if head == b"":
            why = "it is empty (0 bytes): an interrupted download or copy"
        elif head is not None and not head.startswith(_NETCDF_MAGIC):
            why = f"it is not a netCDF file: it starts with {head!r}, not a netCDF or HDF5 signature"
        else:
            why = f"{_first_line(exc)}; it may be truncated or corrupted"
        raise DataFormatError(f"{path} cannot be read as netCDF ({why}); remove it or replace it "
                              "with a valid netCDF file") from None


def _time_decoding(path: str) -> xr.coders.CFDatetimeCoder | dict[str, Any]:
    """CFDatetimeCoder for every '... since ...' variable that decodes; False for those that do not
    (e.g. HYCOM's ``tau``, "hours since analysis"), so one odd auxiliary variable cannot fail the open."""
    coder = xr.coders.CFDatetimeCoder(use_cftime=None)
    per_variable: dict[str, Any] = {}
    with _open(path, decode_times=False, decode_timedelta=False) as undecoded:
        for name, var in undecoded.variables.items():
            if " since " not in str(var.attrs.get("units", "")):
                continue
            try:
                coder.decode(var, name=name)
                per_variable[str(name)] = coder
            except (ValueError, TypeError, OverflowError):
                per_variable[str(name)] = False
    return per_variable if per_variable else coder


def _align_chunks(probe: xr.Dataset, layout: _Layout, requested: dict[Hashable, Any]) -> dict[Hashable, Any]:
    """Round requested chunk sizes to multiples of the stored (netCDF4) chunks, so none is split."""
    stored: dict[Hashable, int] = {}
    for src in layout.variables.values():
        enc = probe[src].encoding
        preferred = enc.get("preferred_chunks") or {}
        if not preferred and enc.get("chunksizes"):
            preferred = dict(zip(probe[src].dims, enc["chunksizes"], strict=True))
        for dim, size in preferred.items():
            stored[dim] = math.lcm(stored.get(dim, 1), int(size))
    out: dict[Hashable, Any] = {}
    for dim, size in requested.items():
        base = stored.get(dim)
        if base and isinstance(size, int) and size > 0 and size % base:
            size = max(base, round(size / base) * base)
        out[dim] = size
    return out


def _resolve_paths(paths: PathLike | Sequence[PathLike]) -> list[str]:
    """Expand a file, a directory (its *.nc, sorted), a glob or a list of those into file names."""
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    files: list[str] = []
    for item in items:
        text = os.fspath(item)
        if os.path.isdir(text):
            files.extend(sorted(_glob.glob(os.path.join(_glob.escape(text), "*.nc"))))
        elif not os.path.exists(text) and any(ch in text for ch in "*?["):
            files.extend(sorted(_glob.glob(text)))
        elif os.path.exists(text):
            files.append(text)
        else:
            raise DataFormatError(f"no such file or directory: {text}; check the data path")
    if not files:
        where = ", ".join(os.fspath(i) for i in items) or "(no path given)"
        raise DataFormatError(f"no netCDF files (*.nc) found in {where}; point the reader at a "
                              "directory of .nc files, a file or a glob")
    return files


# --------------------------------------------------------------------------------------------------
# public API


@dataclass
class OceanData:
    """An opened ocean dataset with canonical names (see the module docstring for dims).

    ``ds`` is lazy (dask-backed when opened with ``chunks``); ``source_names`` maps canonical variable
    names to the names in the files; ``paths`` are the files read.
    """

    ds: xr.Dataset
    source_names: dict[str, str] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)
    time_index: np.ndarray | None = None  # whole time steps from the first (``time_step`` given)

    @property
    def variables(self) -> tuple[str, ...]:
        """Canonical names of the variables held."""
        return tuple(str(v) for v in self.ds.data_vars)

    @property
    def curvilinear(self) -> bool:
        """True when latitude/longitude are 2-D (dims ``y, x``)."""
        return self.ds["lat"].ndim == 2

    @property
    def times(self) -> np.ndarray:
        """Decoded times: ``datetime64`` (standard calendars) or ``cftime`` objects (others)."""
        return self.ds["time"].values

    @property
    def horizontal_dims(self) -> tuple[str, str]:
        """``("lat", "lon")`` or, on curvilinear grids, ``("y", "x")``."""
        return ("y", "x") if self.curvilinear else ("lat", "lon")

    @cached_property
    def land_mask(self) -> xr.DataArray:
        """Boolean mask, True on land: (depth, lat, lon) from the first time step of a 3-D variable,
        (lat, lon) when only 2-D variables are held ((depth, y, x) / (y, x) on curvilinear grids)."""
        three_d = [v for v in self.variables if "depth" in self.ds[v].dims]
        var = self.ds[three_d[0] if three_d else self.variables[0]]
        if "time" in var.dims:
            var = var.isel(time=0, drop=True)
        return var.isnull().compute().rename("land_mask")

    def lat_weights(self, depth_index: int = 0) -> xr.DataArray:
        """cos(latitude) weights on the horizontal grid, normalised to mean 1 over the ocean points of
        depth level ``depth_index`` (land points keep their cos-proportional value)."""
        lat = self.ds["lat"]
        cos = np.cos(np.deg2rad(lat.astype(np.float64)))
        if lat.ndim == 1:
            cos, _ = xr.broadcast(cos, self.ds["lon"])
            cos = cos.transpose("lat", "lon")
        mask = self.land_mask
        if "depth" in mask.dims:
            mask = mask.isel(depth=depth_index, drop=True)
        ocean = ~mask.values
        if not ocean.any():
            raise DataFormatError(f"{_where(self.paths or ['the data'])}: no ocean point at depth "
                                  f"level {depth_index} to normalise the latitude weights over; "
                                  "choose another level or region")
        weights = cos / float(cos.values[ocean].mean())
        return weights.drop_vars([c for c in weights.coords if c not in ("lat", "lon")]).rename("lat_weights")

    def stats(self, variables: Sequence[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
        """NaN-aware mean and std (ddof=0) over time and space: ``{var: {"mean": m, "std": s}}``, arrays
        of shape (depth,) for 3-D variables and () for 2-D ones. Reduced lazily (one dask graph); only the
        reduced values are computed."""
        names = list(self.variables if variables is None else variables)
        lazy: dict[str, tuple[xr.DataArray, xr.DataArray]] = {}
        for name in names:
            if name not in self.ds:
                raise UserError(f"no variable {name!r} was opened; have {list(self.variables)}")
            var = self.ds[name].astype(np.float64)
            dims = [d for d in var.dims if d != "depth"]
            lazy[name] = (var.mean(dims, skipna=True), var.std(dims, skipna=True, ddof=0))
        (computed,) = dask.compute(lazy)
        return {
            name: {"mean": np.asarray(m.values), "std": np.asarray(s.values)}
            for name, (m, s) in computed.items()
        }

    def to_numpy(self, var: str, time: int | slice | None = None) -> np.ndarray:
        """``var`` (optionally one time index or a slice of them) as a float32 array, NaN on land."""
        da = self.ds[var]
        if time is not None:
            da = da.isel(time=time)
        return np.asarray(da.values, dtype=np.float32)

    def close(self) -> None:
        """Close the underlying files."""
        self.ds.close()

    def __enter__(self) -> OceanData:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_ocean(
    paths: PathLike | Sequence[PathLike],
    variables: Sequence[str] | None = CANONICAL_VARIABLES,
    region: tuple[float, float, float, float] | None = None,
    depth: tuple[float, float] | Sequence[float] | None = None,
    time: tuple[Any, Any] | None = None,
    chunks: Mapping[str, int] | None = DEFAULT_CHUNKS,
    time_step: str | None = None,
) -> OceanData:
    """Open GLORYS/HYCOM/NEMO-style netCDF lazily with canonical names.

    ``paths``: a file, a directory (all ``*.nc``, sorted), a glob, or a list of those; several files
    are combined by coordinates (in time order) with ``xr.open_mfdataset``. ``variables``: canonical
    names (``None``: every canonical variable present). ``region``: ``(lat_min, lat_max, lon_min,
    lon_max)``. ``depth``: a ``(min, max)`` tuple or a list of levels (nearest). ``time``: ``(start,
    end)``, inclusive, strings or datetimes. ``chunks``: dask chunks keyed by canonical dim names
    (``time, depth, lat, lon`` or ``y, x``; rounded to multiples of the stored netCDF chunks, other
    dims follow the stored chunks); ``None`` for no dask with a single file (several files are always
    dask-backed). ``time_step`` (e.g. ``"1D"``, :func:`parse_time_step`): the spacing the times must
    have (:func:`time_index`, the result's ``time_index``); ``None``: not checked.

    Raises :class:`~harness.errors.DataFormatError`, one line naming the file, for missing or
    unreadable files; a missing variable or coordinate (listing what the file holds); a variable that
    is not numeric or not on the time axis; times that do not decode to dates, are empty, repeat or go
    back; several files whose variables, grids or times do not match; times not spaced by
    ``time_step``. Raises :class:`~harness.errors.UserError` for a malformed ``region``, ``depth``,
    ``time`` or ``time_step``.
    """
    files = _resolve_paths(paths)
    decode = {"decode_times": _time_decoding(files[0]), "decode_timedelta": False, "mask_and_scale": True}
    where = _where(files)
    with _open(files[0], **decode) as probe:
        layout = _discover(probe, variables, files[0])
        reference = _Reference.of(probe, layout, files[0]) if len(files) > 1 else None
        file_chunks: dict[Hashable, Any] | None = None
        if chunks is not None:
            back = {c: s for s, c in layout.dims.items()}
            file_chunks = {back.get(k, k): v for k, v in chunks.items() if k in back or k in layout.dims}
            file_chunks = _align_chunks(probe, layout, file_chunks)
    keep = layout.keep

    def _keep(d: xr.Dataset) -> xr.Dataset:
        return d[[k for k in keep if k in d.variables and k not in d.coords]]

    if time_step is not None:
        parse_time_step(time_step)  # a malformed value fails before any file is read
    if len(files) == 1:
        opened = _open(files[0], chunks=file_chunks, **decode)
        raw = _keep(opened)
        raw.set_close(opened.close)
    else:
        assert reference is not None
        raw = _open_many(files, where, file_chunks, lambda d: _keep(reference.check(d)), decode,
                         reference)
    try:
        ds = _canonicalise(raw, layout)
        _check_times(ds["time"], raw[layout.time].attrs, where)
        if time is not None:
            ds = _select_time(ds, time, where)
        if depth is not None:
            ds = _select_depth(ds, depth, where)
        if region is not None:
            ds = _select_region(ds, region, layout.curvilinear, where)
    except Exception:
        raw.close()
        raise
    ds.attrs = dict(raw.attrs)
    ds.set_close(raw.close)
    out = OceanData(ds, {k: str(v) for k, v in layout.variables.items()}, files)
    if time_step is not None:
        try:
            out.time_index = time_index(ds["time"].values, time_step, where)
        except Exception:
            raw.close()
            raise
    return out


# --------------------------------------------------------------------------------------------------
# times: order, spacing


def _when(t: Any) -> str:
    return str(t)[:19].replace("T", " ").removesuffix(" 00:00:00")


def _span(seconds: float) -> str:
    """A duration in words: ``1 day``, ``30.4 days``, ``6 hours``."""
    for unit, size in (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0)):
        if abs(seconds) >= size:
            n = seconds / size
            text = f"{n:.0f}" if abs(n - round(n)) < 0.05 else f"{n:.1f}"
            return f"{text} {unit}{'' if text == '1' else 's'}"
    return f"{seconds:g} seconds"


def _gaps(times: np.ndarray) -> np.ndarray:
    """Seconds from each time to the next (datetime64 or cftime)."""
    if len(times) < 2:
        return np.zeros(0)
    if np.issubdtype(times.dtype, np.datetime64):
        return np.diff(times.astype("datetime64[ms]")).astype(np.int64) / 1000.0
    return np.array([(b - a).total_seconds() for a, b in zip(times[:-1], times[1:], strict=True)])


def _check_order(times: np.ndarray, where: str) -> None:
    """Times must increase strictly; a repeat or a step back is a DataFormatError naming it."""
    gaps = _gaps(times)
    bad = np.flatnonzero(gaps <= 0)
    if bad.size:
        i = int(bad[0])
        repeats, back = int((gaps == 0).sum()), int((gaps < 0).sum())
        what = f"{_when(times[i])} appears twice" if gaps[i] == 0 else \
            f"{_when(times[i + 1])} follows {_when(times[i])}"
        raise DataFormatError(
            f"{where}: times must increase strictly, but {what} (time steps {i} and {i + 1}; "
            f"{repeats} repeated and {back} backward steps in all); remove the duplicated days "
            "and sort the file by time"
        )


def _check_times(time: xr.DataArray, attrs: Mapping[Hashable, Any], where: str) -> None:
    """Decoded, non-empty, strictly increasing times, or a DataFormatError."""
    values = time.values
    if values.size and not (np.issubdtype(values.dtype, np.datetime64)
                            or isinstance(values.flat[0], cftime.datetime)):
        raise DataFormatError(
            f"{where}: the time coordinate holds {values.dtype} values that do not decode to dates "
            f"(units {attrs.get('units')!r}, calendar {attrs.get('calendar')!r}); give it CF units "
            "such as 'days since 1950-01-01'"
        )
    if values.size == 0:
        raise DataFormatError(f"{where}: the time dimension is empty (no time step); the file holds "
                              "no data")
    _check_order(values, where)


_STEP_UNITS = {"d": 86400, "day": 86400, "days": 86400, "h": 3600, "hour": 3600, "hours": 3600}
_STEP_NAMES = {"daily": "1D", "hourly": "1h"}
_STEP_TOLERANCE = 0.01  # of a step


def parse_time_step(step: str) -> float:
    """Seconds of a time step written ``<n>D`` or ``<n>h`` (``1D``, ``5D``, ``6h``; also
    ``daily``, ``hourly``); a UserError otherwise."""
    text = _STEP_NAMES.get(str(step).strip().lower(), str(step).strip())
    m = re.fullmatch(r"(\d+)\s*([A-Za-z]+)", text)
    if not isinstance(step, str) or m is None or m.group(2).lower() not in _STEP_UNITS \
            or int(m.group(1)) < 1:
        raise UserError(f"time_step must be a number of days or hours such as '1D' (daily), '5D' "
                        f"or '6h', got {step!r}")
    return float(int(m.group(1)) * _STEP_UNITS[m.group(2).lower()])


def time_index(times: np.ndarray, step: str, where: str = "the data") -> np.ndarray:
    """Whole ``step`` s from the first time to each time (int64): ``0, 1, 2, 4`` for a set missing
    its fourth step. Missing steps are allowed (a caller must not let a window straddle one);
    times that repeat or go back, spacing that is not a whole number of steps (within 1%), and a
    typical (median) spacing other than ``step`` (monthly or yearly files read as daily) are a
    DataFormatError naming both spacings."""
    seconds = parse_time_step(step)
    _check_order(times, where)
    gaps = _gaps(times)
    if gaps.size == 0:
        return np.zeros(len(times), np.int64)
    typical = float(np.median(gaps))
    if abs(typical / seconds - 1.0) > _STEP_TOLERANCE:
        i = int(np.argmin(np.abs(gaps - typical)))
        raise DataFormatError(
            f"{where}: the time step is {_span(typical)} (e.g. {_when(times[i])} to "
            f"{_when(times[i + 1])}) but the dataset expects {step} ({_span(seconds)}, time_step); "
            f"give files with a step of {_span(seconds)} or set time_step to the files' step"
        )
    steps = gaps / seconds
    whole = np.rint(steps)
    bad = np.flatnonzero((np.abs(steps - whole) > _STEP_TOLERANCE) | (whole < 1))
    if bad.size:
        i = int(bad[0])
        raise DataFormatError(
            f"{where}: irregular time steps: {_when(times[i])} to {_when(times[i + 1])} is "
            f"{_span(float(gaps[i]))}, not a whole number of {step} steps ({bad.size} such "
            f"spacings); give files with a regular step of {_span(seconds)}"
        )
    return np.r_[0, np.cumsum(whole.astype(np.int64))]


@dataclass
class _Reference:
    """What every file of a set must share with the first: variables (dims) and the grid."""

    path: str
    layout: _Layout
    dims: dict[Hashable, tuple[Hashable, ...]]
    grid: dict[str, np.ndarray]
    spans: list[tuple[Any, Any, str]] = field(default_factory=list)  # (first, last, file) seen

    @classmethod
    def of(cls, probe: xr.Dataset, layout: _Layout, path: str) -> _Reference:
        dims = {src: probe[src].dims for src in layout.variables.values()}
        grid = {kind: np.asarray(probe[name].values) for kind, name in
                (("latitude", layout.lat), ("longitude", layout.lon), ("depth", layout.depth))
                if name is not None}
        return cls(path, layout, dims, grid)

    def check(self, d: xr.Dataset) -> xr.Dataset:
        """``d`` (one file, as opened) if it matches the first file; a DataFormatError if not."""
        path = str(d.encoding.get("source", "a file"))
        lay = self.layout
        missing = [str(s) for s in lay.variables.values() if s not in d.variables]
        if missing:
            raise DataFormatError(
                f"{path}: variable(s) {missing} missing, which {self.path} holds; every file must "
                f"hold the same variables (or request only those all files hold: var3/var2). The "
                f"file has {_describe(d)}"
            )
        for src, dims in self.dims.items():
            if d[src].dims != dims:
                raise DataFormatError(f"{path}: variable {src!r} has dims {d[src].dims}, but "
                                      f"{dims} in {self.path}; every file must have the same layout")
        for kind, name in (("latitude", lay.lat), ("longitude", lay.lon), ("depth", lay.depth)):
            if name is None:
                continue
            if name not in d.variables:
                raise DataFormatError(f"{path}: no {kind} coordinate {name!r}, which {self.path} "
                                      "has; every file must be on the same grid")
            mine, ref = np.asarray(d[name].values), self.grid[kind]
            same = mine.shape == ref.shape and mine.dtype.kind in "iuf" and np.allclose(
                mine, ref, rtol=0, atol=1e-5, equal_nan=True)
            if not same:
                raise DataFormatError(
                    f"{path}: its {kind} ({mine.size} values, {_range(mine)}) differs from that of "
                    f"{self.path} ({ref.size} values, {_range(ref)}); every file must be on the same "
                    "grid: regrid it or leave it out"
                )
        if lay.time not in d.variables:
            raise DataFormatError(f"{path}: no time coordinate {lay.time!r}, which {self.path} has")
        _check_times(d[lay.time], d[lay.time].attrs, path)
        times = d[lay.time].values
        self.spans.append((times[0], times[-1], path))
        return d

    def overlap(self) -> str | None:
        """Two files whose time ranges overlap, in words (None if none do)."""
        spans = sorted(self.spans, key=lambda s: s[0])
        for (a0, a1, a), (b0, b1, b) in zip(spans[:-1], spans[1:], strict=True):
            if b0 <= a1:
                return (f"{a} ({_when(a0)} .. {_when(a1)}) and {b} ({_when(b0)} .. {_when(b1)}) "
                        "overlap in time: remove the repeated days from one of them")
        return None


def _range(values: np.ndarray) -> str:
    if values.size == 0 or values.dtype.kind not in "iuf":
        return f"{values.dtype}"
    return f"{float(np.nanmin(values)):g}..{float(np.nanmax(values)):g}"


def _open_many(files: list[str], where: str, chunks: dict[Hashable, Any] | None,
               keep: Any, decode: dict[str, Any], reference: _Reference | None = None) -> xr.Dataset:
    """Several files combined by coordinates; files that do not combine are a DataFormatError
    (``keep`` checks each file against ``reference``, the first, and names the one that differs)."""
    try:
        return xr.open_mfdataset(
            files,
            chunks=chunks if chunks is not None else {},
            combine="by_coords",
            preprocess=keep,
            data_vars="minimal",
            coords="minimal",
            compat="override",
            join="exact",
            combine_attrs="override",
            **decode,
        )
    except (OSError, ValueError, KeyError) as exc:
        clash = reference.overlap() if reference is not None else None
        if clash is not None:
            raise DataFormatError(clash) from None
        raise DataFormatError(
            f"{where} do not combine into one dataset ({_first_line(exc)}); every file must hold "
            "the same variables on the same grid, with distinct times"
        ) from None


# --------------------------------------------------------------------------------------------------
# writer


def _pack_params(data: np.ndarray) -> tuple[np.float32, np.float32]:
    """(scale_factor, add_offset) as float32 mapping the finite range onto [-32766, 32766]."""
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.float32(1.0), np.float32(0.0)
    lo, hi = float(finite.min()), float(finite.max())
    offset = np.float32((lo + hi) / 2.0)
    span = max(hi - float(offset), float(offset) - lo)
    scale = np.float32(span / (_PACK_HALF_RANGE - 1)) if span > 0 else np.float32(1.0)
    if not (np.isfinite(scale) and scale > 0):
        scale = np.float32(1.0)
    return scale, offset


def _encode_time(time: Any, units: str, calendar: str) -> np.ndarray:
    values = np.asarray(time)
    if values.ndim == 0:
        values = values.reshape(1)
    if np.issubdtype(values.dtype, np.number):
        return values.astype(np.float64)
    if np.issubdtype(values.dtype, np.datetime64):
        values = values.astype("datetime64[us]").astype(object)
    return np.asarray(cftime.date2num(list(values), units, calendar=calendar), dtype=np.float64)


def write_glorys(
    path: PathLike,
    thetao: ArrayLike | None = None,
    so: ArrayLike | None = None,
    uo: ArrayLike | None = None,
    vo: ArrayLike | None = None,
    zos: ArrayLike | None = None,
    time: Any = None,
    depth: ArrayLike | None = None,
    lat: ArrayLike | None = None,
    lon: ArrayLike | None = None,
    *,
    pack_int16: bool = False,
    calendar: str = "standard",
    units: str = "hours since 1950-01-01",
) -> Path:
    """Write a CF-1.6 GLORYS12-layout netCDF4 file; returns its path.

    3-D fields are (time, depth, latitude, longitude), ``zos`` is (time, latitude, longitude); any of
    them may be None to omit it; NaN marks land/missing. ``time``: numbers in ``units``, datetime64,
    or datetime/cftime objects (encoded with ``calendar``). ``pack_int16`` stores int16 with float32
    ``scale_factor``/``add_offset`` from each variable's range (error <= scale_factor/2) and
    ``_FillValue`` -32767; otherwise float32 with ``_FillValue`` 1e20. zlib-compressed.
    """
    import netCDF4

    if time is None or lat is None or lon is None:
        raise ValueError("write_glorys needs time, lat and lon")
    fields = {"thetao": thetao, "so": so, "uo": uo, "vo": vo, "zos": zos}
    fields = {k: np.asarray(v, dtype=np.float64) for k, v in fields.items() if v is not None}
    if not fields:
        raise ValueError("write_glorys needs at least one variable")
    tnum = _encode_time(time, units, calendar)
    lat_a, lon_a = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    if lat_a.ndim != 1 or lon_a.ndim != 1:
        raise ValueError("write_glorys writes 1-D latitude/longitude")
    has_3d = any(k != "zos" for k in fields)
    if has_3d and depth is None:
        raise ValueError("3-D variables need depth")
    depth_a = np.asarray(depth, dtype=np.float64) if has_3d else None
    nt, ny, nx = tnum.size, lat_a.size, lon_a.size
    for name, data in fields.items():
        want = (nt, ny, nx) if name == "zos" else (nt, depth_a.size, ny, nx)
        if data.shape != want:
            raise ValueError(f"{name} has shape {data.shape}, expected {want} from time/depth/lat/lon")

    path = Path(path)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.Conventions = "CF-1.6"
        nc.title = "GLORYS12V1-layout ocean fields"
        nc.source = "harness.datasets.ocean_reader.write_glorys"
        nc.createDimension("time", None)
        if depth_a is not None:
            nc.createDimension("depth", depth_a.size)
        nc.createDimension("latitude", ny)
        nc.createDimension("longitude", nx)

        def coord(name: str, dims: tuple[str, ...], values: np.ndarray, dtype: str, **attrs: str) -> None:
            var = nc.createVariable(name, dtype, dims)
            var.setncatts(attrs)
            var[:] = values

        coord(
            "time",
            ("time",),
            tnum,
            "f8",
            standard_name="time",
            long_name="Time",
            units=units,
            calendar=calendar,
            axis="T",
        )
        if depth_a is not None:
            coord(
                "depth",
                ("depth",),
                depth_a,
                "f4",
                standard_name="depth",
                long_name="Depth",
                units="m",
                positive="down",
                axis="Z",
            )
        coord(
            "latitude",
            ("latitude",),
            lat_a,
            "f4",
            standard_name="latitude",
            long_name="Latitude",
            units="degrees_north",
            axis="Y",
        )
        coord(
            "longitude",
            ("longitude",),
            lon_a,
            "f4",
            standard_name="longitude",
            long_name="Longitude",
            units="degrees_east",
            axis="X",
        )

        for name, data in fields.items():
            dims = (
                ("time", "latitude", "longitude")
                if name == "zos"
                else ("time", "depth", "latitude", "longitude")
            )
            chunks = (1, *data.shape[1:])
            standard_name, var_units, long_name = _CF_ATTRS[name]
            if pack_int16:
                var = nc.createVariable(
                    name,
                    "i2",
                    dims,
                    fill_value=_INT16_FILL,
                    compression="zlib",
                    complevel=4,
                    shuffle=True,
                    chunksizes=chunks,
                )
                scale, offset = _pack_params(data)
                var.set_auto_maskandscale(False)
                with np.errstate(invalid="ignore"):
                    packed = np.rint((data - float(offset)) / float(scale))
                packed = np.where(
                    np.isfinite(data), np.clip(packed, -_PACK_HALF_RANGE, _PACK_HALF_RANGE), _INT16_FILL
                )
                var.setncatts({"scale_factor": scale, "add_offset": offset})
                var.setncatts({"standard_name": standard_name, "long_name": long_name, "units": var_units})
                var[:] = packed.astype(np.int16)
            else:
                var = nc.createVariable(
                    name,
                    "f4",
                    dims,
                    fill_value=_FLOAT_FILL,
                    compression="zlib",
                    complevel=4,
                    shuffle=True,
                    chunksizes=chunks,
                )
                var.set_auto_maskandscale(False)
                var.setncatts({"standard_name": standard_name, "long_name": long_name, "units": var_units})
                var[:] = np.where(np.isfinite(data), data, _FLOAT_FILL).astype(np.float32)
    return path
