"""Reading GeoTIFF samples: bands, validity, scaling and acquisition metadata.

:func:`read_geotiff` turns one GeoTIFF (an image), a list of GeoTIFFs (one per date,
stacked to ``(C, T, H, W)``) or one band-stacked file holding several dates into a
:class:`GeoSample`: a float32 array, a mask of valid pixels and the metadata the
encoders read (``d2geo.encoders.metadata``).

Conventions, decided once here:

* **Band names** come from ``band_names=``, else the band descriptions stored in the
  file (when every band has its own), else, with ``sensor=`` (or a ``SENSOR`` tag), the
  sensor's band ids when the file holds all of them in the sensor's order (B01..B12 for a
  12-band Sentinel-2 L2A file), else ``band1``, ``band2``, ... ``bands=`` selects and orders
  bands by name through the band vocabulary of ``d2geo.encoders.bands`` (``nir_narrow``,
  ``nir08`` and ``B8A`` are one band). Dates stored as separate files are stacked by band
  name whenever the files name their bands; dates that disagree are an error. An alpha
  band is the validity of the others, not data.
* **Validity**: a pixel is invalid when any selected band, in any frame, equals the
  band's nodata value, is NaN/inf, or is masked by GDAL (an internal per-dataset mask,
  as JPEG-compressed COGs carry, or an alpha band). Invalid pixels are then filled
  (``fill="zero"``, ``"mean"`` = per-band mean of the valid pixels, a number, or ``None``
  to keep NaN). Labels: the same pixels get the ignore label, and a label must be on its
  image's grid (CRS, transform, shape).
* **Scaling**: ``value * scale + offset`` as float32. ``scale=None`` uses the per-band
  scale/offset stored in the file (GDAL ``scales``/``offsets``), else the
  ``scale_factor``/``add_offset`` tags, else 1/0.
* **Time**: from the first acquisition tag of :data:`TIME_TAGS` present (ISO 8601 or
  TIFF's ``YYYY:MM:DD HH:MM:SS``; naive times are taken as UTC), else from the file name:
  ``YYYY-MM-DD``, ``YYYYMMDD[THHMMSS]`` or HLS-style ``YYYYDOY[THHMMSS]`` (e.g.
  ``HLS.S30.T10SEG.2020245T185919.v2.0.tif`` or ``T10SEH.2018190.v1.4``), else from the TIFF
  ``DateTime`` tag with a warning (by the TIFF spec it is when the file was made). A TIFF
  ``DateTime`` on the file name's date gives that date its time of day. Which source was
  used is logged. A band-stacked multi-date file gives one time per date in the tag
  ``TIMESTAMPS`` (comma-separated). No time found: ``timestamps`` is left out of the
  metadata (the encoders then fall back to 'unknown').
* **Location**: ``latlon`` is the tile centre reprojected from the file's CRS to
  EPSG:4326. ``gsd`` is the ground sample distance in metres at the tile centre
  (:func:`pixel_gsd`: geodesic on the CRS's ellipsoid, so degrees, US feet and Web
  Mercator's stretched metres all come out as ground metres). A file **without a CRS**,
  or with a CRS but no geotransform, is read, but ``latlon`` and ``gsd`` are left out of
  the metadata with a warning; pass ``require_crs=True`` to make that an error.
* **Wavelengths** come from ``d2geo.encoders.band_wavelengths(sensor, band names)``
  when ``sensor=`` is given (or the file has a ``SENSOR`` tag).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import logging
import math
import os
import warnings
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, Union

import numpy as np

from d2geo.encoders.bands import SENSORS, BandError, describe_bands, expand_bands, match_bands, sensor_file_bands
from d2geo.encoders.bands import wavelengths as _wavelengths

logger = logging.getLogger(__name__)

__all__ = [
    "read_modalities",
    "GeoSample", "GeoTiffError", "read_geotiff", "read_label", "parse_time", "time_from_filename",
    "tile_latlon", "pixel_gsd", "band_names_of", "resolve_band_indices", "sensor_wavelengths",
    "TIME_TAGS", "IGNORE_LABEL", "check_band_request", "check_same_grid", "check_modality_grid", "apply_affine", "translate_affine",
]

#: acquisition-time tags searched, in order, before the file name
TIME_TAGS = ("ACQUISITION_DATETIME", "ACQUISITION_DATE", "ACQUISITION_TIME", "SENSING_TIME",
             "SENSING_DATE", "DATETIME", "TIMESTAMP")
#: the TIFF ``DateTime`` tag: the file's creation time by the TIFF spec, often processing time
TIFF_DATETIME_TAG = "TIFFTAG_DATETIME"
#: the label segmentation targets use for pixels that must not be learned from
IGNORE_LABEL = 255
#: a projected CRS whose scale at the tile centre is within this of 1 reports its nominal
#: pixel size (UTM's 0.9996..1.001); farther off (Web Mercator away from the equator,
#: other non-equidistant projections), the geodesic ground distance
GSD_SCALE_TOLERANCE = 0.005

PathLike = Union[str, os.PathLike]


class GeoTiffError(ValueError):
    """A GeoTIFF or the options given to read it do not fit together."""


def _rasterio():
    try:
        import rasterio
    except ImportError as e:  # pragma: no cover - rasterio is installed in tests
        raise ImportError("reading GeoTIFFs needs rasterio: pip install 'd2geo[geo]'") from e
    return rasterio


@contextlib.contextmanager
def _open_raster(path: str):
    """``rasterio.open(path)``; GDAL's errors on opening or reading become a GeoTiffError."""
    rasterio = _rasterio()
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    try:
        with warnings.catch_warnings():
            # the reader says itself, in its own words, what a file without georeferencing
            # loses (location and GSD) and what to do: rasterio's generic warning adds nothing
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(path)
        with src:
            yield src
    except (RasterioError, CPLE_BaseError) as e:
        raise GeoTiffError(
            f"{path} could not be read as a GeoTIFF ({e}); it is probably truncated or corrupt: "
            "copy, download or export it again (gdalinfo -checksum shows where it breaks)"
        ) from e


@dataclass
class GeoSample:
    """One sample read from GeoTIFF(s).

    ``image`` is float32 ``(C, H, W)`` or ``(C, T, H, W)``; ``valid`` is bool ``(H, W)``
    (valid in every selected band and frame); ``metadata`` follows the encoder schema
    for one sample: ``timestamps`` ``(T,)`` float64, ``latlon`` ``(2,)``, ``gsd`` float,
    ``wavelengths`` ``(C,)``, each key present only when known.
    """

    image: np.ndarray
    valid: np.ndarray
    band_names: tuple
    metadata: dict = field(default_factory=dict)
    crs: Any = None
    transform: Any = None
    paths: tuple = ()

    @property
    def num_frames(self) -> int | None:
        return self.image.shape[1] if self.image.ndim == 4 else None


