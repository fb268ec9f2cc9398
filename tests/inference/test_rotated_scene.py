"""Rotated detectors over whole scenes: ``predict_scene`` / ``predict_region`` write rotated
polygons (GeoJSON and GeoParquet) that land on the objects in map coordinates, in the scene CRS
and after ``to_crs``, with detectron2's angle convention; an object on a window seam is
reported once; requests that cannot work are refused before any window."""
import json
import math
import os

import numpy as np
import pytest

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")
pytest.importorskip("rasterio")
shapely = pytest.importorskip("shapely")
pytest.importorskip("geopandas")
pytest.importorskip("pyarrow")

import torch  # noqa: E402
from detectron2.layers.rotated_boxes import pairwise_iou_rotated  # noqa: E402
from detectron2.structures import Boxes, Instances, RotatedBoxes  # noqa: E402
from rasterio.transform import Affine, from_origin  # noqa: E402
from shapely import affinity  # noqa: E402
from shapely.geometry import Point, box as shapely_box, shape  # noqa: E402

from d2geo.data.rotated import corners_to_rotated_box  # noqa: E402
from d2geo.inference import SceneRequestError, predict_scene  # noqa: E402
from d2geo.inference.rotated import (  # noqa: E402
    RotatedDetections,
    merge_rotated_detections,
    rotated_corners,
    rotated_detections_to_geojson,
    window_rotated_detections,
)
from helpers import write_tif  # noqa: E402

GSD = 10.0
ORIGIN = (500_000.0, 4_200_000.0)  # UTM 31N: near 3.0 E, 37.9 N
CRS = "EPSG:32631"


def _instances(boxes, scores, classes, size=96):
    inst = Instances((size, size))
    inst.pred_boxes = RotatedBoxes(torch.tensor(np.asarray(boxes, np.float32).reshape(-1, 5)))
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
    return inst


def _expected_map_polygon(cx, cy, w, h, angle, transform):
    """The box in map coordinates built independently of d2geo: an axis-aligned w x h
    rectangle at the centre's map position, turned by ``angle`` counter-clockwise (shapely,
    y up: a north-up map shows what the image shows)."""
    mx, my = transform * (cx, cy)
    rect = shapely_box(mx - w * GSD / 2, my - h * GSD / 2, mx + w * GSD / 2, my + h * GSD / 2)
    return affinity.rotate(rect, angle, origin=(mx, my))


def test_a_rotated_box_in_window_pixels_lands_on_its_map_coordinates_in_utm_and_lon_lat():
    from pyproj import Transformer

    transform = from_origin(*ORIGIN, GSD, GSD)
    # the box at (20, 30) of the window whose top-left is scene pixel (row 64, col 32)
    win_box = [20.0, 30.0, 24.0, 6.0, 35.0]
    dets = window_rotated_detections(_instances([win_box], [0.9], [0]), row=64, col=32)
    np.testing.assert_allclose(dets.boxes[0], [52.0, 94.0, 24.0, 6.0, 35.0])
    fc = rotated_detections_to_geojson(dets, transform, CRS, class_names=["ship", "vehicle"])
    feat = fc["features"][0]
    assert feat["properties"]["class"] == "ship" and feat["properties"]["score"] == pytest.approx(0.9)
    poly = shape(feat["geometry"])
    ring = feat["geometry"]["coordinates"][0]
    assert len(ring) == 5 and ring[0] == ring[-1] and poly.exterior.is_ccw  # RFC 7946 winding
    want = _expected_map_polygon(52.0, 94.0, 24.0, 6.0, 35.0, transform)
    assert poly.symmetric_difference(want).area < 1e-6 * want.area
    assert poly.centroid.x == pytest.approx(ORIGIN[0] + 52.0 * GSD) and \
        poly.centroid.y == pytest.approx(ORIGIN[1] - 94.0 * GSD)
    # --to-crs EPSG:4326: the corners are the UTM corners reprojected (pyproj, lon/lat order)
    fc4326 = rotated_detections_to_geojson(dets, transform, CRS, to_crs="EPSG:4326")
    assert fc4326["crs"]["properties"]["name"] == "EPSG:4326"
    got = np.array(fc4326["features"][0]["geometry"]["coordinates"][0])
    to_ll = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    lon, lat = to_ll.transform(*np.array(ring).T)
    np.testing.assert_allclose(got[:, 0], lon, atol=1e-9)
    np.testing.assert_allclose(got[:, 1], lat, atol=1e-9)
    assert 3.0 < got[:, 0].min() < got[:, 0].max() < 3.01 and 37.9 < got[:, 1].min() < 38.0


