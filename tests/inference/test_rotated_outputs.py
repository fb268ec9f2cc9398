"""Oriented detections over scenes: window boxes into scene pixels, rotated NMS across window
seams (intersection over the smaller box), rotated polygons in map coordinates that land back on the boxes."""
import numpy as np
import pytest

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")
pytest.importorskip("rasterio")
pytest.importorskip("shapely")

import torch  # noqa: E402
from detectron2.layers.rotated_boxes import pairwise_iou_rotated  # noqa: E402
from detectron2.structures import Instances, RotatedBoxes  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

from d2geo.data.rotated import geojson_to_rotated_annotations  # noqa: E402
from d2geo.inference.rotated import (  # noqa: E402
    RotatedDetections,
    merge_rotated_detections,
    rotated_detections_to_geojson,
    window_rotated_detections,
)


def _instances(boxes, scores, classes, size=64):
    inst = Instances((size, size))
    inst.pred_boxes = RotatedBoxes(torch.tensor(boxes, dtype=torch.float32))
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.pred_classes = torch.tensor(classes)
    return inst


def test_a_ship_on_a_window_seam_is_kept_once():
    # windows of 64 px, the second starting at column 48: a ship at scene x=56 is in both
    ship = [56.0, 20.0, 24.0, 6.0, 20.0]
    a = window_rotated_detections(_instances([ship, [10, 10, 8, 4, 0]], [0.9, 0.8], [0, 1]), row=0, col=0)
    b_ship = [ship[0] - 48 + 0.4, ship[1] - 0.3, 23.0, 6.2, 21.0]  # the same ship, seen slightly differently
    b = window_rotated_detections(_instances([b_ship, b_ship], [0.7, 0.6], [0, 1]), row=0, col=48)
    np.testing.assert_allclose(b.boxes[0, :2], [56.4, 19.7], atol=1e-5)
    merged = merge_rotated_detections([a, b, RotatedDetections()])
    # the duplicate ship (same class) goes, the better score stays; another class at the place stays
    assert len(merged) == 3
    assert merged.scores.tolist() == pytest.approx([0.9, 0.8, 0.6])
    assert merged.classes.tolist() == [0, 1, 1]
    np.testing.assert_allclose(merged.boxes[0], ship, atol=1e-5)
    assert len(merge_rotated_detections([])) == 0
    with pytest.raises(ValueError, match="dedup_threshold"):
        merge_rotated_detections([a], dedup_threshold=1.5)


def test_geojson_polygons_land_on_the_boxes_in_the_scene_crs_and_in_lon_lat():
    transform = from_origin(500_000.0, 4_200_000.0, 10.0, 10.0)
    dets = RotatedDetections(np.array([[30.0, 25.0, 20.0, 6.0, -40.0], [70.0, 60.0, 12.0, 6.0, 75.0]]),
                             np.array([0.95, 0.6]), np.array([0, 1]))
    fc = rotated_detections_to_geojson(dets, transform, "EPSG:32610", class_names=["ship", "vehicle"])
    assert [f["properties"] for f in fc["features"]] == [
        {"category_id": 0, "score": 0.95, "class": "ship", "cx": 30.0, "cy": 25.0, "w": 20.0, "h": 6.0, "angle": -40.0},
        {"category_id": 1, "score": 0.6, "class": "vehicle", "cx": 70.0, "cy": 60.0, "w": 12.0, "h": 6.0,
         "angle": 75.0}]
    assert fc["crs"]["properties"]["name"] == "EPSG:32610"
    import shapely.geometry

    poly = shapely.geometry.shape(fc["features"][0]["geometry"])
    assert poly.area == pytest.approx(20 * 6 * 100, rel=1e-6)  # 10 m pixels
    x, y = transform * (30.0, 25.0)
    assert poly.centroid.x == pytest.approx(x) and poly.centroid.y == pytest.approx(y)
    # back into pixels (from lon/lat too): the same rotated boxes
    for out, kw in ((fc, {}), (rotated_detections_to_geojson(dets, transform, "EPSG:32610", to_crs="EPSG:4326"),
                              {"geojson_crs": "EPSG:4326"})):
        annos = geojson_to_rotated_annotations(out, transform, crs="EPSG:32610", **kw)
        back = torch.tensor([a["bbox"] for a in annos], dtype=torch.float32)
        iou = pairwise_iou_rotated(torch.tensor(dets.boxes, dtype=torch.float32), back).diagonal()
        assert (iou > 0.98).all(), iou