# ------------------------------------------------------------------------------ time
_ISO_DATE = re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?:[T_ ](\d{2}):?(\d{2}):?(\d{2}))?(?!\d)")
_YMD = re.compile(r"(?<!\d)((?:19|20)\d{2})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2}))?(?!\d)")
_YDOY = re.compile(r"(?<!\d)((?:19|20)\d{2})(\d{3})(?:T(\d{2})(\d{2})(\d{2}))?(?!\d)")


def _epoch(dt: _dt.datetime) -> float:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_dt.timezone.utc)
    return dt.timestamp()


def parse_time(text: str) -> float:
    """Seconds since the Unix epoch (UTC) of an ISO 8601 or TIFF-style date/time string."""
    s = str(text).strip()
    m = re.fullmatch(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})", s)  # TIFF DateTime
    if m:
        return _epoch(_dt.datetime(*map(int, m.groups())))
    iso = s.replace("Z", "+00:00")
    iso = re.sub(r"(\.\d{6})\d+", r"\1", iso)  # Python < 3.11 takes at most microseconds
    try:
        return _epoch(_dt.datetime.fromisoformat(iso))
    except ValueError:
        pass
    t = time_from_filename(s)
    if t is None:
        raise GeoTiffError(f"cannot parse the date/time {text!r}: use ISO 8601 (2020-09-01T18:59:19Z)")
    return t


def time_from_filename(name: str) -> float | None:
    """Acquisition time encoded in a file name, or None (see the module docstring)."""
    base = os.path.basename(str(name))
    m = _ISO_DATE.search(base)
    if m:
        y, mo, d = (int(g) for g in m.groups()[:3])
        hms = [int(g) for g in m.groups()[3:] if g is not None] or [0, 0, 0]
        try:
            return _epoch(_dt.datetime(y, mo, d, *hms))
        except ValueError:
            pass
    for m in _YMD.finditer(base):
        y, mo, d = (int(g) for g in m.groups()[:3])
        hms = [int(g) for g in m.groups()[3:] if g is not None] or [0, 0, 0]
        try:
            return _epoch(_dt.datetime(y, mo, d, *hms))
        except ValueError:
            continue
    for m in _YDOY.finditer(base):
        y, doy = int(m.group(1)), int(m.group(2))
        if not 1 <= doy <= (366 if y % 4 == 0 and (y % 100 != 0 or y % 400 == 0) else 365):
            continue
        hms = [int(g) for g in m.groups()[2:] if g is not None] or [0, 0, 0]
        start = _dt.datetime(y, 1, 1, *hms)
        return _epoch(start + _dt.timedelta(days=doy - 1))
    return None


_TIME_SOURCES_LOGGED: set = set()


def _log_time_source(source: str, path: str, level=logging.INFO, extra: str = "") -> None:
    if source not in _TIME_SOURCES_LOGGED:  # once per kind of source, not per sample
        _TIME_SOURCES_LOGGED.add(source)
        logger.log(level, "acquisition time from %s (e.g. %s)%s", source, path, extra)
    logger.debug("%s: acquisition time from %s", path, source)


def _time_of(src, path: str, time_tag: str | None, from_name: bool = True) -> float | None:
    """Acquisition time: acquisition tags, then the file name, then (warned) TIFF DateTime."""
    tags = {k.upper(): v for k, v in src.tags().items()}
    if time_tag:
        key = time_tag.upper()
        if key not in tags or not str(tags[key]).strip():
            raise GeoTiffError(f"{path} has no tag {time_tag!r}; its tags are {sorted(tags)}")
        _log_time_source(f"tag {key}", path)
        return parse_time(tags[key])
    for key in TIME_TAGS:
        if key in tags and str(tags[key]).strip():
            _log_time_source(f"tag {key}", path)
            return parse_time(tags[key])
    tiff = tags.get(TIFF_DATETIME_TAG)
    tiff_t = parse_time(tiff) if tiff is not None and str(tiff).strip() else None
    named = time_from_filename(path) if from_name else None
    if named is not None:
        day = 86_400
        if tiff_t is not None and named % day == 0 and named <= tiff_t < named + day:
            _log_time_source("the file name's date and the TIFF DateTime's time of day", path)
            return tiff_t
        if tiff_t is not None:
            logger.debug("%s: TIFF DateTime %s differs from the file name's date; using the file name",
                         path, tiff)
        _log_time_source("the file name", path)
        return named
    if tiff_t is not None:
        _log_time_source(
            "the TIFF DateTime tag", path, logging.WARNING,
            ": by the TIFF spec this is when the file was made, often the processing time, not the "
            "acquisition; write the acquisition time into an ACQUISITION_DATETIME tag, put the date in "
            "the file name, or pass timestamps=")
        return tiff_t
    return None


# -------------------------------------------------------------------------- location
def apply_affine(transform, x, y):
    """``transform`` applied to points (arrays or scalars), without Affine's operator overloads."""
    a, b, c, d, e, f = tuple(transform)[:6]
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return a * x + b * y + c, d * x + e * y + f


def translate_affine(transform, col: float, row: float):
    """The transform of a window whose top-left pixel is (col, row) of ``transform``'s grid."""
    from rasterio.transform import Affine

    a, b, c, d, e, f = tuple(transform)[:6]
    return Affine(a, b, c + a * col + b * row, d, e, f + d * col + e * row)


def tile_latlon(crs, transform, height: int, width: int) -> np.ndarray:
    """(lat, lon) in degrees of the centre of a ``height x width`` tile."""
    from rasterio.warp import transform as warp

    x, y = apply_affine(transform, width / 2.0, height / 2.0)
    lon, lat = warp(crs, "EPSG:4326", [float(x)], [float(y)])
    return np.array([lat[0], lon[0]], dtype=np.float64)


@functools.lru_cache(maxsize=64)
def _geodesy(wkt: str):
    """pyproj CRS, its ellipsoid's Geod and a transformer to its geographic CRS (cached)."""
    from pyproj import CRS, Transformer

    pcrs = CRS.from_user_input(wkt)
    geod, geodetic = pcrs.get_geod(), pcrs.geodetic_crs
    if geod is None or geodetic is None:
        raise GeoTiffError(f"the CRS {pcrs.name!r} has no ellipsoid, so its units cannot be turned into "
                           "ground metres: write an EPSG CRS into the file")
    return pcrs, geod, Transformer.from_crs(pcrs, geodetic, always_xy=True)


