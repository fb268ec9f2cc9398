"""Oriented boxes: the corner convention, the loaders (DOTA, rotated COCO json, GeoJSON in any
CRS), the refusals, and boxes that stay on their objects through flips, 90-degree turns,
crops and resizes."""
import json

import numpy as np
import pytest

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")
shapely = pytest.importorskip("shapely")

import cv2  # noqa: E402
import torch  # noqa: E402
from detectron2.data import transforms as T  # noqa: E402
from detectron2.layers.rotated_boxes import pairwise_iou_rotated  # noqa: E402
from detectron2.structures import BoxMode, RotatedBoxes  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from d2geo.data.mapper import ExtentTransformND  # noqa: E402
from d2geo.data.rotated import (  # noqa: E402
    RotatedBoxError,
    RotatedGeoDatasetMapper,
    check_rotated_boxes,
    corners_to_rotated_box,
    geojson_to_rotated_annotations,
    load_dota_labels,
    load_rotated_coco_json,
    polygon_to_rotated_box,
    rotated_box_corners,
    transform_rotated_boxes,
)


def _poly(box):
    return shapely.geometry.Polygon(rotated_box_corners(np.asarray(box))[0])


def test_corners_follow_detectron2s_convention():
    # counter-clockwise on the screen: the w side of a 30 degree box rises to the right (y down)
    c = rotated_box_corners([50, 40, 20, 6, 30])[0]
    side_w = c[2] - c[1]
    assert side_w[0] > 0 and side_w[1] < 0
    np.testing.assert_allclose(np.hypot(*side_w), 20)
    # the IoU of our polygons is detectron2's rotated IoU (a wrong angle sign would differ)
    rng = np.random.default_rng(0)
    a = np.column_stack([rng.uniform(20, 30, 20), rng.uniform(20, 30, 20), rng.uniform(5, 20, (20, 2)),
                         rng.uniform(-180, 180, 20)])
    b = a.copy()
    b[:, 4] = rng.uniform(-180, 180, 20)
    ours = [_poly(x).intersection(_poly(y)).area / _poly(x).union(_poly(y)).area for x, y in zip(a, b)]
    d2 = pairwise_iou_rotated(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)).diagonal()
    np.testing.assert_allclose(ours, d2.numpy(), atol=2e-3)
    # and back: corners -> box is exact (angles in [-90, 90))
    # (shapely: detectron2's float32 IoU of two coincident rectangles can be far off)
    back = corners_to_rotated_box(rotated_box_corners(a))
    assert (back[:, 4] >= -90).all() and (back[:, 4] < 90).all()
    for x, y in zip(a, back):
        assert _poly(x).symmetric_difference(_poly(y)).area < 1e-6 * _poly(x).area


# -- property: boxes stay on their objects -------------------------------------------------------
def _coverage(box, h, w, ss=4):
    """Fraction of each pixel inside the box (``ss`` x ``ss`` samples, analytic inside test)."""
    cx, cy, bw, bh, a = box
    t = np.deg2rad(a)
    c, s = np.cos(t), np.sin(t)
    off = (np.arange(ss) + 0.5) / ss
    ys = (np.arange(h)[:, None] + off[None]).reshape(-1)
    xs = (np.arange(w)[:, None] + off[None]).reshape(-1)
    dx, dy = xs[None, :] - cx, ys[:, None] - cy
    along_w, along_h = c * dx - s * dy, s * dx + c * dy  # inverse of rotated_box_corners' rotation
    inside = (np.abs(along_w) <= bw / 2) & (np.abs(along_h) <= bh / 2)
    return inside.reshape(h, ss, w, ss).mean(axis=(1, 3)).astype(np.float32)


def _draw(boxes, h, w):
    img = np.zeros((h, w, 3), np.float32)
    for i, box in enumerate(boxes):
        img[:, :, i] = _coverage(box, h, w)
    return img


def _mask_iou(mask, box, h, w):
    drawn = _draw([box], h, w)[:, :, 0] > 0.5
    return (mask & drawn).sum() / max((mask | drawn).sum(), 1)


