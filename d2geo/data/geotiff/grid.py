"""Location and grids: affine helpers, tile centre, ground sample distance, same-grid checks."""
from __future__ import annotations

import functools
import math
import os
from typing import Mapping

import numpy as np

from .opening import GeoTiffError, PathLike, _open_raster, _rasterio

#: a projected CRS whose scale at the tile centre is within this of 1 reports its nominal
#: pixel size (UTM's 0.9996..1.001); farther off (Web Mercator away from the equator,
#: other non-equidistant projections), the geodesic ground distance
GSD_SCALE_TOLERANCE = 0.005


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


@functools.lru_cache(maxsize=64)
def _to_lonlat(wkt: str):
    """A pyproj transformer from the CRS ``wkt`` to EPSG:4326 lon/lat (cached: building one
    costs more than a window's read)."""
    from pyproj import CRS, Transformer

    return Transformer.from_crs(CRS.from_user_input(wkt), "EPSG:4326", always_xy=True)


def tile_latlon(crs, transform, height: int, width: int, *, wkt: str | None = None) -> np.ndarray:
    """(lat, lon) in degrees of the centre of a ``height x width`` tile (``wkt``: ``crs.to_wkt()``
    when the caller has it already)."""
    x, y = apply_affine(transform, width / 2.0, height / 2.0)
    lon, lat = _to_lonlat(wkt or crs.to_wkt()).transform(float(x), float(y))
    return np.array([lat, lon], dtype=np.float64)


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


def pixel_gsd(crs, transform, height: int = 1, width: int = 1, *, wkt: str | None = None) -> float:
    """Ground sample distance in metres at the centre of a ``height x width`` tile.

    The square root of the ground area of one pixel: the pixel's two edges are measured
    as geodesics on the CRS's ellipsoid (pyproj), so degrees, feet and projections that
    stretch distance (Web Mercator: 10 projected metres are 5 m at 60 degrees latitude)
    all give ground metres. A projected CRS whose scale there is within
    :data:`GSD_SCALE_TOLERANCE` of 1 (UTM) gives its nominal pixel size. ``wkt``:
    ``crs.to_wkt()`` when the caller has it already.
    """
    pcrs, geod, to_geo = _geodesy(wkt or crs.to_wkt())
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


def check_same_grid(path: str, crs, transform, shape, *, like, tolerance: float = 1e-3) -> None:
    # like: the GeoSample the image was read from (d2geo.data.geotiff.reading, which imports this module)
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