@pytest.mark.parametrize("angle", [30.0, -50.0, 75.0])
def test_the_angle_turns_counter_clockwise_as_in_detectron2(angle):
    # a thin box of length 40: which way its +w end points, by detectron2's own rotated IoU,
    # must be where d2geo's polygon (pixels through a north-up transform) puts it
    box = np.array([50.0, 50.0, 40.0, 4.0, angle])
    t = math.radians(angle)
    tip = (50 + 15 * math.cos(t), 50 - 15 * math.sin(t))  # counter-clockwise on the screen: y goes up
    mirror = (50 + 15 * math.cos(t), 50 + 15 * math.sin(t))  # the clockwise reading
    probes = torch.tensor([[*tip, 2.0, 2.0, 0.0], [*mirror, 2.0, 2.0, 0.0]])
    iou = pairwise_iou_rotated(torch.tensor(box[None], dtype=torch.float32), probes)[0]
    assert iou[0] == pytest.approx(4 / 160, rel=1e-3) and iou[1] == 0  # the probe inside, its mirror outside
    transform = from_origin(*ORIGIN, GSD, GSD)
    fc = rotated_detections_to_geojson(RotatedDetections(box[None], np.ones(1), np.zeros(1, int)), transform, CRS)
    poly = shape(fc["features"][0]["geometry"])
    assert poly.contains(Point(*(transform * tip)))
    assert not poly.intersects(Point(*(transform * mirror)))
    # and in pixels (identity transform): the polygon is the one detectron2's boxes describe
    pix = shape(rotated_detections_to_geojson(RotatedDetections(box[None], np.ones(1), np.zeros(1, int)),
                                              Affine.identity())["features"][0]["geometry"])
    again = corners_to_rotated_box(np.array(pix.exterior.coords)[:4][None])
    assert pairwise_iou_rotated(torch.tensor(box[None], dtype=torch.float32),
                                torch.tensor(again, dtype=torch.float32))[0, 0] > 0.99


def test_a_copy_cut_by_a_window_edge_is_merged_into_the_whole_object():
    ship = np.array([96.0, 40.0, 30.0, 8.0, 0.0])  # scene pixels: centre on the edge of a window at x=96
    whole = RotatedDetections(ship[None], np.array([0.8]), np.array([0]), np.array([False]))
    # the left window sees the ship's left half (x 81..96) and is sure of it; the half touches its edge
    half = RotatedDetections(np.array([[88.5, 40.0, 15.0, 8.0, 0.0]]), np.array([0.95]), np.array([0]),
                             np.array([True]))
    assert pairwise_iou_rotated(torch.tensor(ship[None], dtype=torch.float32),
                                torch.tensor(half.boxes, dtype=torch.float32))[0, 0] <= 0.5 + 1e-6
    merged = merge_rotated_detections([half, whole])
    assert len(merged) == 1
    np.testing.assert_allclose(merged.boxes[0], ship)  # the untruncated copy, despite its lower score
    # another class at the place is another object
    other = RotatedDetections(ship[None], np.array([0.7]), np.array([1]))
    assert sorted(merge_rotated_detections([half, whole, other]).classes.tolist()) == [0, 1]


