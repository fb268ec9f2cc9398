"""Bad inputs of register_geo_scenes: each a clear SceneError naming the problem and the fix,
with nothing registered and nothing written (docs/bad_inputs.md)."""
from __future__ import annotations

import os

import pytest
import shapely

from d2geo.data.scenes import SceneError, open_scenes, register_geo_scenes
from d2geo.data.scenes.index import reproject_geometry

import scene_fixtures  # this folder's helpers and fixtures
from scene_fixtures import ZONES, write_cog, write_labels

_clean_catalog = scene_fixtures._clean_catalog
two_zones = scene_fixtures.two_zones


def _lonlat_box(path, c0, r0, c1, r1):
    s = open_scenes([path])[0]
    (x0, y0), (x1, y1) = s.transform * (c0, r0), s.transform * (c1, r1)
    return reproject_geometry(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), s.crs, "EPSG:4326")


def _fails(match, *args, out=None, **kwargs):
    """register_geo_scenes raises SceneError matching ``match``, registers nothing, writes nothing."""
    from detectron2.data import DatasetCatalog

    before = set(DatasetCatalog.list())
    out = out or os.path.join(os.path.dirname(os.fspath(args[1][0])), "run_out")
    with pytest.raises(SceneError, match=match) as info:
        register_geo_scenes(*args, output_dir=out, **kwargs)
    assert set(DatasetCatalog.list()) == before
    assert not os.path.exists(out)
    return str(info.value)


def test_labels_touching_no_scene_name_both_extents(two_zones, tmp_path):
    far = write_labels(tmp_path / "far.gpkg", [(shapely.box(100.0, 10.0, 100.1, 10.1), {"c": "a"})])
    msg = _fails("touch none of the 2 scenes", "_b1", two_zones, far, task="semantic", classes=["a"])
    assert "(100.00000, 10.00000, 100.10000, 10.10000)" in msg  # the labels' extent
    assert "(2.9" in msg and "9.0" in msg  # the scenes' extent (lon 2.99 .. 9.02)


@pytest.mark.filterwarnings("ignore:.crs. was not provided:UserWarning")
def test_vectors_without_crs(two_zones, tmp_path):
    import geopandas as gpd

    path = tmp_path / "nocrs.shp"
    gpd.GeoDataFrame({"c": ["a"]}, geometry=[shapely.box(0, 0, 1, 1)], crs=None).to_file(path, engine="pyogrio")
    _fails("has no CRS.*set_crs", "_b2", two_zones, path, task="semantic", classes=["a"])


def test_classes_missing_from_classes(two_zones, tmp_path):
    f = write_labels(tmp_path / "l.gpkg", [(_lonlat_box(two_zones[0], 10, 10, 50, 50), {"c": "a"}),
                                           (_lonlat_box(two_zones[0], 60, 10, 90, 50), {"c": "zz"}),
                                           (_lonlat_box(two_zones[0], 60, 60, 90, 90), {"c": "zz"})])
    msg = _fails("values .* are not in classes", "_b3", two_zones, f, task="semantic", classes=["a", "b"],
                 class_key="c")
    assert "'zz': 2" in msg
    _fails("give class_key", "_b3", two_zones, f, task="semantic", classes=["a", "b"])
    _fails("no column 'kind'", "_b3", two_zones, f, task="semantic", classes=["a", "b"], class_key="kind")


def test_scenes_with_different_band_sets(tmp_path):
    crs, origin = ZONES[0]
    a = write_cog(tmp_path / "a.tif", crs=crs, origin=origin, bands=3)
    b = write_cog(tmp_path / "b.tif", crs=crs, origin=(origin[0] + 5000, origin[1]), bands=4)
    f = write_labels(tmp_path / "l.gpkg", [(_lonlat_box(a, 10, 10, 50, 50), {"c": "a"})])
    _fails("hold different bands", "_b4", [a, b], f, task="semantic", classes=["a"])


def test_window_larger_than_a_scene(two_zones, tmp_path):
    f = write_labels(tmp_path / "l.gpkg", [(_lonlat_box(two_zones[0], 10, 10, 50, 50), {"c": "a"})])
    _fails("windows of 512 x 512 px are larger than scene .*300 x 300", "_b5", two_zones, f, task="semantic",
           classes=["a"], window=512)


def test_split_leaving_one_side_empty(two_zones, tmp_path):
    f = write_labels(tmp_path / "l.gpkg", [(_lonlat_box(p, 5, 5, 295, 295), {"c": "a"}) for p in two_zones])
    # 3 km scenes, 1 km blocks, 64 px (640 m) windows and buffer: the val blocks keep no room for a window
    _fails("gets no window", "_b6", two_zones[:1], f, task="semantic", classes=["a"], window=64, sampler="grid",
           split={"blocks": 1000, "fractions": {"train": 0.9, "val": 0.1}})
    _fails("too few for the splits", "_b6", two_zones[:1], f, task="semantic", classes=["a"], window=64,
           split={"blocks": 1_000_000, "fractions": {"train": 0.8, "val": 0.2}}, count=10)
    _fails("less than one window", "_b6", two_zones[:1], f, task="semantic", classes=["a"], window=64,
           split={"blocks": 1000, "buffer": 100}, count=10)


def test_zero_windows_with_objects(two_zones, tmp_path):
    # the one object sits in scene 0, cut by every grid window to less than min_visible
    f = write_labels(tmp_path / "l.gpkg", [(_lonlat_box(two_zones[0], 120, 120, 136, 136), {"c": "a"})])
    _fails("none of the .* windows .* contains a label", "_b7", two_zones, f, task="instance", classes=["a"],
           window=128, stride=128, sampler="grid", min_visible=0.9)


def test_invalid_geometries_repaired_or_refused_naming_the_feature(two_zones, tmp_path, caplog):
    s = open_scenes([two_zones[0]])[0]
    x0, y0 = s.transform * (20, 20)
    x1, y1 = s.transform * (60, 60)
    bowtie = shapely.Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1)])  # self-intersecting
    f = write_labels(tmp_path / "bow.gpkg", [(_lonlat_box(two_zones[0], 100, 100, 120, 120), {"c": "a"}),
                                             (reproject_geometry(bowtie, s.crs, "EPSG:4326"), {"c": "a"})])
    msg = _fails("1 invalid geometries .*feature 2 of .*bow.gpkg.*Self-intersection", "_b8", two_zones, f,
                 task="semantic", classes=["a"], invalid="raise")
    assert "make_valid" in msg
    import logging

    with caplog.at_level(logging.WARNING):
        names = register_geo_scenes("_b8", two_zones, f, task="semantic", classes=["a"], window=128, sampler="grid")
    assert names == ["_b8"] and "repaired 1 invalid label geometries" in caplog.text and "feature 2" in caplog.text
    line = write_labels(tmp_path / "line.gpkg", [(shapely.LineString([(3, 45), (3.01, 45.01)]), {"c": "a"})])
    _fails("feature 1 of .*line.gpkg is a LineString", "_b9", two_zones, line, task="semantic", classes=["a"])
