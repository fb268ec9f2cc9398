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

from .bands import (  # noqa: F401
    _band_names, _data_bands, _gdal_masked, _is_mask_band, _named_bands, _representable, _scale_offset,
    band_names_of, check_band_request, resolve_band_indices, sensor_wavelengths,
)
from .grid import (  # noqa: F401
    GSD_SCALE_TOLERANCE, _geodesy, _grid_problems, apply_affine, check_modality_grid, check_same_grid,
    pixel_gsd, tile_latlon, translate_affine,
)
from .modalities import read_modalities  # noqa: F401
from .opening import GeoTiffError, PathLike, _open_raster, _rasterio  # noqa: F401
from .reading import IGNORE_LABEL, GeoSample, _read_one, _read_window, read_geotiff, read_label  # noqa: F401
from .times import TIFF_DATETIME_TAG, TIME_TAGS, _time_of, parse_time, time_from_filename  # noqa: F401

__all__ = [
    "read_modalities",
    "GeoSample", "GeoTiffError", "read_geotiff", "read_label", "parse_time", "time_from_filename",
    "tile_latlon", "pixel_gsd", "band_names_of", "resolve_band_indices", "sensor_wavelengths",
    "TIME_TAGS", "IGNORE_LABEL", "check_band_request", "check_same_grid", "check_modality_grid", "apply_affine", "translate_affine",
]