def test_window_detections_drop_low_scores_degenerate_boxes_and_no_data_and_mark_interior_edges():
    inst = _instances([[10, 10, 8, 4, 0], [50, 50, 8, 4, 0], [94, 50, 10, 4, 0], [60, 60, 0.0, 4, 0],
                       [30, 30, 8, 4, 0]], [0.9, 0.3, 0.9, 0.9, 0.9], [0, 0, 1, 0, 1])
    valid = np.ones((96, 96), bool)
    valid[25:35, 25:35] = False  # the last box is centred on no data
    d = window_rotated_detections(inst, row=0, col=64, shape=(96, 96), height=96, width=256, valid=valid,
                                  score_threshold=0.5, edge_margin=2)
    np.testing.assert_allclose(d.boxes[:, 0], [74.0, 158.0])  # scene columns
    assert d.truncated.tolist() == [False, True]  # the second touches the window's right edge (interior)
    last = window_rotated_detections(inst, row=0, col=160, shape=(96, 96), height=96, width=256,
                                     score_threshold=0.5)
    assert not last.truncated.any()  # the right edge of the last window is the scene's


class RROIHeads(torch.nn.Module):
    """Named as detectron2's rotated heads: what d2geo judges a model's kind of boxes by."""


class StandardROIHeads(torch.nn.Module):
    pass


class FakeRotatedDetector(torch.nn.Module):
    """Sees the objects of a scene through its windows: each window reports what of each
    object it sees (a cut object as the shorter box of its visible length), cut copies with a
    higher score than whole ones, so that score alone would keep the wrong copy. Band 0 of the
    scene holds the column and band 1 the row of each pixel: how a window knows where it is."""

    def __init__(self, objects, heads=RROIHeads, rotated=True):
        super().__init__()
        self.roi_heads = heads()
        self.objects, self.rotated = objects, rotated
        self.calls = 0

    def forward(self, batched_inputs):
        out = []
        for x in batched_inputs:
            self.calls += 1
            img = x["image"]
            col, row = int(img[0, 0, 0]), int(img[1, 0, 0])
            h, w = img.shape[-2:]
            window = shapely_box(col, row, col + w, row + h)
            boxes, scores, classes = [], [], []
            for cls, b in self.objects:
                poly = shapely.polygons(rotated_corners(np.asarray(b)[None])[0])
                seen = poly.intersection(window)
                if seen.area < 1:
                    continue
                whole = seen.area > poly.area - 1e-6
                rb = np.asarray(b, float)
                if not whole:  # the visible length along the object's axis
                    a = math.radians(b[4])
                    u = np.array([math.cos(a), -math.sin(a)])
                    t = (np.array(seen.exterior.coords) - rb[:2]) @ u
                    rb = np.array([*(rb[:2] + u * (t.min() + t.max()) / 2), t.max() - t.min(), b[3], b[4]])
                boxes.append([rb[0] - col, rb[1] - row, *rb[2:]])
                scores.append(0.8 if whole else 0.95)
                classes.append(cls)
            inst = Instances((h, w))
            t = torch.tensor(np.asarray(boxes, np.float32).reshape(-1, 5))
            inst.pred_boxes = RotatedBoxes(t) if self.rotated else Boxes(t[:, :4])
            inst.scores = torch.tensor(scores, dtype=torch.float32)
            inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
            out.append({"instances": inst})
        return out


# objects in scene pixels: on window seams (tile 96, overlap 32: windows start at 0 and 64)
OBJECTS = [(0, [80.0, 30.0, 30.0, 8.0, 20.0]),   # inside both windows
           (0, [96.0, 90.0, 28.0, 7.0, -35.0]),  # cut by the first window's right edge
           (1, [64.0, 130.0, 12.0, 6.0, 70.0]),  # cut by the second window's left edge
           (1, [20.0, 140.0, 12.0, 6.0, 0.0])]   # in one window only


@pytest.fixture()
def coord_scene(tmp_path):
    rows, cols = np.mgrid[0:160, 0:160].astype(np.float32)
    return write_tif(tmp_path / "scene" / "scene.tif", np.stack([cols, rows]), crs=CRS,
                     transform=from_origin(*ORIGIN, GSD, GSD))


