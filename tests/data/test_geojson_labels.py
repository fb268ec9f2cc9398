"""GeoJSON labels (d2geo.data.geojson_labels): the file's CRS or RFC 7946's default is used and
reprojected, labels that touch nothing and swapped lat/lon are refused naming the file and the
feature, and polygon holes stay holes in the masks."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")
rasterio = pytest.importorskip("rasterio")

from rasterio.transform import from_origin  # noqa: E402
from rasterio.warp import transform as warp  # noqa: E402

from d2geo.data.datasets import geojson_to_annotations  # noqa: E402
from d2geo.data.geotiff import GeoTiffError, apply_affine  # noqa: E402
from d2geo.data.mapper import GeoDatasetMapper  # noqa: E402
from helpers import write_tif  # noqa: E402

UTM10 = "EPSG:32610"
TR = from_origin(500_000, 4_000_000, 10, 10)  # 10 m pixels, UTM 10N (about 36.1 N, 123 W)


def _ring_px(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]


def _ring_in(crs, ring_px, transform=TR):
    xs, ys = apply_affine(transform, [p[0] for p in ring_px], [p[1] for p in ring_px])
    if crs != UTM10:
        xs, ys = warp(UTM10, crs, xs.tolist(), ys.tolist())
    return [[float(x), float(y)] for x, y in zip(xs, ys)]


def _fc(*rings_per_feature, crs_member=None):
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": f"f{i}", "properties": {"category_id": 0},
         "geometry": {"type": "Polygon", "coordinates": rings}} for i, rings in enumerate(rings_per_feature)]}
    if crs_member:
        fc["crs"] = {"type": "name", "properties": {"name": crs_member}}
    return fc


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def test_rfc7946_lonlat_labels_land_on_a_utm_image(tmp_path):
    """A GeoJSON without a crs member is longitude/latitude (RFC 7946): it used to be read in the
    image's CRS, which put every polygon ~4000 km off the image (0 instances, no word)."""
    image = write_tif(tmp_path / "img.tif", np.ones((3, 64, 64), np.float32) * 0.1, crs=UTM10, transform=TR)
    path = _write(tmp_path / "lonlat.geojson", _fc([_ring_in("EPSG:4326", _ring_px(10, 12, 30, 40))]))
    (anno,) = geojson_to_annotations(path, TR, crs=rasterio.crs.CRS.from_string(UTM10), image_shape=(64, 64))
    np.testing.assert_allclose(anno["bbox"], [10, 12, 30, 40], atol=1e-3)
    d = GeoDatasetMapper(is_train=True, use_instance_mask=True)({"file_name": image, "geojson_file_name": path})
    assert len(d["instances"]) == 1
    np.testing.assert_allclose(d["instances"].gt_boxes.tensor[0].tolist(), [10, 12, 30, 40], atol=1e-3)


def test_a_crs_member_of_another_utm_zone_is_reprojected(tmp_path):
    ring = _ring_in("EPSG:32611", _ring_px(5, 6, 20, 25))
    (anno,) = geojson_to_annotations(_fc([ring], crs_member="urn:ogc:def:crs:EPSG::32611"), TR,
                                     crs=rasterio.crs.CRS.from_string(UTM10), image_shape=(64, 64))
    np.testing.assert_allclose(anno["bbox"], [5, 6, 20, 25], atol=1e-3)
    # a crs member that contradicts geojson_crs is refused
    with pytest.raises(GeoTiffError, match="EPSG:32611 .* but geojson_crs='EPSG:4326' was given"):
        geojson_to_annotations(_fc([ring], crs_member="EPSG:32611"), TR, crs=rasterio.crs.CRS.from_string(UTM10),
                               geojson_crs="EPSG:4326")


def test_a_label_file_that_touches_nothing_is_refused_naming_both_extents(tmp_path):
    image = write_tif(tmp_path / "img.tif", np.ones((3, 64, 64), np.float32) * 0.1, crs=UTM10, transform=TR)
    far = _ring_in("EPSG:4326", _ring_px(500, 500, 520, 530))  # 5 km away
    path = _write(tmp_path / "elsewhere.geojson", _fc([far], [far]))
    with pytest.raises(GeoTiffError) as e:
        GeoDatasetMapper(is_train=True)({"file_name": image, "geojson_file_name": path})
    msg = str(e.value)
    assert msg.startswith(f"{path}: none of its 2 features touches the image")
    assert "in OGC:CRS84" in msg and "the image spans x 500000..500640, y 3.99936e+06..4e+06 in EPSG:32610" in msg
    # an empty collection is fine (a sample without objects)
    assert geojson_to_annotations({"type": "FeatureCollection", "features": []}, TR, image_shape=(64, 64)) == []


