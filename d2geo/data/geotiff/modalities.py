"""Reading one sample whose modalities are separate files on one grid."""
from __future__ import annotations

import logging
import os
from typing import Mapping, Sequence

import numpy as np

from .grid import _grid_problems
from .opening import GeoTiffError, PathLike, _open_raster
from .reading import GeoSample, read_geotiff

logger = logging.getLogger(__name__)

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
