"""Reading GeoTIFF samples and label rasters (see the package docstring for the conventions)."""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from d2geo.encoders.bands import SENSORS

from .bands import (_data_bands, _gdal_masked, _named_bands, _representable, _scale_offset, sensor_wavelengths)
from .grid import check_same_grid, pixel_gsd, tile_latlon
from .opening import GeoTiffError, PathLike, _open_raster
from .times import _time_of, parse_time

logger = logging.getLogger(__name__)

#: the label segmentation targets use for pixels that must not be learned from
IGNORE_LABEL = 255


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
    if (r0, r1, c0, c1) == (row, row + h, col, col + w):  # inside the raster (a scene window): no padding
        return (read(indexes, window=Window(col, row, w, h)), np.zeros((h, w), dtype=bool),
                src.window_transform(Window(col, row, w, h)))
    raw = np.zeros((len(indexes), h, w), dtype=np.uint8 if masks else src.dtypes[indexes[0] - 1])
    outside = np.ones((h, w), dtype=bool)
    if r1 > r0 and c1 > c0:
        raw[:, r0 - row:r1 - row, c0 - col:c1 - col] = read(
            indexes, window=Window(c0, r0, c1 - c0, r1 - r0))
        outside[r0 - row:r1 - row, c0 - col:c1 - col] = False
    return raw, outside, src.window_transform(Window(col, row, w, h))



def _hashable(v):
    return None if v is None else tuple(v) if not isinstance(v, str) else v


def _file_facts(src, path: str, *, bands, band_names, sensor, num_frames, time_tag, time_from_name) -> dict:
    """What :func:`_read_one` needs of a file besides its pixels: the same for every window."""
    data_bands, per, use_masks = _data_bands(src, path, num_frames)
    names, names_from, idx, sensor = _named_bands(src, path, bands=bands, band_names=band_names,
                                                  sensor=sensor, data_bands=data_bands, per=per)
    frames = range(num_frames or 1)
    file_idx = [f * per + i for f in frames for i in idx] if num_frames else idx
    masked = _gdal_masked(src, [i + 1 for i in file_idx]) if use_masks else []
    has_transform = not src.transform.is_identity or bool(src.gcps[0])
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
    info = dict(crs=src.crs, wkt=src.crs.to_wkt() if src.crs is not None else None, names=tuple(names[pos[i]] for i in idx), names_from=names_from, count=per,
                sensor=tags.get("SENSOR"), has_transform=has_transform,
                georeferenced=src.crs is not None or not src.transform.is_identity)
    return dict(file_idx=file_idx, masked=masked, nodata=[src.nodatavals[i] for i in file_idx],
                times=times, info=info)


def _finite_as_float32(dtype, scale, offset) -> bool:
    """True when every integer of ``dtype`` times ``scale`` plus ``offset`` is finite in float32,
    so that the check for values that overflowed can be skipped."""
    if np.dtype(dtype).kind not in "iu":
        return False
    info = np.iinfo(dtype)
    top = max(abs(int(info.min)), int(info.max))
    limit = float(np.finfo(np.float32).max) / 2
    return all(math.isfinite(k) and math.isfinite(b) and top * abs(k) + abs(b) < limit
               for k, b in zip(scale, offset))


def _read_one(path: str, *, bands, band_names, sensor, scale, offset, nodata, window,
              num_frames, time_tag, time_from_name=True, alloc=None):
    handle: dict = {}
    # a window of a scene: the file stays open in this process for the next window, and the
    # facts that do not change between windows (bands, masks, tags, time) are worked out once
    with _open_raster(path, cached=window is not None, memo=handle) as src:
        key = (num_frames, _hashable(bands), _hashable(band_names), sensor, time_tag, time_from_name,
               scale is None and offset is None)
        facts = handle["facts"].get(key)
        if facts is None:
            facts = _file_facts(src, path, bands=bands, band_names=band_names, sensor=sensor,
                                num_frames=num_frames, time_tag=time_tag, time_from_name=time_from_name)
            if key[-1]:
                facts["scale_offset"] = _scale_offset(src, facts["file_idx"], None, None)
            handle["facts"][key] = facts
        file_idx, info = facts["file_idx"], dict(facts["info"])
        raw, outside, transform = _read_window(src, [i + 1 for i in file_idx], window)
        if facts["masked"]:
            gdal_invalid = (_read_window(src, facts["masked"], window, masks=True)[0] == 0).any(axis=0)
        else:
            gdal_invalid = None
        height, width = raw.shape[-2:]
        nd = [nodata if nodata is not None else v for v in facts["nodata"]]
        s, o = facts["scale_offset"] if key[-1] else _scale_offset(src, file_idx, scale, offset)
        times = list(facts["times"])
        info.update(transform=transform, height=height, width=width)
    if raw.dtype.kind == "c":
        raise GeoTiffError(f"{path} holds complex values ({raw.dtype}): convert them to real bands "
                           "(e.g. amplitude or dB) first")
    invalid = outside.copy()
    if gdal_invalid is not None:
        invalid |= gdal_invalid
    ftype = np.float32 if raw.dtype.itemsize <= 4 or raw.dtype.kind != "f" else np.float64
    if alloc is not None and ftype is np.float32:  # converted straight into the caller's array
        data = alloc(raw.shape, np.float32)
        np.copyto(data, raw, casting="unsafe")
    else:
        data = raw.astype(ftype)
    floats = raw.dtype.kind == "f"  # integers are always finite
    for k in range(data.shape[0]):
        band = data[k]
        if floats:
            invalid |= ~np.isfinite(band)
        if nd[k] is not None and not math.isnan(nd[k]) and _representable(nd[k], raw.dtype):
            invalid |= raw[k] == nd[k]
        with np.errstate(over="ignore", invalid="ignore"):  # overflows become invalid below
            if s[k] != 1.0:
                band *= s[k]
            if o[k] != 0.0:
                band += o[k]
    with np.errstate(over="ignore"):
        data = data.astype(np.float32, copy=False)
    if floats or not _finite_as_float32(raw.dtype, s, o):
        invalid |= ~np.isfinite(data).all(axis=0)  # finite values that scaling or float32 overflowed
    if num_frames:
        data = data.reshape(num_frames, len(info["names"]), height, width).transpose(1, 0, 2, 3)
    return data, ~invalid, times, info


def read_geotiff(paths: PathLike | Sequence[PathLike], *, bands: Sequence[str] | None = None,
                 band_names: Sequence[str] | None = None, sensor: str | None = None,
                 scale=None, offset=None, nodata: float | None = None,
                 fill: str | float | None = "zero", num_frames: int | None = None,
                 timestamps: Sequence[Any] | None = None, time_tag: str | None = None,
                 time_from_name: bool = True, window=None, require_crs: bool = False,
                 alloc=None) -> GeoSample:
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
        alloc: ``alloc(shape, dtype) -> array`` for the image of one single-date file, which
            is then converted into it (GeoDatasetMapper puts it in shared memory inside a
            DataLoader worker); default ``numpy.empty``.
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
                                          time_tag=time_tag, time_from_name=time_from_name,
                                          alloc=None if multi or num_frames else alloc)
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
        latlon = tile_latlon(crs, transform, info0["height"], info0["width"], wkt=info0.get("wkt"))
        metadata["latlon"] = latlon
        metadata["gsd"] = pixel_gsd(crs, transform, info0["height"], info0["width"], wkt=info0.get("wkt"))
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