def test_swapped_lat_lon_names_the_file_and_the_feature(tmp_path):
    """Was: 'PROJ: utm: Invalid latitude' from inside rasterio, no file or feature named."""
    good = _ring_in("EPSG:4326", _ring_px(10, 12, 30, 40))
    swapped = [[lat, lon] for lon, lat in good]
    path = _write(tmp_path / "swapped.geojson", _fc([good], [swapped]))
    for kwargs in ({"geojson_crs": "EPSG:4326"}, {}):
        with pytest.raises(GeoTiffError) as e:
            geojson_to_annotations(path, TR, crs=rasterio.crs.CRS.from_string(UTM10), **kwargs)
        msg = str(e.value)
        assert msg.startswith(f"{path}: feature 1 (id 'f1') has the point [36.1")
        assert "latitude and longitude look swapped" in msg
    # swapped where both numbers are valid latitudes (an image at 45 N, 15 E): the swapped
    # features touch nothing, and the message says that swapping them back would fit
    tr33 = from_origin(500_000, 5_000_000, 10, 10)
    xs, ys = apply_affine(tr33, [10, 30, 30, 10, 10], [12, 12, 40, 40, 12])
    lon, lat = warp("EPSG:32633", "EPSG:4326", xs.tolist(), ys.tolist())
    with pytest.raises(GeoTiffError, match="With x and y swapped the features would lie on the image"):
        geojson_to_annotations(_fc([[[b, a] for a, b in zip(lon, lat)]]), tr33,
                               crs=rasterio.crs.CRS.from_string("EPSG:32633"), image_shape=(64, 64))


def test_polygon_holes_are_subtracted_from_the_masks(tmp_path):
    """A 30 x 30 px square with a 10 x 10 px hole is 800 px, not 900 (holes were dropped)."""
    tr = from_origin(500_000, 4_000_000, 1, 1)
    image = write_tif(tmp_path / "img.tif", np.ones((3, 64, 64), np.float32) * 0.1, crs=UTM10, transform=tr)
    outer = _ring_in(UTM10, _ring_px(10, 10, 40, 40), tr)
    hole = _ring_in(UTM10, _ring_px(20, 20, 30, 30), tr)
    path = _write(tmp_path / "holes.geojson", _fc([outer, hole], crs_member="EPSG:32610"))
    d = GeoDatasetMapper(is_train=True, use_instance_mask=True)({"file_name": image, "geojson_file_name": path})
    masks = d["instances"].gt_masks
    assert float(masks.area()[0]) == pytest.approx(800)
    from detectron2.structures.masks import polygons_to_bitmask as to_bitmask

    bitmask = to_bitmask(masks.polygons[0], 64, 64)
    assert int(bitmask.sum()) == 800 and not bitmask[25, 25] and bitmask[15, 15]
    np.testing.assert_allclose(d["instances"].gt_boxes.tensor[0].tolist(), [10, 10, 40, 40], atol=1e-6)
    # with a flip the hole moves with the polygon
    import detectron2.data.transforms as T

    flipped = GeoDatasetMapper(is_train=True, use_instance_mask=True, augmentations=[T.RandomFlip(prob=1.0)])(
        {"file_name": image, "geojson_file_name": path})
    assert int(to_bitmask(flipped["instances"].gt_masks.polygons[0], 64, 64).sum()) == 800


def test_coco_rle_with_polygon_masks_says_to_use_bitmask(tmp_path):
    """Was detectron2's 'Failed to use mask_format=='polygon' from the given annotations!'."""
    import pycocotools.mask as mask_util
    from detectron2.structures import BoxMode

    image = write_tif(tmp_path / "rle.tif", np.ones((3, 32, 32), np.float32) * 0.1, crs=UTM10, transform=TR)
    m = np.zeros((32, 32), np.uint8, order="F")
    m[5:15, 5:20] = 1
    rle = mask_util.encode(m)
    rle["counts"] = rle["counts"].decode()
    d = {"file_name": image, "annotations": [{"bbox": [5, 5, 15, 10], "bbox_mode": BoxMode.XYWH_ABS, "id": 7,
                                              "segmentation": rle, "category_id": 0, "iscrowd": 0}]}
    with pytest.raises(GeoTiffError, match=r"annotation id=7 of .*rle.tif has a COCO RLE segmentation .* "
                                           r"instance_mask_format='bitmask'"):
        GeoDatasetMapper(is_train=True, use_instance_mask=True)(d)
    out = GeoDatasetMapper(is_train=True, use_instance_mask=True, instance_mask_format="bitmask")(d)
    assert int(out["instances"].gt_masks.tensor.sum()) == 150
