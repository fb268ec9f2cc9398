"""Output writers: the class map (colour table, class names), class scores, COGs, GeoJSON, GeoParquet.

The class map is a uint8 raster (255 = no prediction) written in strips to a tiled scratch
GeoTIFF and converted to a Cloud-Optimized GeoTIFF by GDAL with a bounded block cache
(:func:`to_cog`: 512 px tiles, deflate, overviews until the image fits one tile). It carries
its classes itself: the colour table, and the class names as the band's ``class_names``
metadata item (JSON, in the file's ``GDAL_METADATA`` tag; ``gdalinfo`` and
``rasterio``'s ``tags(1)`` show it). GeoTIFF has no field for GDAL *category names*, so those
(which QGIS uses to label the colour table) also go to the ``<file>.aux.xml`` sidecar that GDAL
reads with the file. The scores are float32, one band per class, named by class (NaN = none).

Scratch files are hidden (``.<name>.<random>.d2geo-tmp.tif``) and removed when the block ends,
whatever happens; :func:`terminate_cleanly` turns SIGTERM into an exception so that this
cleaning (and that of :func:`~d2geo.data.files.atomic_path`) runs for a killed tool too.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
from typing import Sequence
from xml.sax.saxutils import escape

from d2geo.data.files import TMP_MARK

from .blend import NODATA_CLASS

__all__ = ["open_class_map", "open_scores", "write_category_names", "to_cog", "write_geojson", "write_geoparquet",
           "scratch_path", "terminate_cleanly", "COG_BLOCK", "GDAL_CACHE_MB", "default_class_names"]

COG_BLOCK = 512
GDAL_CACHE_MB = 64


def default_class_names(k: int, class_names: Sequence[str] | None, error=ValueError) -> list[str]:
    """The names of ``k`` classes: ``class_names`` (checked to be ``k``), else ``class i``."""
    if class_names is not None and len(class_names) != k:
        raise error(f"the model predicts {k} classes but {len(class_names)} class names were given "
                    f"({list(class_names)})")
    return list(class_names) if class_names is not None else [f"class {i}" for i in range(k)]


def _profile(scene, blocksize: int) -> dict:
    return dict(driver="GTiff", width=scene.width, height=scene.height, crs=scene.crs, transform=scene.transform,
                tiled=True, blockxsize=blocksize, blockysize=blocksize, compress="deflate", bigtiff="if_safer")


def open_class_map(path: str, scene, names: Sequence[str], *, blocksize: int = COG_BLOCK, tags: dict | None = None):
    """A class-map raster open for writing (uint8, colour table, class names; see the module docstring)."""
    import rasterio

    from d2geo.data.render import class_colours

    dst = rasterio.open(path, "w", count=1, dtype="uint8", nodata=NODATA_CLASS, photometric="palette",
                        **_profile(scene, blocksize))
    cmap = {i: (*c, 255) for i, c in enumerate(class_colours(list(names)))}
    cmap[NODATA_CLASS] = (0, 0, 0, 0)
    dst.write_colormap(1, cmap)
    dst.set_band_description(1, "class")
    dst.update_tags(1, class_names=json.dumps(list(names)))
    if tags:
        dst.update_tags(**tags)
    return dst


def open_scores(path: str, scene, names: Sequence[str], *, blocksize: int = COG_BLOCK, tags: dict | None = None):
    """A float32 class-score raster open for writing (one band per class, NaN = no data)."""
    import rasterio

    dst = rasterio.open(path, "w", count=len(names), dtype="float32", nodata=float("nan"), predictor=3,
                        **_profile(scene, blocksize))
    for i, n in enumerate(names):
        dst.set_band_description(i + 1, n)
    dst.update_tags(scores="softmax of the blended sem_seg", **(tags or {}))
    return dst


def write_category_names(path: str, class_names: Sequence[str]) -> None:
    """GDAL category names of band 1 in the PAM sidecar ``path`` (``<class map>.aux.xml``)."""
    cats = "".join(f"      <Category>{escape(str(n))}</Category>\n" for n in class_names)
    xml = ("<PAMDataset>\n  <PAMRasterBand band=\"1\">\n    <CategoryNames>\n" + cats +
           "    </CategoryNames>\n  </PAMRasterBand>\n</PAMDataset>\n")
    with open(path, "w", encoding="utf-8") as f:
        f.write(xml)


def to_cog(src_path: str, dst_path: str, resampling: str, blocksize: int = COG_BLOCK) -> None:
    """Copy a raster to a COG (overviews with ``resampling``: nearest for classes, average for scores)."""
    import rasterio
    from rasterio.shutil import copy

    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB, GDAL_NUM_THREADS=1):
        copy(src_path, dst_path, driver="COG", compress="deflate", blocksize=blocksize,
             overview_resampling=resampling, overviews="auto", bigtiff="if_safer")


def write_geojson(fc: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(fc, f)


def write_geoparquet(geojson: dict, path: str, crs,
                     empty_columns: Sequence[str] = ("category_id", "score", "scene")) -> None:
    """The features of ``geojson`` as GeoParquet (geopandas, pyarrow: ``pip install 'd2geo[region]'``)."""
    import geopandas as gpd
    from rasterio.crs import CRS

    crs_s = CRS.from_user_input(crs).to_string() if crs is not None else None
    if geojson["features"]:
        gdf = gpd.GeoDataFrame.from_features(geojson["features"], crs=crs_s)
    else:
        gdf = gpd.GeoDataFrame({c: [] for c in empty_columns}, geometry=[], crs=crs_s)
    gdf.to_parquet(path, index=False)


def scratch_path(stack: contextlib.ExitStack, directory: str, name: str, suffix: str = ".tif") -> str:
    """A hidden scratch file name in ``directory`` (removed, with its sidecars, when ``stack`` closes)."""
    fd, path = tempfile.mkstemp(prefix=f".{name}.", suffix=TMP_MARK + suffix, dir=directory)
    os.close(fd)
    os.unlink(path)

    def remove():
        for p in (path, path + ".aux.xml", path + ".msk"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)

    stack.callback(remove)
    return path


class Terminated(SystemExit):
    """SIGTERM, raised as an exception so that ``finally`` blocks remove temporary files."""


@contextlib.contextmanager
def terminate_cleanly():
    """While the block runs (main thread only), SIGTERM raises :class:`Terminated` (exit code
    143) instead of killing the process where it stands."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
