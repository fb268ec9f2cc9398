"""Band names, band requests, alpha/mask bands, scale and offset of GeoTIFFs."""
from __future__ import annotations

import logging
import os
import re
from typing import Sequence

import numpy as np

from d2geo.encoders.bands import SENSORS, BandError, describe_bands, expand_bands, match_bands, sensor_file_bands
from d2geo.encoders.bands import wavelengths as _wavelengths

from .opening import GeoTiffError, PathLike, _open_raster

logger = logging.getLogger(__name__)

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