AUGS = {
    "hflip": lambda: T.RandomFlip(1.0, horizontal=True, vertical=False),
    "vflip": lambda: T.RandomFlip(1.0, horizontal=False, vertical=True),
    "rot90": lambda: T.RandomRotation([90], sample_style="choice", expand=True),
    "rot180": lambda: T.RandomRotation([180], sample_style="choice", expand=True),
    "rot270": lambda: T.RandomRotation([270], sample_style="choice", expand=True),
    "crop": lambda: T.RandomCrop("absolute", (56, 64)),
    "resize": lambda: T.ResizeShortestEdge(96, max_size=1000),  # 1.5x on both axes (either orientation)
}


@settings(max_examples=25, deadline=None)
@given(cx=st.floats(25, 55), cy=st.floats(22, 42), w=st.floats(10, 30), h=st.floats(8, 14),
       angle=st.floats(-180, 180), aug_names=st.lists(st.sampled_from(sorted(AUGS)), min_size=1, max_size=3),
       seed=st.integers(0, 1000))
def test_transformed_boxes_stay_on_their_transformed_objects(cx, cy, w, h, angle, aug_names, seed):
    H, W = 64, 80  # not square: a 90 degree turn that forgot to swap the axes would miss
    boxes = [np.array([cx, cy, w, h, angle])]
    # a second object, kept where the first is not
    second = np.array([W - cx, H - cy, 9.0, 8.0, -angle / 2])
    if not _poly(boxes[0]).buffer(2).intersects(_poly(second)):
        boxes.append(second)
    image = _draw(boxes, H, W)
    np.random.seed(seed)
    aug_input = T.AugInput(image)
    transforms = T.AugmentationList([AUGS[n]() for n in aug_names])(aug_input)
    moved = transform_rotated_boxes(np.stack(boxes), transforms)
    out = aug_input.image
    oh, ow = out.shape[:2]
    for i, box in enumerate(moved):
        obj = out[:, :, i] > 0.5
        if "crop" in aug_names and _coverage(box, oh, ow).sum() < 0.98 * box[2] * box[3]:
            continue  # the crop cut the object: nothing to compare
        assert obj.any()
        assert _mask_iou(obj, box, oh, ow) > 0.9, (aug_names, boxes[i], box)


def test_registered_transforms_move_boxes_exactly():
    box = np.array([[30.0, 20.0, 24.0, 8.0, 25.0]])
    t = ExtentTransformND((10, 5, 70, 45), (80, 120))  # 2x: every side doubles, angle unchanged
    out = transform_rotated_boxes(box, T.TransformList([t]))
    np.testing.assert_allclose(out, [[40.0, 30.0, 48.0, 16.0, 25.0]], atol=1e-6)
    vflip = transform_rotated_boxes(box, T.TransformList([T.VFlipTransform(40)]))
    np.testing.assert_allclose(vflip, [[30.0, 20.0, 24.0, 8.0, -25.0]], atol=1e-6)


def test_a_transform_without_a_rotated_rule_is_refused_with_the_fix():
    class Shear(T.Transform):
        def apply_image(self, img):
            return img

        def apply_coords(self, coords):
            return coords

    with pytest.raises(RotatedBoxError, match="cannot move rotated boxes.*register_type"):
        transform_rotated_boxes(np.array([[5.0, 5, 4, 2, 10]]), T.TransformList([Shear()]))


# -- loaders ----------------------------------------------------------------------------------
def test_dota_labels_become_rotated_boxes(tmp_path):
    box = np.array([40.0, 30.0, 24.0, 8.0, 35.0])
    corners = rotated_box_corners(box)[0]
    f = tmp_path / "P0001.txt"
    f.write_text("imagesource:GoogleEarth\ngsd:0.5\n"
                 + " ".join(f"{v:.3f}" for v in corners.reshape(-1)) + " ship 0\n"
                 + "10 10 20 10 20 15 10 15 small-vehicle 1\n\n")
    annos = load_dota_labels(f, ["ship", "small-vehicle"])
    assert [a["category_id"] for a in annos] == [0, 1] and [a["iscrowd"] for a in annos] == [0, 1]
    assert all(a["bbox_mode"] == BoxMode.XYWHA_ABS for a in annos)
    iou = pairwise_iou_rotated(torch.tensor([box], dtype=torch.float32),
                               torch.tensor([annos[0]["bbox"]], dtype=torch.float32))
    assert iou.item() > 0.999
    np.testing.assert_allclose(annos[1]["bbox"][:2], [15, 12.5])
    assert len(load_dota_labels(f, ["ship", "small-vehicle"], skip_difficult=True)) == 1
    assert [a["category_id"] for a in load_dota_labels(f)] == [0, 1]  # classes numbered as they appear


