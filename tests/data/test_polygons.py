"""Class maps polygonized in row strips (d2geo.inference.polygons): the polygons rasterize back to
the class map pixel for pixel, a region cut by strip seams comes out as one polygon, and the
result does not depend on the strip height."""
from __future__ import annotations

import json

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("shapely", reason="polygons need shapely (d2geo[region])")
pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from "
                                         "source (d2geo.data needs it)")
from rasterio.features import rasterize  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

from d2geo.inference.polygons import PolygonRequestError, polygonize_class_map, resolve_classes  # noqa: E402

NAMES = ["background", "water", "field"]
T = from_origin(500000, 4000000, 10, 10)  # 10 m pixels, UTM 10N


def _class_map(path, crs="EPSG:32610", transform=T):
    a = np.full((100, 80), 255, np.uint8)
    a[5:90, 10:20] = 1  # a tall bar: crosses every seam of 7- and 16-row strips
    a[30:60, 30:70] = 2  # a field with a background hole
    a[40:50, 40:50] = 0
    a[70:95, 30:60] = 1
    a[70:80, 60:62] = 2  # touches the water above only at a corner
    a[69, 62] = 2
    a[94, 70] = 2  # a one-pixel speck (100 m^2)
    a[10:30, 50:70] = 1  # a ring around a no-data hole, cut by seams
    a[15:25, 55:65] = 255
    a[0:3, 0:80] = 0  # a band along the top edge
    with rasterio.open(path, "w", driver="GTiff", height=a.shape[0], width=a.shape[1], count=1, dtype="uint8",
                       crs=crs, transform=transform, nodata=255) as dst:
        dst.write(a, 1)
        dst.update_tags(1, class_names=json.dumps(NAMES))
    return a


def _rasterize_back(fc, shape, transform):
    back = np.full(shape, 255, np.uint8)
    for f in fc["features"]:
        m = rasterize([f["geometry"]], out_shape=shape, transform=transform).astype(bool)
        assert (back[m] == 255).all(), "two polygons cover one pixel"
        back[m] = f["properties"]["class_id"]
    return back


@pytest.mark.parametrize("strip_rows", [1, 7, 16, 1000])
def test_polygons_rasterize_back_to_the_class_map_and_seams_are_joined(tmp_path, strip_rows):
    from scipy import ndimage

    path = str(tmp_path / "cm.tif")
    a = _class_map(path)
    fc = polygonize_class_map(path, strip_rows=strip_rows)
    assert np.array_equal(_rasterize_back(fc, a.shape, T), a)
    # one feature per 4-connected region of each class
    n_regions = sum(ndimage.label(a == c)[1] for c in range(3))
    assert len(fc["features"]) == n_regions == 9
    assert all(f["geometry"]["type"] == "Polygon" for f in fc["features"])
    bar = [f for f in fc["features"] if f["properties"]["class_id"] == 1 and
           min(x for x, _ in f["geometry"]["coordinates"][0]) == 500100]
    assert len(bar) == 1 and bar[0]["properties"]["area_m2"] == 85 * 10 * 100  # 850 px of 100 m^2
    ring = [f for f in fc["features"] if f["properties"]["class_id"] == 1 and len(f["geometry"]["coordinates"]) == 2]
    assert len(ring) == 1  # the hole survived the seams
    assert {f["properties"]["class"] for f in fc["features"]} == set(NAMES)  # from the file's tags
    assert fc["crs"]["properties"]["name"] == "EPSG:32610"


def test_the_strip_height_does_not_change_the_output(tmp_path):
    path = str(tmp_path / "cm.tif")
    _class_map(path)
    ref = polygonize_class_map(path, strip_rows=1000)
    for rows in (1, 3, 16):
        assert polygonize_class_map(path, strip_rows=rows) == ref


def test_min_area_classes_exclude_and_to_crs(tmp_path):
    path = str(tmp_path / "cm.tif")
    a = _class_map(path)
    fc = polygonize_class_map(path, strip_rows=7, min_area_m2=101.0)  # drops the 1-px speck and the 1-px hook
    assert len(fc["features"]) == 7
    assert min(f["properties"]["area_m2"] for f in fc["features"]) > 101
    fc = polygonize_class_map(path, strip_rows=7, exclude={0}, class_names=["bg", "w", "f"])
    assert {f["properties"]["class"] for f in fc["features"]} == {"w", "f"}
    want = np.where(a == 0, 255, a)
    assert np.array_equal(_rasterize_back(fc, a.shape, T), want)
    fc = polygonize_class_map(path, strip_rows=7, classes={1})
    assert np.array_equal(_rasterize_back(fc, a.shape, T), np.where(a == 1, 1, 255))
    ll = polygonize_class_map(path, strip_rows=7, to_crs="EPSG:4326")
    assert ll["crs"]["properties"]["name"] == "EPSG:4326"
    x, y = ll["features"][0]["geometry"]["coordinates"][0][0]
    assert -124 < x < -122 and 36 < y < 37


def test_class_selection_by_name_or_id_and_its_errors():
    assert resolve_classes(["water", "2"], NAMES) == {1, 2}
    assert resolve_classes(None, NAMES) is None
    with pytest.raises(PolygonRequestError, match="'lake' is not a class name .*use one of them or a class id"):
        resolve_classes(["lake"], NAMES)
    with pytest.raises(PolygonRequestError, match="class id 3 is not a class"):
        resolve_classes([3], NAMES)
    with pytest.raises(PolygonRequestError, match="class names are unknown: give --class-names"):
        resolve_classes(["water"], None)