def pixel_gsd(crs, transform, height: int = 1, width: int = 1) -> float:
    """Ground sample distance in metres at the centre of a ``height x width`` tile.

    The square root of the ground area of one pixel: the pixel's two edges are measured
    as geodesics on the CRS's ellipsoid (pyproj), so degrees, feet and projections that
    stretch distance (Web Mercator: 10 projected metres are 5 m at 60 degrees latitude)
    all give ground metres. A projected CRS whose scale there is within
    :data:`GSD_SCALE_TOLERANCE` of 1 (UTM) gives its nominal pixel size.
    """
    pcrs, geod, to_geo = _geodesy(crs.to_wkt())
    cx, cy = width / 2.0, height / 2.0
    x, y = apply_affine(transform, [cx, cx + 1, cx], [cy, cy, cy + 1])
    lon, lat = to_geo.transform(x, y)
    if not np.all(np.isfinite(lon)) or not np.all(np.isfinite(lat)):
        raise GeoTiffError(f"the tile centre of this file is outside its CRS's area ({pcrs.name})")
    az_x, _, dx = geod.inv(lon[0], lat[0], lon[1], lat[1])
    az_y, _, dy = geod.inv(lon[0], lat[0], lon[2], lat[2])
    ground = math.sqrt(abs(dx * dy * math.sin(math.radians(az_x - az_y))))
    if pcrs.is_projected:
        a, b, _, d, e, _ = tuple(transform)[:6]
        nominal = math.sqrt(abs(a * e - b * d)) * crs.linear_units_factor[1]
        if nominal > 0 and abs(ground / nominal - 1) <= GSD_SCALE_TOLERANCE:
            return float(nominal)
    return float(ground)


# ----------------------------------------------------------------------------- bands
def _band_names(src, band_names: Sequence[str] | None, count: int, sensor: str | None,
                data_bands: Sequence[int] | None = None) -> tuple[tuple, str]:
    """``(names, source)`` of the (data) bands; source is "band_names", "descriptions",
    "sensor" or "position" (``band1``, ``band2``, ...: the file does not name them)."""
    if band_names is not None:
        band_names = tuple(band_names)
        if len(band_names) != count:
            raise GeoTiffError(f"{src.name} has {count} bands per frame but {len(band_names)} band names "
                               f"were given: {band_names}")
        return band_names, "band_names"
    idx = list(data_bands) if data_bands is not None else list(range(count))
    desc = tuple(src.descriptions[i] for i in idx)
    # descriptions name the bands only if every band has its own (xarray writes 'bands' to all)
    if all(desc) and len({str(d).lower() for d in desc}) == len(desc):
        return tuple(str(d) for d in desc), "descriptions"
    if sensor:
        ids = sensor_file_bands(sensor, count)
        if ids is not None:
            return ids, "sensor"
    return tuple(f"band{i + 1}" for i in range(count)), "position"


def band_names_of(src, band_names: Sequence[str] | None = None, *, bands_per_frame: int | None = None,
                  sensor: str | None = None) -> tuple:
    """The names of the bands of an open dataset: ``band_names``, else the band descriptions
    when every band has its own, else the ``sensor``'s band ids when the file holds all of
    that sensor's bands (12 for Sentinel-2 L2A, 13 for L1C), else ``band1``, ``band2``, ..."""
    return _band_names(src, band_names, bands_per_frame or src.count, sensor)[0]


def resolve_band_indices(available: Sequence[str], wanted: Sequence[str] | None,
                         sensor: str | None = None, *, where: str = "the file") -> list[int]:
    """Indices of ``wanted`` band names in ``available`` (all of them if ``wanted`` is None).

    Names match through the band vocabulary (``d2geo.encoders.bands``): equal names, then
    ids, common names and aliases of one physical band (``B8A`` = ``nir08`` =
    ``nir_narrow``), read in ``sensor``'s vocabulary when it is given.
    """
    if wanted is None:
        return list(range(len(available)))
    try:
        wanted = expand_bands(wanted)  # "rgb" stands for red, green, blue
        idx = match_bands(wanted, available, sensor=sensor, available_sensor=sensor, where=where)
    except (BandError, KeyError) as e:
        raise GeoTiffError(str(e.args[0] if isinstance(e, KeyError) else e)) from None
    missing = [w for w, i in zip(wanted, idx) if i is None]
    if missing:
        generic = all(re.fullmatch(r"band\d+", a) for a in available)
        hint = ("the file does not name its bands: pass band_names=[...] or sensor= (e.g. "
                "'sentinel-2-l2a' for a 12-band L2A file)" if generic else
                "name the bands with band_names= if the file's descriptions are not their names")
        raise GeoTiffError(f"band {missing[0]!r} is not in {where}; its bands are {list(available)}"
                           + ("" if generic else f" (also known as: {describe_bands(available, sensor)})")
                           + f"; {hint}")
    return idx


def sensor_wavelengths(sensor: str, names: Sequence[str]) -> np.ndarray:
    """Centre wavelengths (micrometres) of ``names`` of ``sensor`` (see ``d2geo.encoders.bands``)."""
    return np.asarray(_wavelengths(sensor, names), dtype=np.float32)


# ---------------------------------------------------------------------------- reading
def _scale_offset(src, idx: Sequence[int], scale, offset):
    if scale is not None:
        s = np.broadcast_to(np.asarray(scale, dtype=np.float64), (len(idx),)).copy() \
            if np.ndim(scale) == 0 else np.asarray(scale, dtype=np.float64)
        o = np.zeros(len(idx)) if offset is None else np.broadcast_to(
            np.asarray(offset, dtype=np.float64), (len(idx),)).copy()
        if s.shape != (len(idx),) or o.shape != (len(idx),):
            raise GeoTiffError(f"scale/offset must be one number or one per selected band ({len(idx)})")
        return s, o
    s = np.array([src.scales[i] if src.scales[i] is not None else 1.0 for i in idx], dtype=np.float64)
    o = np.array([src.offsets[i] if src.offsets[i] is not None else 0.0 for i in idx], dtype=np.float64)
    if np.all(s == 1.0) and np.all(o == 0.0):
        tags = {k.lower(): v for k, v in src.tags().items()}
        if "scale_factor" in tags:
            s[:] = float(tags["scale_factor"])
        if "add_offset" in tags:
            o[:] = float(tags["add_offset"])
    if offset is not None:
        o[:] = offset
    return s, o


def _representable(value: float, dtype) -> bool:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return True
    info = np.iinfo(dtype)
    return float(value).is_integer() and info.min <= value <= info.max


def _gdal_masked(src, indexes) -> list:
    """The 1-based ``indexes`` whose validity GDAL keeps in a mask (internal per-dataset
    mask, as JPEG-compressed COGs use, or an alpha band) rather than in a nodata value."""
    from rasterio.enums import MaskFlags

    return [i for i in indexes
            if MaskFlags.per_dataset in src.mask_flag_enums[i - 1] or MaskFlags.alpha in src.mask_flag_enums[i - 1]]


_ALPHA_AS_DATA_WARNED: set = set()


