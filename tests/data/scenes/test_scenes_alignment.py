"""Scene windows and vector labels land on the right pixels: an EPSG:4326 square rasterized
in two UTM zones against an independent per-pixel test, instance polygons and boxes in window
pixels, the edge rule, all_touched, overlapping polygons, multipolygons and holes."""
from __future__ import annotations

import numpy as np
import pytest
import shapely
from pyproj import Transformer

from d2geo.data.geotiff import GeoTiffError
from d2geo.data.mapper import GeoDatasetMapper
from d2geo.data.scenes import build_scene_datasets, register_geo_scenes

import scene_fixtures  # this folder's helpers and fixtures
from scene_fixtures import ZONES, lonlat_of, utm_of, write_labels

_clean_catalog = scene_fixtures._clean_catalog
two_zones = scene_fixtures.two_zones


def _mapper(**kw):
    return GeoDatasetMapper(is_train=False, augmentations=[], **kw)


def _lonlat_square(crs, col, row, half_deg=(0.004, 0.003), transform=None):
    lon, lat = lonlat_of(crs, *(transform * (col, row)))
    dx, dy = half_deg
    return shapely.Polygon([(lon - dx, lat - dy), (lon + dx * 1.13, lat - dy), (lon + dx * 1.13, lat + dy * 0.91),
                            (lon - dx, lat + dy * 0.91)])


def test_semantic_square_in_lonlat_lands_on_the_right_pixels_in_two_utm_zones(two_zones, tmp_path):
    import rasterio

    feats = []
    transforms = {}
    for i, (path, (crs, _)) in enumerate(zip(two_zones, ZONES)):
        with rasterio.open(path) as src:
            transforms[path] = src.transform
        feats.append((_lonlat_square(crs, 150.3 - 40 * i, 140.7, transform=transforms[path]), {"cls": "ab"[i]}))
    gpkg = write_labels(tmp_path / "labels.gpkg", feats)
    names = register_geo_scenes("_align_sem", two_zones, gpkg, task="semantic", classes=["bg", "a", "b"],
                                class_key="cls", background="bg", window=128, sampler="grid")
    assert names == ["_align_sem"]
    from detectron2.data import DatasetCatalog

    dicts = DatasetCatalog.get("_align_sem")
    assert len(dicts) == 2 * 9  # starts 0, 128, 172 in both directions, per scene
    mapper = _mapper()
    seen = {1: 0, 2: 0}
    for d in dicts:
        out = mapper(d)
        col, row, w, h = d["window"]
        image = out["image"].numpy()
        rr, cc = np.mgrid[0:h, 0:w]
        # the mapper read exactly this window (band 1 = column + 1, band 2 = row + 1)
        np.testing.assert_array_equal(image[0], cc + col + 1)
        np.testing.assert_array_equal(image[1], rr + row + 1)
        # independent truth: pixel centres to lon/lat, inside the square drawn in lon/lat
        crs = ZONES[two_zones.index(d["file_name"])][0]
        t = transforms[d["file_name"]]
        xs = t.c + t.a * (cc + col + 0.5)
        ys = t.f + t.e * (rr + row + 0.5)
        lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs, ys)
        expected = np.zeros((h, w), np.int64)
        for g, props in feats:
            inside = shapely.contains_xy(g, lon, lat)
            expected[inside] = 1 + "ab".index(props["cls"])
        np.testing.assert_array_equal(out["sem_seg"].numpy(), expected)
        for k in seen:
            seen[k] += int((expected == k).sum())
    assert seen[1] > 1000 and seen[2] > 1000  # each square is in its own zone's scene, and big