def _check_features(features, transform=None, to_ll=None):
    assert len(features) == len(OBJECTS)  # every seam object reported once
    by_class = sorted(features, key=lambda f: (f["properties"]["category_id"], f["properties"]["cx"]))
    want = sorted(OBJECTS, key=lambda o: (o[0], o[1][0]))
    for f, (cls, b) in zip(by_class, want):
        assert f["properties"]["category_id"] == cls
        assert f["properties"]["class"] == ("ship", "vehicle")[cls]
        assert f["properties"]["score"] == pytest.approx(0.8)  # the whole copy, not the sure cut one
        poly = shape(f["geometry"])
        exp = _expected_map_polygon(*b, transform)
        if to_ll is not None:
            exp = shapely.transform(exp, lambda xy: np.stack(to_ll.transform(xy[:, 0], xy[:, 1]), 1))
        assert poly.symmetric_difference(exp).area < 1e-6 * exp.area


def test_predict_scene_writes_rotated_polygons_once_per_object_in_geojson_and_geoparquet(coord_scene, tmp_path):
    import geopandas as gpd
    from pyproj import Transformer

    model = FakeRotatedDetector(OBJECTS)
    gj, pq = str(tmp_path / "ships.geojson"), str(tmp_path / "ships.parquet")
    s = predict_scene(model, coord_scene, instances_path=gj, geoparquet_path=pq, tile=96, overlap=32,
                      class_names=["ship", "vehicle"], progress=False, rotated=True)
    assert s["windows"] == 4 and s["detections"] > len(OBJECTS) and len(s["instances"]) == len(OBJECTS)
    assert os.path.getsize(gj + ".png") > 0  # the quick-look with the rotated outlines
    fc = json.load(open(gj))
    assert fc["crs"]["properties"]["name"] == CRS
    _check_features(fc["features"], from_origin(*ORIGIN, GSD, GSD))
    df = gpd.read_parquet(pq)
    assert df.crs.to_epsg() == 32631 and len(df) == len(OBJECTS)
    assert {"category_id", "score", "class", "cx", "cy", "w", "h", "angle"} <= set(df.columns)
    # --to-crs EPSG:4326
    gj2, pq2 = str(tmp_path / "ll.geojson"), str(tmp_path / "ll.parquet")
    predict_scene(model, coord_scene, instances_path=gj2, geoparquet_path=pq2, tile=96, overlap=32,
                  to_crs="EPSG:4326", object_names=["ship", "vehicle"], progress=False, quicklook=False)
    fc2 = json.load(open(gj2))
    assert fc2["crs"]["properties"]["name"] == "EPSG:4326"
    _check_features(fc2["features"], from_origin(*ORIGIN, GSD, GSD),
                    Transformer.from_crs(CRS, "EPSG:4326", always_xy=True))
    assert gpd.read_parquet(pq2).crs.to_epsg() == 4326


def test_predict_region_writes_rotated_polygons_per_scene(coord_scene, tmp_path):
    import geopandas as gpd

    from d2geo.inference import InferenceOptions, predict_region

    out = tmp_path / "region"
    out.mkdir()
    opts = InferenceOptions(tile=96, overlap=32, batch_size=2, num_workers=0, amp="off", rotated=True,
                            object_names=["ship", "vehicle"])
    summary = predict_region(FakeRotatedDetector(OBJECTS), [coord_scene], str(out), opts, progress=False)
    assert summary["done"] == ["scene"] and "mosaic" not in summary
    fc = json.load(open(out / "scene.geojson"))
    _check_features(fc["features"], from_origin(*ORIGIN, GSD, GSD))
    assert {f["properties"]["scene"] for f in fc["features"]} == {"scene"}
    assert len(gpd.read_parquet(out / "scene.parquet")) == len(OBJECTS)


def _no_outputs(folder):
    return sorted(p for p in os.listdir(folder) if not p.startswith("scene"))