def _is_mask_band(src, index: int) -> bool:
    """An alpha band that holds only 0 (invalid) and its type's maximum (valid)."""
    dtype = np.dtype(src.dtypes[index - 1])
    if dtype.kind not in "u":
        return False
    # a nearest-neighbour overview is enough to tell a 0/max mask from data, and cheap on scenes
    shape = (min(src.height, 512), min(src.width, 512))
    a = src.read(index, out_shape=shape)
    full = np.iinfo(dtype).max
    return bool(((a == 0) | (a == full)).all() and (a == full).any())


def _read_window(src, indexes, window, masks: bool = False):
    """Read ``indexes`` within ``window`` (may reach past the edges); returns (raw, outside, transform).

    Pixels outside the raster are zero in ``raw`` and True in ``outside``. With
    ``masks=True`` the GDAL masks of the bands are read instead (0 = invalid).
    """
    read = src.read_masks if masks else src.read
    if window is None:
        raw = read(indexes)
        return raw, np.zeros(raw.shape[-2:], dtype=bool), src.transform
    from rasterio.windows import Window

    if not isinstance(window, Window):
        try:  # rasterio's ((row_start, row_stop), (col_start, col_stop)) form
            (r_a, r_b), (c_a, c_b) = window
            r_a, r_b, c_a, c_b = (float(v) for v in (r_a, r_b, c_a, c_b))
        except (TypeError, ValueError):
            raise GeoTiffError(
                f"read window {window!r} is neither a rasterio Window nor ((row_start, row_stop), "
                "(col_start, col_stop)); pass rasterio.windows.Window(col_off, row_off, width, height)"
            ) from None
        if min(r_a, r_b, c_a, c_b) < 0:  # rasterio counts those from the far edge; we read past it
            raise GeoTiffError(
                f"read window {window!r} has negative indexes, which rasterio counts from the far "
                "edge: for a read past the top or left edge pass "
                "rasterio.windows.Window(col_off, row_off, width, height) with negative offsets"
            )
        window = Window(c_a, r_a, c_b - c_a, r_b - r_a)
    col, row = int(round(window.col_off)), int(round(window.row_off))
    w, h = int(round(window.width)), int(round(window.height))
    if w <= 0 or h <= 0:
        raise GeoTiffError(f"empty read window {window}")
    r0, r1 = max(row, 0), min(row + h, src.height)
    c0, c1 = max(col, 0), min(col + w, src.width)
    raw = np.zeros((len(indexes), h, w), dtype=np.uint8 if masks else src.dtypes[indexes[0] - 1])
    outside = np.ones((h, w), dtype=bool)
    if r1 > r0 and c1 > c0:
        raw[:, r0 - row:r1 - row, c0 - col:c1 - col] = read(
            indexes, window=Window(c0, r0, c1 - c0, r1 - r0))
        outside[r0 - row:r1 - row, c0 - col:c1 - col] = False
    return raw, outside, src.window_transform(Window(col, row, w, h))


def _data_bands(src, path: str, num_frames):
    """``(data_bands, per_frame, use_masks)``: 0-based data bands of one frame (an alpha band
    is the validity of the others, not data)."""
    from rasterio.enums import ColorInterp

    if num_frames:
        if src.count % num_frames:
            raise GeoTiffError(f"{path} has {src.count} bands, not a multiple of num_frames={num_frames}")
        per = src.count // num_frames
        return list(range(per)), per, True
    alpha = [i for i in range(src.count) if src.colorinterp[i] == ColorInterp.alpha]
    use_masks = all(_is_mask_band(src, i + 1) for i in alpha)
    if not use_masks and path not in _ALPHA_AS_DATA_WARNED:
        _ALPHA_AS_DATA_WARNED.add(path)
        logger.warning(
            "%s: band(s) %s are marked alpha but hold values other than 0 and the maximum: read as "
            "data, and the file's alpha mask is not used (GDAL marks the 4th band of a 4-band 8-bit "
            "file alpha unless it is written with photometric='MINISBLACK')",
            path, [i + 1 for i in alpha])
    if not use_masks:
        alpha = []
    data_bands = [i for i in range(src.count) if i not in alpha]
    if not data_bands:
        raise GeoTiffError(f"{path} holds only alpha bands")
    return data_bands, len(data_bands), use_masks


def _named_bands(src, path: str, *, bands, band_names, sensor, data_bands, per):
    """``(names, names_from, selected file indices, sensor)``, refusing a sensor (given, or the
    file's SENSOR tag) whose band count does not fit a file that does not name its bands: the
    bands could then be named neither for ``bands=`` nor for their wavelengths."""
    file_sensor = src.tags().get("SENSOR")
    given = sensor
    if sensor is None and file_sensor and file_sensor.lower() in SENSORS:
        sensor = file_sensor
    names, names_from = _band_names(src, band_names, per, sensor, data_bands)
    if names_from == "position" and sensor:
        ids = [b.id for b in SENSORS[sensor.lower()]]
        fits = [k for k, v in SENSORS.items() if len(v) == per]
        said = f"sensor={given!r}" if given else f"its SENSOR tag {file_sensor!r}"
        raise GeoTiffError(
            f"{path} holds {per} band{'s' if per > 1 else ''} per frame and does not name them (no band "
            f"descriptions), but {said} has {len(ids)} bands ({', '.join(ids)}): its bands cannot be named "
            f"from the sensor, for bands= nor for their wavelengths. "
            + (f"A file of {per} bands in sensor order is {' or '.join(repr(f) for f in fits)}: pass that sensor "
               f"if the file is one, or " if fits else "Pass ")
            + "band_names=[...] (one name per band, in file order)"
            + (", or correct the file's SENSOR tag" if not given else ""))
    idx = [data_bands[i] for i in resolve_band_indices(names, bands, sensor, where=os.path.basename(path))]
    return names, names_from, idx, sensor


def check_band_request(path: PathLike, *, bands: Sequence[str] | None = None,
                       band_names: Sequence[str] | None = None, sensor: str | None = None,
                       num_frames: int | None = None) -> tuple:
    """The band names :func:`read_geotiff` would give ``path``'s (selected) bands, checked
    without reading pixels: for request checks before any window is read. Raises
    :class:`GeoTiffError` as the read would (unnamed bands with a sensor or ``SENSOR`` tag of
    another band count, ``bands`` not in the file, no wavelengths for the sensor's bands)."""
    path = os.fspath(path)
    if sensor is not None and sensor.lower() not in SENSORS:
        raise GeoTiffError(f"unknown sensor {sensor!r}; known sensors: {', '.join(SENSORS)}")
    with _open_raster(path) as src:
        data_bands, per, _ = _data_bands(src, path, num_frames)
        names, _, idx, sensor = _named_bands(src, path, bands=bands, band_names=band_names, sensor=sensor,
                                             data_bands=data_bands, per=per)
    pos = {b: k for k, b in enumerate(data_bands)}
    selected = tuple(names[pos[i]] for i in idx)
    if sensor:
        try:
            sensor_wavelengths(sensor, selected)
        except KeyError as e:
            raise GeoTiffError(f"cannot give wavelengths for the bands {selected} of {sensor}: {e.args[0]}; "
                               "name the bands with band_names=") from None
    return selected