def test_instance_polygons_and_boxes_are_in_window_pixels(two_zones, tmp_path):
    import rasterio

    path, (crs, _) = two_zones[1], ZONES[1]
    with rasterio.open(path) as src:
        t = src.transform
    square = _lonlat_square(crs, 40.2, 60.6, half_deg=(0.0015, 0.001), transform=t)
    geojson = write_labels(tmp_path / "objects.geojson", [(square, {"kind": "house"})], driver="GeoJSON")
    datasets, meta, _, _ = build_scene_datasets("_align_inst", [path], geojson, task="instance",
                                                classes=["house"], window=128, sampler="grid")
    dicts = datasets["_align_inst"]
    assert meta["thing_classes"] == ["house"]
    holding = [d for d in dicts if d["annotations"]]
    # expected: the lon/lat vertices -> UTM -> scene pixels -> minus the window offset
    lon, lat = np.asarray(square.exterior.coords[:-1]).T
    x, y = utm_of(crs, lon, lat)
    px = (np.asarray(x) - t.c) / t.a
    py = (np.asarray(y) - t.f) / t.e
    assert holding
    for d in holding:
        col, row, w, h = d["window"]
        (a,) = d["annotations"]
        if px.min() >= col and px.max() <= col + w and py.min() >= row and py.max() <= row + h:
            np.testing.assert_allclose(a["bbox"], [px.min() - col, py.min() - row, px.max() - col,
                                                   py.max() - row], atol=1e-3)
            got = shapely.Polygon(np.asarray(a["segmentation"][0]).reshape(-1, 2))
            want = shapely.Polygon(np.column_stack([px - col, py - row]))
            assert len(got.exterior.coords) == 5  # the same four corners, in another order
            # vertices rounded to 1e-3 px: at most ~5e-4 px off along the ~90 px outline
            assert got.symmetric_difference(want).area < 0.1 and abs(got.area - want.area) < 0.05
            assert a["category_id"] == 0
    # through the mapper: detectron2 boxes equal the annotation's
    mapper = GeoDatasetMapper(is_train=True, augmentations=[], use_instance_mask=True)
    out = mapper(holding[0])
    np.testing.assert_allclose(out["instances"].gt_boxes.tensor.numpy()[0], holding[0]["annotations"][0]["bbox"],
                               atol=1e-3)


def _pixel_box(t, c0, r0, c1, r1):
    (x0, y0), (x1, y1) = t * (c0, r0), t * (c1, r1)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def test_objects_cut_by_the_window_edge_kept_or_dropped_by_visible_fraction(two_zones, tmp_path):
    import rasterio

    path, (crs, _) = two_zones[0], ZONES[0]
    with rasterio.open(path) as src:
        t = src.transform
    # window (0, 0, 128, 128): object A has 60% inside (cols 116..136), B 40% (cols 120..140)
    a = _pixel_box(t, 116, 20, 136, 30)
    b = _pixel_box(t, 120, 60, 140, 70)
    labels = write_labels(tmp_path / "cut.geojson", [(a, {"c": "x"}), (b, {"c": "x"})], crs=crs, driver="GeoJSON")
    datasets, *_ = build_scene_datasets("_cut", [path], labels, task="instance", classes=["x"], window=128,
                                        sampler="grid", min_visible=0.5)
    first = next(d for d in datasets["_cut"] if d["window"][:2] == (0, 0))
    (kept,) = first["annotations"]
    np.testing.assert_allclose(kept["bbox"], [116, 20, 128, 30], atol=1e-6)  # clipped to the window
    datasets, *_ = build_scene_datasets("_cut", [path], labels, task="instance", classes=["x"], window=128,
                                        sampler="grid", min_visible=0.3)
    first = next(d for d in datasets["_cut"] if d["window"][:2] == (0, 0))
    assert len(first["annotations"]) == 2


def _sem(path, labels, crs, **kw):
    datasets, *_ = build_scene_datasets("_s", [path], labels, task="semantic", classes=["bg", "one", "two"],
                                        class_key="c", window=128, sampler="grid", **kw)
    d = next(d for d in datasets["_s"] if d["window"][:2] == (0, 0))
    return _mapper()(d)["sem_seg"].numpy()