def test_rotated_polygons_asked_of_an_axis_aligned_model_are_refused_before_any_window(coord_scene, tmp_path):
    model = FakeRotatedDetector(OBJECTS, heads=StandardROIHeads, rotated=False)
    with pytest.raises(SceneRequestError, match="axis-aligned boxes .*drop --rotated-boxes, or use a rotated R-CNN"):
        predict_scene(model, coord_scene, instances_path=str(tmp_path / "a.geojson"), tile=96, overlap=32,
                      rotated=True, progress=False)
    assert model.calls == 0 and not os.path.exists(tmp_path / "a.geojson")
    # a model whose parts do not tell: refused at its first window, nothing written
    hidden = FakeRotatedDetector(OBJECTS, rotated=False)
    del hidden.roi_heads
    with pytest.raises(SceneRequestError, match="returns axis-aligned boxes"):
        predict_scene(hidden, coord_scene, instances_path=str(tmp_path / "b.geojson"), tile=96, overlap=32,
                      rotated=True, progress=False)
    assert hidden.calls == 1 and not os.path.exists(tmp_path / "b.geojson")


def test_a_class_map_asked_of_a_rotated_model_is_refused_before_any_window(coord_scene, tmp_path):
    model = FakeRotatedDetector(OBJECTS)
    with pytest.raises(SceneRequestError, match="rotated detector .*no class map; drop --out-semseg"):
        predict_scene(model, coord_scene, semseg_path=str(tmp_path / "c.tif"), tile=96, overlap=32, progress=False)
    assert model.calls == 0 and not os.path.exists(tmp_path / "c.tif")
    from d2geo.inference import InferenceOptions, predict_region

    out = tmp_path / "region"
    out.mkdir()
    with pytest.raises(SceneRequestError, match="rotated detector .*no class map"):
        predict_region(model, [coord_scene], str(out), InferenceOptions(tile=96, overlap=32, num_workers=0,
                                                                        semseg=True), progress=False)
    assert model.calls == 0 and not any(f.endswith((".tif", ".geojson")) for f in os.listdir(out))


def test_an_object_where_two_scenes_overlap_is_written_once_by_the_scene_that_owns_it(tmp_path):
    from d2geo.inference import InferenceOptions, predict_region

    # scenes a (columns 0..159) and b (columns 96..255) of one grid; bands: the global column and row
    rows, cols = np.mgrid[0:160, 0:160].astype(np.float32)
    a = write_tif(tmp_path / "in" / "a.tif", np.stack([cols, rows]), crs=CRS, transform=from_origin(*ORIGIN, GSD, GSD))
    b = write_tif(tmp_path / "in" / "b.tif", np.stack([cols + 96, rows]), crs=CRS,
                  transform=from_origin(ORIGIN[0] + 96 * GSD, ORIGIN[1], GSD, GSD))
    objects = [(0, [120.0, 40.0, 20.0, 6.0, 30.0]),   # in both: 40 px from a's edge, 24 from b's -> a's
               (1, [140.0, 100.0, 12.0, 6.0, -20.0]),  # in both: 20 px from a's edge, 44 from b's -> b's
               (0, [30.0, 120.0, 24.0, 6.0, 10.0]),    # a only
               (1, [220.0, 60.0, 12.0, 6.0, 45.0])]    # b only
    out = tmp_path / "out"
    out.mkdir()
    opts = InferenceOptions(tile=96, overlap=32, num_workers=0, amp="off", object_names=["ship", "vehicle"])
    predict_region(FakeRotatedDetector(objects), [a, b], str(out), opts, progress=False)
    got = {s: json.load(open(out / f"{s}.geojson"))["features"] for s in ("a", "b")}
    centres = {s: sorted(round(f["properties"]["cx"] + (96 if s == "b" else 0)) for f in feats)
               for s, feats in got.items()}
    assert centres == {"a": [30, 120], "b": [140, 220]}  # global columns: each object once, in its owner's file
    transform = from_origin(*ORIGIN, GSD, GSD)
    for f in got["a"] + got["b"]:
        cls, box = next(o for o in objects if round(o[1][0]) == round(
            f["properties"]["cx"] + (96 if f["properties"]["scene"] == "b" else 0)))
        exp = _expected_map_polygon(*box, transform)
        assert shape(f["geometry"]).symmetric_difference(exp).area < 1e-6 * exp.area