def _read_one(path: str, *, bands, band_names, sensor, scale, offset, nodata, window,
              num_frames, time_tag, time_from_name=True):
    with _open_raster(path) as src:
        data_bands, per, use_masks = _data_bands(src, path, num_frames)
        names, names_from, idx, sensor = _named_bands(src, path, bands=bands, band_names=band_names,
                                                      sensor=sensor, data_bands=data_bands, per=per)
        frames = range(num_frames or 1)
        file_idx = [f * per + i for f in frames for i in idx] if num_frames else idx
        raw, outside, transform = _read_window(src, [i + 1 for i in file_idx], window)
        masked = _gdal_masked(src, [i + 1 for i in file_idx]) if use_masks else []
        if masked:
            gdal_invalid = (_read_window(src, masked, window, masks=True)[0] == 0).any(axis=0)
        else:
            gdal_invalid = None
        has_transform = not src.transform.is_identity or bool(src.gcps[0])
        height, width = raw.shape[-2:]
        nd = [nodata if nodata is not None else src.nodatavals[i] for i in file_idx]
        s, o = _scale_offset(src, file_idx, scale, offset)
        tags = {k.upper(): v for k, v in src.tags().items()}
        if num_frames and num_frames > 1:
            if "TIMESTAMPS" in tags:
                times = [parse_time(t) for t in str(tags["TIMESTAMPS"]).split(",") if t.strip()]
                if len(times) != num_frames:
                    raise GeoTiffError(f"{path}: tag TIMESTAMPS has {len(times)} times for {num_frames} frames")
            else:
                times = [None] * num_frames
        else:
            times = [_time_of(src, path, time_tag, time_from_name)]
        pos = {b: k for k, b in enumerate(data_bands)}
        info = dict(crs=src.crs, transform=transform, height=height, width=width,
                    names=tuple(names[pos[i]] for i in idx), names_from=names_from, count=per,
                    sensor=tags.get("SENSOR"), has_transform=has_transform,
                    georeferenced=src.crs is not None or not src.transform.is_identity)
    if raw.dtype.kind == "c":
        raise GeoTiffError(f"{path} holds complex values ({raw.dtype}): convert them to real bands "
                           "(e.g. amplitude or dB) first")
    invalid = outside.copy()
    if gdal_invalid is not None:
        invalid |= gdal_invalid
    data = raw.astype(np.float32 if raw.dtype.itemsize <= 4 or raw.dtype.kind != "f" else np.float64)
    for k in range(data.shape[0]):
        band = data[k]
        bad = ~np.isfinite(band)
        if nd[k] is not None and not math.isnan(nd[k]) and _representable(nd[k], raw.dtype):
            bad |= raw[k] == nd[k]
        invalid |= bad
        with np.errstate(over="ignore", invalid="ignore"):  # overflows become invalid below
            band *= s[k]
            band += o[k]
    with np.errstate(over="ignore"):
        data = data.astype(np.float32, copy=False)
    invalid |= ~np.isfinite(data).all(axis=0)  # finite values that scaling or float32 overflowed
    if num_frames:
        data = data.reshape(num_frames, len(idx), height, width).transpose(1, 0, 2, 3)
    return data, ~invalid, times, info