def test_all_touched_and_overlapping_polygons(two_zones, tmp_path):
    import rasterio

    path, (crs, _) = two_zones[0], ZONES[0]
    with rasterio.open(path) as src:
        t = src.transform
    tiny = _pixel_box(t, 100.6, 100.6, 101.4, 101.4)  # covers no pixel centre, touches 4 pixels
    first = _pixel_box(t, 20, 20, 40, 40)
    second = _pixel_box(t, 30, 30, 50, 50)
    f = write_labels(tmp_path / "a.geojson", [(tiny, {"c": "one"}), (first, {"c": "one"}), (second, {"c": "two"})],
                     crs=crs, driver="GeoJSON")
    plain = _sem(path, f, crs)
    touched = _sem(path, f, crs, all_touched=True)
    assert (plain[100:102, 100:102] == 255).all()  # no background class given: unlabelled = ignore
    assert (touched[100:102, 100:102] == 1).all() and (touched[99, 99:103] == 255).all()
    # the later polygon wins where they overlap
    assert (plain[30:40, 30:40] == 2).all() and (plain[20:30, 20:30] == 1).all() and (plain[40:50, 40:50] == 2).all()
    g = write_labels(tmp_path / "b.geojson", [(second, {"c": "two"}), (first, {"c": "one"})], crs=crs,
                     driver="GeoJSON")
    assert (_sem(path, g, crs)[30:40, 30:40] == 1).all()


def test_multipolygons_and_holes(two_zones, tmp_path):
    import rasterio

    path, (crs, _) = two_zones[0], ZONES[0]
    with rasterio.open(path) as src:
        t = src.transform
    outer = _pixel_box(t, 10, 10, 50, 50)
    hole = _pixel_box(t, 20, 20, 30, 30)
    ring = outer.difference(hole)
    multi = shapely.MultiPolygon([_pixel_box(t, 60, 10, 70, 20), _pixel_box(t, 80, 10, 90, 20)])
    f = write_labels(tmp_path / "m.geojson", [(ring, {"c": "one"}), (multi, {"c": "two"})], crs=crs,
                     driver="GeoJSON")
    sem = _sem(path, f, crs, background="bg")
    assert (sem[20:30, 20:30] == 0).all() and (sem[10:20, 10:50] == 1).all()
    assert (sem[10:20, 60:70] == 2).all() and (sem[10:20, 80:90] == 2).all() and (sem[10:20, 70:80] == 0).all()
    datasets, *_ = build_scene_datasets("_h", [path], f, task="instance", classes=["one", "two"], class_key="c",
                                        window=128, sampler="grid")
    d = next(d for d in datasets["_h"] if d["window"][:2] == (0, 0))
    ring_anno, multi_anno = d["annotations"]
    assert isinstance(ring_anno["segmentation"], dict)  # a hole: RLE
    assert len(multi_anno["segmentation"]) == 2  # two parts, two polygons
    out = GeoDatasetMapper(is_train=True, augmentations=[], use_instance_mask=True,
                           instance_mask_format="bitmask")(d)
    masks = out["instances"].gt_masks.tensor.numpy()
    assert masks[0][25, 25] == 0 and masks[0][15, 15] == 1 and masks[0].sum() == 40 * 40 - 100
    with pytest.raises(GeoTiffError, match="bitmask"):
        GeoDatasetMapper(is_train=True, augmentations=[], use_instance_mask=True)(d)


def test_label_raster_on_another_grid_is_resampled_nearest_onto_each_window(two_zones, tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    path, (crs, origin) = two_zones[0], ZONES[0]
    # a 20 m label grid over the 10 m scene, starting 40 m west and north of it
    rows, cols = np.mgrid[0:160, 0:160]
    values = ((rows + cols) % 3).astype(np.uint8)
    label_path = str(tmp_path / "labels_20m.tif")
    with rasterio.open(label_path, "w", driver="GTiff", width=160, height=160, count=1, dtype="uint8", crs=crs,
                       transform=from_origin(origin[0] - 40, origin[1] + 40, 20, 20), nodata=255) as dst:
        dst.write(values[None])
    datasets, *_ = build_scene_datasets("_lr", [path], label_path, task="semantic", classes=["a", "b", "c"],
                                        window=128, sampler="grid")
    mapper = _mapper()
    for d in datasets["_lr"]:
        col, row, w, h = d["window"]
        rr, cc = np.mgrid[0:h, 0:w]
        # the centre of scene pixel (r, c) lies (10 r + 5 + 40) m below the label grid's top edge
        expected = values[((rr + row) * 10 + 5 + 40) // 20, ((cc + col) * 10 + 5 + 40) // 20]
        np.testing.assert_array_equal(mapper(d)["sem_seg"].numpy(), expected)
