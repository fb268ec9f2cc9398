"""Tiny synthetic COG scenes in two UTM zones and vector labels in EPSG:4326, for the scene tests
(helpers and fixtures imported by the test modules of this folder; not a conftest.py, whose
module name would shadow tests/conftest.py for the imports of other test files)."""
from __future__ import annotations

import os

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
gpd = pytest.importorskip("geopandas")
pytest.importorskip("pyogrio")
pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")

from pyproj import Transformer  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

#: (CRS, upper-left corner) of the two test scenes: UTM 31N near 3 E and UTM 32N near 9 E, 45 N
ZONES = (("EPSG:32631", (499_000.0, 4_985_000.0)), ("EPSG:32632", (501_000.0, 4_990_000.0)))


def write_cog(path, *, crs, origin, size=300, gsd=10.0, bands=3, nodata_corner=False, dtype="uint16"):
    """A COG whose band 1 holds the column, band 2 the row, band 3.. a constant (so a read
    window can be checked pixel by pixel); ``nodata_corner`` blanks the top-left 60 px."""
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy

    rows, cols = np.mgrid[0:size, 0:size]
    data = np.empty((bands, size, size), dtype=dtype)
    data[0] = cols + 1
    data[1 % bands] = rows + 1
    for b in range(2, bands):
        data[b] = 100 * b
    if nodata_corner:
        data[:, :60, :60] = 0
    profile = dict(driver="GTiff", width=size, height=size, count=bands, dtype=dtype, crs=crs, nodata=0,
                   transform=from_origin(origin[0], origin[1], gsd, gsd), tiled=True, blockxsize=128,
                   blockysize=128)
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(data)
            for b in range(bands):
                dst.set_band_description(b + 1, f"b{b + 1}")
        with mem.open() as src:
            rio_copy(src, os.fspath(path), driver="COG")
    return os.fspath(path)


def lonlat_of(crs, x, y):
    tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    return tr.transform(x, y)


def utm_of(crs, lon, lat):
    tr = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    return tr.transform(lon, lat)


def write_labels(path, features, crs="EPSG:4326", driver=None):
    """``features``: [(shapely geometry, {properties})] -> a vector file."""
    geoms = [g for g, _ in features]
    props = [p for _, p in features]
    gdf = gpd.GeoDataFrame(props, geometry=geoms, crs=crs)
    gdf.to_file(os.fspath(path), driver=driver, engine="pyogrio")
    return os.fspath(path)


@pytest.fixture
def two_zones(tmp_path):
    """Two 300 px COG scenes (10 m) in UTM 31N and 32N; returns their paths."""
    return [write_cog(tmp_path / f"scene_{i}.tif", crs=crs, origin=origin) for i, (crs, origin) in enumerate(ZONES)]


@pytest.fixture(autouse=True)
def _clean_catalog():
    from detectron2.data import DatasetCatalog, MetadataCatalog

    before = set(DatasetCatalog.list())
    yield
    for name in set(DatasetCatalog.list()) - before:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