def test_dota_line_with_the_wrong_field_count_names_file_and_line(tmp_path):
    f = tmp_path / "P0002.txt"
    f.write_text("gsd:0.5\n10 10 20 10 20 15 10 15 ship 0\n10 10 20 10 20 15 ship 0\n")
    with pytest.raises(RotatedBoxError, match=r"P0002.txt:3: 8 fields .*x1 y1 x2 y2 x3 y3 x4 y4"):
        load_dota_labels(f)
    f.write_text("10 10 20 10 20 15 10 15 plane 0\n")
    with pytest.raises(RotatedBoxError, match=r"P0002.txt:1: class 'plane' is not in class_names"):
        load_dota_labels(f, ["ship"])


def _coco(tmp_path, boxes):
    data = {"images": [{"id": 7, "file_name": "a.tif", "height": 64, "width": 64}],
            "categories": [{"id": 3, "name": "ship"}],
            "annotations": [{"id": i + 1, "image_id": 7, "category_id": 3, "bbox": b} for i, b in enumerate(boxes)]}
    path = tmp_path / "rot.json"
    path.write_text(json.dumps(data))
    return path


def test_rotated_coco_json_loads_xywha_boxes(tmp_path):
    dicts = load_rotated_coco_json(_coco(tmp_path, [[30, 20, 10, 4, 45], [10, 10, 6, 3, -80]]), str(tmp_path))
    (d,) = dicts
    assert d["file_name"] == str(tmp_path / "a.tif") and d["image_id"] == 7
    assert [a["bbox"] for a in d["annotations"]] == [[30, 20, 10, 4, 45], [10, 10, 6, 3, -80]]
    assert {a["category_id"] for a in d["annotations"]} == {0}


def test_angles_that_look_like_radians_are_refused_unless_flagged(tmp_path):
    path = _coco(tmp_path, [[30, 20, 10, 4, 0.785], [10, 10, 6, 3, -1.4], [40, 40, 8, 4, 0.0]])
    with pytest.raises(RotatedBoxError, match="look like radians.*degrees.*angles_in_radians=True"):
        load_rotated_coco_json(path, str(tmp_path))
    (d,) = load_rotated_coco_json(path, str(tmp_path), angles_in_radians=True)
    np.testing.assert_allclose([a["bbox"][4] for a in d["annotations"]], [44.977, -80.214, 0.0], atol=1e-3)
    with pytest.raises(RotatedBoxError, match="look like radians"):
        check_rotated_boxes([[5, 5, 2, 1, 3.0]], "here")


def test_boxes_with_zero_width_or_height_are_refused(tmp_path):
    with pytest.raises(RotatedBoxError, match=r"box id=2 .* zero width or height.*w > 0 and h > 0"):
        load_rotated_coco_json(_coco(tmp_path, [[30, 20, 10, 4, 45], [10, 10, 0, 3, 20]]), str(tmp_path))
    with pytest.raises(RotatedBoxError, match="bbox of 4 values.*cx, cy, w, h, angle"):
        load_rotated_coco_json(_coco(tmp_path, [[30, 20, 10, 4]]), str(tmp_path))
    f = tmp_path / "flat.txt"
    f.write_text("10 10 20 10 30 10 40 10 ship 0\n")  # four corners on one line
    with pytest.raises(RotatedBoxError, match=r"flat.txt:1: .*no area"):
        load_dota_labels(f)