def read_geotiff(paths: PathLike | Sequence[PathLike], *, bands: Sequence[str] | None = None,
                 band_names: Sequence[str] | None = None, sensor: str | None = None,
                 scale=None, offset=None, nodata: float | None = None,
                 fill: str | float | None = "zero", num_frames: int | None = None,
                 timestamps: Sequence[Any] | None = None, time_tag: str | None = None,
                 time_from_name: bool = True, window=None, require_crs: bool = False) -> GeoSample:
    """Read a GeoTIFF sample (see the module docstring for every convention).

    Args:
        paths: one file, or a list of files (one per date, same grid) stacked to
            ``(C, T, H, W)``. A list of one file still gives ``(C, 1, H, W)``.
        bands: band names to select, in the output order (default: all).
        band_names: names of the bands in the file(s) when they have no descriptions.
        sensor: sensor key of ``d2geo.encoders.SENSOR_BANDS`` for wavelengths/aliases.
        scale, offset: one number or one per selected band; None = from the file.
        nodata: overrides the files' nodata value.
        fill: "zero", "mean", a number, or None (invalid pixels stay NaN).
        num_frames: for one band-stacked file holding ``num_frames`` dates, time-major
            (all bands of date 0, then of date 1, ...): gives ``(C, T, H, W)``.
        timestamps: acquisition times (epoch seconds or date strings), overriding the files'.
        time_tag: read the time only from this tag (an error if it is missing).
        time_from_name: fall back to a date in the file name (turn off for names whose
            numeric ids could pass for dates).
        window: a ``rasterio.windows.Window``; reads past the edges are filled as nodata.
        require_crs: raise instead of warning when a file has no CRS.
    """
    multi = not isinstance(paths, (str, os.PathLike))
    path_list = [os.fspath(p) for p in (paths if multi else [paths])]
    if not path_list:
        raise GeoTiffError("no GeoTIFF paths were given")
    if multi and num_frames:
        raise GeoTiffError("num_frames= is for one band-stacked file; a list of files is already one file per date")
    if fill not in (None, "zero", "mean") and not isinstance(fill, (int, float)):
        raise GeoTiffError(f"fill must be 'zero', 'mean', a number or None, not {fill!r}")
    for p in path_list:
        if not os.path.exists(p):
            raise FileNotFoundError(f"GeoTIFF not found: {p}")

    if sensor is not None and sensor.lower() not in SENSORS:
        raise GeoTiffError(f"unknown sensor {sensor!r}; known sensors: {', '.join(SENSORS)}")
    arrays, valid, times, info0 = [], None, [], None
    for p in path_list:
        # dates after the first are read in the first date's band order, by name where the
        # files name their bands (dates may store them in another order)
        by_name = bands is None and info0 is not None and info0["names_from"] in ("descriptions", "sensor")
        try:
            data, ok, t, info = _read_one(p, bands=info0["names"] if by_name else bands,
                                          band_names=band_names, sensor=sensor, scale=scale, offset=offset,
                                          nodata=nodata, window=window, num_frames=num_frames,
                                          time_tag=time_tag, time_from_name=time_from_name)
        except GeoTiffError as e:
            if not by_name:
                raise
            raise GeoTiffError(f"the dates name their bands differently: {path_list[0]} has "
                               f"{list(info0['names'])}, but {e}") from None
        if info0 is None:
            info0 = info
        else:
            if bands is None and (info["count"] != info0["count"] or (info0["names_from"] == "position") !=
                                  (info["names_from"] == "position")):
                raise GeoTiffError(
                    f"{p} and {path_list[0]} hold different bands ({info['count']} named by "
                    f"{info['names_from']} vs {info0['count']} named by {info0['names_from']}), so they cannot "
                    "be stacked band by band: pass bands=[...] to select the same bands from every date, or "
                    "band_names=[...] if every date stores the same bands in the same order")
            if (info["height"], info["width"]) != (info0["height"], info0["width"]):
                raise GeoTiffError(f"{p} is {info['height']}x{info['width']} but {path_list[0]} is "
                                   f"{info0['height']}x{info0['width']}: the dates of a stack must share one grid")
            if info["crs"] != info0["crs"] or not info["transform"].almost_equals(info0["transform"]):
                raise GeoTiffError(f"{p} has another CRS/transform than {path_list[0]}: "
                                   "reproject the dates onto one grid first")
        arrays.append(data)
        valid = ok if valid is None else valid & ok
        times.extend(t)

    if multi:
        image = np.stack(arrays, axis=1)
    else:
        image = arrays[0]

    if fill is None and not valid.all():
        image.reshape(image.shape[0], -1, *image.shape[-2:])[:, :, ~valid] = np.nan
    elif fill is not None and not valid.all():
        img = image.reshape(image.shape[0], -1, *image.shape[-2:])  # (C, T', H, W) view
        for c in range(img.shape[0]):
            if fill == "zero":
                value = 0.0
            elif fill == "mean":
                good = img[c][:, valid]
                value = float(good.mean()) if good.size else 0.0
            else:
                value = float(fill)
            img[c][:, ~valid] = value

    metadata: dict = {}
    # time
    if timestamps is not None:
        ts = [t if isinstance(t, (int, float, np.floating, np.integer)) else parse_time(t) for t in timestamps]
        expected = image.shape[1] if image.ndim == 4 else 1
        if len(ts) != expected:
            raise GeoTiffError(f"{len(ts)} timestamps were given for {expected} frame(s)")
        metadata["timestamps"] = np.asarray(ts, dtype=np.float64)
    elif all(t is not None for t in times):
        metadata["timestamps"] = np.asarray(times, dtype=np.float64)
    else:
        logger.debug("no acquisition time found for %s", path_list)
    # location
    crs, transform = info0["crs"], info0["transform"]
    if crs is None or not info0["has_transform"]:
        if crs is None:
            msg = (f"{path_list[0]} has no CRS: 'latlon' and 'gsd' are left out of the metadata "
                   "(write the CRS into the file, e.g. with rasterio's crs= on writing, to get them)")
        else:
            msg = (f"{path_list[0]} has a CRS but no geotransform (pixel (0, 0) would sit at the CRS "
                   "origin with 1-unit pixels): 'latlon' and 'gsd' are left out of the metadata "
                   "(write the transform into the file, e.g. with rasterio's transform= on writing)")
        if require_crs:
            raise GeoTiffError(msg.replace("are left out of the metadata", "are unknown"))
        logger.warning(msg)
    else:
        latlon = tile_latlon(crs, transform, info0["height"], info0["width"])
        metadata["latlon"] = latlon
        metadata["gsd"] = pixel_gsd(crs, transform, info0["height"], info0["width"])
    # wavelengths
    sensor_key = sensor or info0["sensor"]
    if sensor_key:
        if sensor_key.lower() not in SENSORS:
            raise GeoTiffError(f"unknown sensor {sensor_key!r}; known sensors: {', '.join(SENSORS)}")
        try:
            metadata["wavelengths"] = sensor_wavelengths(sensor_key, info0["names"])
        except KeyError as e:
            raise GeoTiffError(f"cannot give wavelengths for the bands {info0['names']} of {sensor_key}: "
                               f"{e.args[0]}; name the bands with band_names=") from None
    return GeoSample(image=image, valid=valid, band_names=info0["names"], metadata=metadata,
                     crs=crs, transform=transform, paths=tuple(path_list))


_MODALITY_NAMES_LOGGED: set = set()


