"""GeoTIFFs for the tests: writing small ones, and where the real example tiles are."""
from __future__ import annotations

import os

__all__ = ["TERRAMIND_EXAMPLES", "UTM", "write_tif"]

#: Real Sentinel-1/2, DEM, NDVI and land-cover tiles (TerraMind examples, Apache-2.0) that
#: sit in the workplace's shared folder beside the repository; never copied into the repo.
TERRAMIND_EXAMPLES = os.environ.get(
    "D2GEO_TERRAMIND_EXAMPLES",
    os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
                 "shared", "data", "terramind-examples"))

UTM = "EPSG:32610"


def write_tif(path, data, *, crs=UTM, transform=None, nodata=None, names=None, tags=None, scales=None,
              offsets=None) -> str:
    """Write ``data`` ``(C, H, W)`` or ``(H, W)`` (its dtype) as a GeoTIFF; returns the path.
    The default transform puts 30 m pixels in UTM zone 10N."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    c, h, w = data.shape
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    transform = transform if transform is not None else from_origin(500_000, 4_000_000, 30, 30)
    kw = dict(driver="GTiff", width=w, height=h, count=c, dtype=data.dtype.name, transform=transform)
    if crs is not None:
        kw["crs"] = crs
    if nodata is not None:
        kw["nodata"] = nodata
    with rasterio.open(path, "w", **kw) as dst:
        dst.write(data)
        if names:
            for i, n in enumerate(names):
                dst.set_band_description(i + 1, n)
        if tags:
            dst.update_tags(**tags)
        if scales is not None:
            dst.scales = scales
        if offsets is not None:
            dst.offsets = offsets
    return str(path)