def test_geojson_polygons_in_another_crs_become_their_minimum_rotated_rectangle():
    pytest.importorskip("rasterio")
    from pyproj import Transformer
    from rasterio.transform import from_origin

    transform = from_origin(500_000.0, 4_200_000.0, 10.0, 10.0)  # UTM 10N, 10 m pixels
    box = np.array([30.0, 25.0, 20.0, 6.0, -40.0])
    px = rotated_box_corners(box)[0]
    # a slightly irregular outline (an extra vertex inside) of the rectangle, in lon/lat
    px = np.insert(px, 2, (px[1] + px[2]) / 2 + (0.2, 0.1), axis=0)
    xs, ys = transform * (px[:, 0], px[:, 1])
    lon, lat = Transformer.from_crs("EPSG:32610", "EPSG:4326", always_xy=True).transform(xs, ys)
    ring = [[float(a), float(b)] for a, b in zip(lon, lat)] + [[float(lon[0]), float(lat[0])]]
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"class": "ship"}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]}
    (a,) = geojson_to_rotated_annotations(fc, transform, crs="EPSG:32610", geojson_crs="EPSG:4326",
                                          category_key="class", class_names=["ship"])
    assert a["bbox_mode"] == BoxMode.XYWHA_ABS and a["category_id"] == 0
    iou = pairwise_iou_rotated(torch.tensor([box], dtype=torch.float32), torch.tensor([a["bbox"]], dtype=torch.float32))
    assert iou.item() > 0.97


def test_polygons_with_fewer_than_four_corners_are_refused():
    from rasterio.transform import from_origin

    transform = from_origin(0.0, 100.0, 1.0, 1.0)
    tri = [[10, 90], [20, 90], [15, 80], [10, 90]]
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"category_id": 0}, "geometry": {"type": "Polygon", "coordinates": [tri]}}]}
    with pytest.raises(RotatedBoxError, match="feature 0 .*3 distinct corners.*at least 4 corners"):
        geojson_to_rotated_annotations(fc, transform)
    with pytest.raises(RotatedBoxError, match="3 distinct corners"):
        polygon_to_rotated_box([[0, 0], [4, 0], [4, 0], [0, 3]])


# -- the mapper --------------------------------------------------------------------------------
def test_mapper_gives_rotated_boxes_that_follow_the_flips(tmp_path):
    pytest.importorskip("rasterio")
    from d2geo.data.synthetic.generator import write_geotiff
    from rasterio.transform import from_origin

    image = np.full((6, 48, 64), 0.1, np.float32)
    path = tmp_path / "t.tif"
    write_geotiff(path, image, transform=from_origin(500_000, 4_200_000, 10, 10))
    d = {"file_name": str(path), "height": 48, "width": 64, "image_id": 0,
         "annotations": [{"bbox": [20.0, 10.0, 12.0, 4.0, 30.0], "bbox_mode": BoxMode.XYWHA_ABS, "category_id": 1},
                         {"bbox": [40.0, 30.0, 6.0, 3.0, 0.0], "bbox_mode": BoxMode.XYWHA_ABS, "category_id": 0,
                          "iscrowd": 1},
                         {"segmentation": [[40, 30, 50, 30, 50, 35, 40, 35]], "bbox": [40, 30, 50, 35],
                          "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}]}
    mapper = RotatedGeoDatasetMapper(is_train=True, augmentations=[T.RandomFlip(1.0, horizontal=True, vertical=False),
                                                                   T.RandomFlip(1.0, horizontal=False, vertical=True)])
    inst = mapper(d)["instances"]
    assert isinstance(inst.gt_boxes, RotatedBoxes)
    assert inst.gt_classes.tolist() == [1, 0]  # the crowd box is dropped, the polygon becomes a box
    # both flips = a half turn about the centre: same angle, mirrored centre
    np.testing.assert_allclose(inst.gt_boxes.tensor[0].numpy(), [44.0, 38.0, 12.0, 4.0, 30.0], atol=1e-4)
    np.testing.assert_allclose(inst.gt_boxes.tensor[1, :2].numpy(), [64 - 45, 48 - 32.5], atol=1e-4)
    bad = dict(d, annotations=[{"bbox": [20.0, 10.0, 12.0, 0.0, 30.0], "bbox_mode": BoxMode.XYWHA_ABS,
                                "category_id": 1}])
    with pytest.raises(RotatedBoxError, match="zero width or height"):
        mapper(bad)
    with pytest.raises(ValueError, match="use_instance_mask=False"):
        RotatedGeoDatasetMapper(is_train=True, use_instance_mask=True)