def read_modalities(files: Mapping[str, PathLike], *, bands: Sequence[str] | None = None,
                    band_names: Mapping[str, Sequence[str]] | None = None,
                    sensor: Mapping[str, str] | None = None, scale=None, offset=None, nodata=None,
                    fill: str | float | None = "zero", window=None, require_crs: bool = False,
                    time_tag: str | None = None, time_from_name: bool = True) -> GeoSample:
    """Read one sample whose modalities are separate files on one grid, stacked band-wise.

    ``files`` maps a modality name to its GeoTIFF, e.g. ``{"S2L2A": ..., "S1RTC": ..., "DEM":
    ...}`` (the folder names of TerraMind's data). The channels are named
    ``"<MODALITY>:<band>"`` (``"S2L2A:B04"``, ``"S1RTC:VV"``, ``"DEM:DEM"``), the names
    :class:`d2geo.encoders.terramind.TerraMindEncoder` takes (and
    :class:`d2geo.encoders.croma.CROMAEncoder`, for ``S2L1C``/``S2L2A`` with ``S1GRD``/``S1RTC``).
    A TerraMind modality's file that
    holds exactly the modality's pretrained bands gets their names when it does not name
    them itself (a 12-band S2L2A file: B01..B09, B8A, B11, B12); other files must name their
    bands (descriptions, or ``band_names={modality: [...]}``).

    ``bands`` selects and orders channels: ``"MOD:band"`` names, or a bare modality name for
    all of its bands; default: every band of every file, in the order of ``files``.
    ``sensor``, ``band_names`` and ``scale``/``offset``/``nodata`` may be given per modality
    (a mapping) or, for the last three, as one value for all; ``time_tag`` and
    ``time_from_name`` apply to every file (see :func:`read_geotiff`). A pixel is valid when it is
    valid in every modality (then filled as ``fill`` says, see :func:`read_geotiff`). The
    files must share CRS, transform and size. Metadata: ``latlon``/``gsd`` of the grid;
    ``timestamps`` only when every file that has a time has the same one (modalities
    acquired on different days have no single time); no ``wavelengths`` (mixed sensors).
    """
    from d2geo.encoders import SENSOR_BANDS as known_sensors
    from d2geo.encoders.modalities import MODALITIES as TERRAMIND_MODALITIES, MODALITY_SEP

    if not isinstance(files, Mapping) or not files:
        raise GeoTiffError(f"files must be a non-empty mapping of modality name to GeoTIFF path, got {files!r}")
    if fill not in (None, "zero", "mean") and not isinstance(fill, (int, float)):
        raise GeoTiffError(f"fill must be 'zero', 'mean', a number or None, not {fill!r}")
    mods = list(files)
    for m in mods:
        if MODALITY_SEP in m or not m:
            raise GeoTiffError(f"modality name {m!r} must be non-empty and without {MODALITY_SEP!r}")

    def per(option, m, what):
        if isinstance(option, Mapping):
            unknown = set(option) - set(mods)
            if unknown:
                raise GeoTiffError(f"{what} names modalities {sorted(unknown)} that files does not have ({mods})")
            return option.get(m)
        return option

    # which bands of which modality, in the output order
    wanted: list[tuple[str, str | None]] = []
    for b in (bands if bands is not None else mods):
        if not isinstance(b, str):
            raise GeoTiffError(f"bands must be band names, got {b!r}")
        m, sep, band = b.partition(MODALITY_SEP)
        match = next((k for k in mods if k.lower() == m.strip().lower()), None)
        if match is None:
            raise GeoTiffError(
                f"band {b!r} names the modality {m!r}, which is not one of the files' modalities {mods}; "
                f"name bands '<MODALITY>:<band>' (e.g. '{mods[0]}:{band or 'B04'}') or give a bare modality name")
        wanted.append((match, band.strip() if sep else None))

    samples: dict[str, GeoSample] = {}
    for m in mods:
        sel = [band for mm, band in wanted if mm == m]
        if not sel:
            continue
        if None in sel and len(sel) > 1:
            raise GeoTiffError(f"bands={list(bands)} asks for all of {m} and for some of its bands again")
        path = os.fspath(files[m])
        names = per(band_names, m, "band_names")
        spec = TERRAMIND_MODALITIES.get(m.upper())
        if names is None and spec is not None:
            with _open_raster(path) as src:
                desc = tuple(d or "" for d in src.descriptions)
                count = src.count
            own = {d.lower() for d in desc}
            if count == len(spec.bands) and own != {b.lower() for b in spec.bands}:
                names = spec.bands  # the modality's bands (descriptions such as 'bands' name none)
                if all(desc):  # once per file and modality: scenes read it once per window
                    level = logging.DEBUG if (path, m) in _MODALITY_NAMES_LOGGED else logging.INFO
                    _MODALITY_NAMES_LOGGED.add((path, m))
                    logger.log(level, "%s: reading the %s bands as %s (its band descriptions %s are not %s's "
                               "band names)", path, m, list(spec.bands), list(desc), m)
            elif count != len(spec.bands) and not (all(desc) and len(own) == count):
                raise GeoTiffError(
                    f"{path} is the {m} file but holds {count} bands where {m} has {len(spec.bands)} "
                    f"({', '.join(spec.bands)}; {spec.description}), and does not name them: is it "
                    f"the file of another modality? Otherwise pass band_names={{{m!r}: [...]}}")
        msensor = per(sensor, m, "sensor")
        if (msensor is None and spec is not None and spec.sensor is not None and names == spec.bands
                and spec.sensor in known_sensors):
            msensor = spec.sensor  # for band aliases in bands=[...]
        samples[m] = read_geotiff(
            path, bands=None if None in sel else sel, band_names=names, sensor=msensor,
            scale=per(scale, m, "scale"), offset=per(offset, m, "offset"), nodata=per(nodata, m, "nodata"),
            fill=None, window=window, require_crs=require_crs, time_tag=time_tag,
            time_from_name=time_from_name)

    first = samples[mods[0]] if mods[0] in samples else next(iter(samples.values()))
    for m, s in samples.items():
        if s.image.ndim != 3:
            raise GeoTiffError(f"{s.paths[0]} ({m}) is a time series; read_modalities stacks single dates")
        m0 = next(k for k, v in samples.items() if v is first)
        problems = _grid_problems(s.crs, s.transform, s.image.shape[-2:], ref_crs=first.crs,
                                  ref_transform=first.transform, ref_shape=first.image.shape[-2:], ref=f"{m0}'s")
        if problems:
            raise GeoTiffError(f"{s.paths[0]} ({m}) has another CRS/transform/size than {first.paths[0]} ({m0}): "
                               + "; ".join(problems) + ". The modalities of a sample must share one grid: "
                               "reproject or resample them onto one grid first (gdalwarp, rasterio.warp.reproject)")

    channels, names, taken = [], [], {m: 0 for m in samples}
    for m, band in wanted:
        s = samples[m]
        if band is None:  # the whole file
            idx = range(len(s.band_names))
        else:  # read_geotiff returned the selected bands in the order asked
            idx = [taken[m]]
            taken[m] += 1
        for i in idx:
            channels.append(s.image[i])
            names.append(f"{m}{MODALITY_SEP}{s.band_names[i]}")
    if len(set(n.lower() for n in names)) != len(names):
        raise GeoTiffError(f"bands={list(bands)} names a channel twice: {names}")
    image = np.stack(channels).astype(np.float32, copy=False)
    valid = np.logical_and.reduce([s.valid for s in samples.values()])
    if not valid.all() and fill is not None:
        for c in range(image.shape[0]):
            if fill == "zero":
                value = 0.0
            elif fill == "mean":
                good = image[c][valid]
                value = float(good.mean()) if good.size else 0.0
            else:
                value = float(fill)
            image[c][~valid] = value
    elif not valid.all():
        image[:, ~valid] = np.nan

    metadata = {k: v for k, v in first.metadata.items() if k in ("latlon", "gsd")}
    times = {float(s.metadata["timestamps"][0]) for s in samples.values() if "timestamps" in s.metadata}
    if len(times) == 1:
        metadata["timestamps"] = np.asarray(sorted(times), dtype=np.float64)
    elif times:
        logger.debug("modalities of %s were acquired at different times; no timestamps", list(files.values()))
    return GeoSample(image=image, valid=valid, band_names=tuple(names), metadata=metadata, crs=first.crs,
                     transform=first.transform, paths=tuple(s.paths[0] for s in samples.values()))


def _grid_problems(crs, transform, shape, *, ref_crs, ref_transform, ref_shape, ref: str = "the image's",
                   tolerance: float = 1e-3, no_crs_matters: bool = True) -> list[str]:
    """What differs between a raster's grid and a reference grid (empty: the same grid).

    The transform's coefficients may differ by ``tolerance`` of a pixel (offsets) or of the
    pixel size (scale, rotation); a side without georeferencing is compared by shape only.
    ``ref`` names the reference in the messages (``"the image's"``)."""
    h, w = ref_shape
    problems = []
    if tuple(shape) != (h, w):
        problems.append(f"its shape is {tuple(shape)[0]}x{tuple(shape)[1]}, {ref} {h}x{w}")
    if ref_crs is not None and crs is not None and crs != ref_crs:
        problems.append(f"its CRS is {crs.to_string()}, {ref} {ref_crs.to_string()}")
    elif ((ref_crs is None) != (crs is None) and no_crs_matters and ref_transform is not None
          and not ref_transform.is_identity):
        problems.append("it has no CRS" if crs is None else f"{ref.replace(chr(39) + 's', '')} has no CRS")
    if transform is not None and ref_transform is not None and not problems:
        a = np.asarray(tuple(transform)[:6], dtype=np.float64)
        b = np.asarray(tuple(ref_transform)[:6], dtype=np.float64)
        px = max(abs(b[0]), abs(b[4]), abs(b[1]), abs(b[3]), 1e-12)
        if np.any(np.abs(a - b) > tolerance * px):
            what = []
            if np.any(np.abs(a[[0, 1, 3, 4]] - b[[0, 1, 3, 4]]) > tolerance * px):
                fmt = lambda v: "(" + ", ".join(f"{float(x):g}" for x in v[[0, 1, 3, 4]]) + ")"  # noqa: E731
                what.append(f"pixel size/rotation (a, b, d, e) {fmt(a)} vs {fmt(b)}")
            if np.any(np.abs(a[[2, 5]] - b[[2, 5]]) > tolerance * px):
                off = [round(float(x), 4) + 0.0 for x in ((a[2] - b[2]) / b[0], (a[5] - b[5]) / b[4])]
                what.append(f"origin ({a[2]:.10g}, {a[5]:.10g}) vs ({b[2]:.10g}, {b[5]:.10g}), off by "
                            f"({off[0]:.3g}, {off[1]:.3g}) pixels")
            problems.append(f"its geotransform differs from {ref}: " + "; ".join(what))
    return problems


def check_same_grid(path: str, crs, transform, shape, *, like: "GeoSample", tolerance: float = 1e-3) -> None:
    """Raise when a raster (a label) is not on the grid of the image ``like`` was read from.

    Compares CRS, shape and transform; the transform's coefficients may differ by
    ``tolerance`` of a pixel (offsets) or of the pixel size (scale, rotation). A side
    without georeferencing is compared by shape only.
    """
    problems = _grid_problems(crs, transform, shape, ref_crs=like.crs, ref_transform=like.transform,
                              ref_shape=like.image.shape[-2:], tolerance=tolerance)
    if problems:
        raise GeoTiffError(
            f"{path} is not on the grid of its image {like.paths[0] if like.paths else ''}: "
            + "; ".join(problems) + ". A label must cover the same pixels as its image: reproject "
            "or resample it onto the image's grid (e.g. rasterio.warp.reproject with the image's "
            "crs/transform/shape and nearest resampling)")


def check_modality_grid(files: Mapping[str, PathLike], tolerance: float = 1e-3) -> dict:
    """Check that the files of a multi-modality sample or scene (``{modality: path}``) share
    one grid: CRS, geotransform (within ``tolerance`` of a pixel) and size. Returns the grid
    (``height``, ``width``, ``crs``, ``transform``) of the first file; raises
    :class:`GeoTiffError` naming each file that differs, what differs and the fix."""
    if not isinstance(files, Mapping) or not files:
        raise GeoTiffError(f"files must be a non-empty mapping of modality name to GeoTIFF path, got {files!r}")
    grids = {}
    for m, path in files.items():
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"the {m} file {path} does not exist")
        with _open_raster(path) as src:
            georef = not src.transform.is_identity
            grids[m] = (path, src.crs, src.transform if georef else None, (src.height, src.width))
    (m0, (p0, crs0, t0, shape0)), *rest = grids.items()
    problems = []
    for m, (p, crs, t, shape) in rest:
        found = _grid_problems(crs, t, shape, ref_crs=crs0, ref_transform=t0, ref_shape=shape0,
                               ref=f"{m0}'s", tolerance=tolerance)
        if found:
            problems.append(f"{p} ({m}): " + "; ".join(found))
    if problems:
        raise GeoTiffError(
            f"the modalities are not on one grid: {' | '.join(problems)} (compared with {p0}, {m0}). The files "
            f"of one sample or scene must share CRS, transform and size: reproject or resample the modalities "
            f"onto one grid first, e.g. gdalwarp -t_srs <{m0}'s CRS> -tr <pixel size> -te <{m0}'s bounds> -r bilinear (nearest "
            f"for class maps), or rasterio.warp.reproject with {m0}'s crs/transform/shape")
    return {"height": shape0[0], "width": shape0[1], "crs": crs0, "transform": grids[m0][2] or
            _rasterio().Affine.identity(), "paths": [g[0] for g in grids.values()]}


def read_label(path: PathLike, *, window=None, label_map: Mapping[int, int] | None = None,
               ignore_label: int = IGNORE_LABEL, invalid: np.ndarray | None = None,
               band: int = 1, like: GeoSample | None = None) -> np.ndarray:
    """A segmentation target as ``uint8 (H, W)``; nodata, NaN, GDAL-masked and ``invalid``
    pixels get ``ignore_label``.

    ``label_map`` maps stored values to training labels (e.g. ``{-1: 255}``). Labels must
    fit in 0..254 plus the ignore label: more classes than that are an error. ``like``:
    the image sample the label belongs to; the label must then be on its grid (CRS,
    transform and shape, see :func:`check_same_grid`).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"label GeoTIFF not found: {path}")
    with _open_raster(path) as src:
        raw, bad, transform = _read_window(src, [band], window)
        if like is not None:
            georef = not src.transform.is_identity
            check_same_grid(path, src.crs, transform if georef else None, raw.shape[-2:], like=like)
        if _gdal_masked(src, [band]):
            bad |= _read_window(src, [band], window, masks=True)[0][0] == 0
        raw = raw[0]
        nd = src.nodatavals[band - 1]
    if raw.dtype.kind == "f":
        bad |= ~np.isfinite(raw)
        raw = np.where(bad, 0, raw)
        if np.any(raw != np.round(raw)):
            raise GeoTiffError(f"{path} holds fractional values: a segmentation target must hold class ids")
    if nd is not None and not math.isnan(nd) and _representable(nd, raw.dtype):
        bad |= raw == nd
    labels = raw.astype(np.int64)
    if label_map:
        out = labels.copy()
        for k, v in label_map.items():
            out[labels == k] = v
        labels = out
    labels[bad] = ignore_label
    if invalid is not None:
        if invalid.shape != labels.shape:
            raise GeoTiffError(f"the invalid-pixel mask is {invalid.shape} but {path} is {labels.shape}")
        labels[invalid] = ignore_label
    off = (labels < 0) | (labels > 255)
    if off.any():
        raise GeoTiffError(f"{path} holds labels {np.unique(labels[off])[:5].tolist()} outside 0..255: "
                           "map them with label_map= (e.g. {-1: 255} for a -1 nodata value)")
    return labels.astype(np.uint8)
