"""Panoptic registration (d2geo.data.panoptic): class + instance-id rasters, stuff raster +
parcel polygons in another CRS, the targets in detectron2's PanopticFPN convention, and the
bad inputs it refuses."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")
rasterio = pytest.importorskip("rasterio")

from rasterio.transform import from_origin  # noqa: E402

from helpers import UTM, write_tif  # noqa: E402
from d2geo.data.geotiff import read_label  # noqa: E402
from d2geo.data.mapper import GeoDatasetMapper  # noqa: E402
from d2geo.data.panoptic import (  # noqa: E402
    PanopticLabelError,
    load_geo_panoptic,
    read_panoptic_gt,
    register_geo_panoptic,
)

STUFF = ["forest", "water", "urban"]
THINGS = ["wheat", "maize"]
# raster values: stuff 0..2, things 3..4 (stuff_classes + thing_classes order)
TRANSFORM = from_origin(500_000, 4_000_000, 10, 10)


def _labels():
    classes = np.zeros((32, 32), np.uint8)  # forest
    classes[:, 24:] = 1  # water
    classes[0:4, 0:4] = 255  # no data
    ids = np.zeros((32, 32), np.uint16)
    classes[4:12, 4:16] = 3  # a wheat field, id 7
    ids[4:12, 4:16] = 7
    classes[16:28, 2:10] = 4  # a maize field, id 9
    ids[16:28, 2:10] = 9
    classes[16:28, 12:20] = 3  # a second wheat field, id 11
    ids[16:28, 12:20] = 11
    return classes, ids


def _sample(tmp_path, classes, ids, *, ids_transform=TRANSFORM):
    img = write_tif(tmp_path / "img.tif", np.random.default_rng(0).integers(0, 3000, (6, 32, 32)).astype(np.int16),
                    transform=TRANSFORM)
    cls = write_tif(tmp_path / "cls.tif", classes, transform=TRANSFORM, nodata=255)
    inst = write_tif(tmp_path / "ids.tif", ids, transform=ids_transform)
    return img, cls, inst


def _load(tmp_path, samples, **kw):
    return load_geo_panoptic(samples, stuff_classes=STUFF, thing_classes=THINGS,
                             cache_dir=str(tmp_path / "cache"), **kw)


def test_class_and_instance_rasters_give_panoptic_fpn_targets(tmp_path):
    classes, ids = _labels()
    (d,) = _load(tmp_path, [_sample(tmp_path, classes, ids)])
    sem = read_label(d["sem_seg_file_name"])
    # detectron2's separate_coco_semantic_from_panoptic convention: things 0, stuff i -> i + 1
    assert (sem[ids > 0] == 0).all()
    assert (sem[(ids == 0) & (classes == 0)] == 1).all() and (sem[:, 24:] == 2).all()
    assert (sem[0:4, 0:4] == 255).all()
    annos = {a["id"]: a for a in d["annotations"]}
    assert sorted(annos) == [7, 9, 11]
    assert [annos[i]["category_id"] for i in (7, 9, 11)] == [0, 1, 0]
    assert annos[7]["bbox"] == [4.0, 4.0, 16.0, 12.0]  # XYXY, pixel corners
    from pycocotools import mask as mask_util

    assert (mask_util.decode(annos[9]["segmentation"]).astype(bool) == (ids == 9)).all()
    cat, inst = read_panoptic_gt(d["panoptic_file_name"])
    assert (cat[ids == 9] == 1).all() and (cat[:, 24:] == 2 + 1).all() and (cat[0:4, 0:4] == -1).all()
    assert (inst == ids).all()
    assert d["geo"]["num_classes"] == len(STUFF) + 1

    # the mapper turns the dict into sem_seg + bitmask instances, flipped together
    import detectron2.data.transforms as T

    mapper = GeoDatasetMapper(is_train=True, use_instance_mask=True, instance_mask_format="bitmask",
                              augmentations=[T.RandomFlip(prob=1.0, horizontal=True, vertical=False)])
    out = mapper(d)
    masks = out["instances"].gt_masks.tensor.numpy()
    flipped = ids[:, ::-1]
    for m in masks:
        (values,) = [np.unique(flipped[m])]
        assert len(values) == 1 and values[0] > 0  # each mask is exactly one flipped field
    assert (out["sem_seg"].numpy()[flipped > 0] == 0).all()


def test_instance_id_shared_by_two_classes_is_refused(tmp_path):
    classes, ids = _labels()
    ids[16:28, 12:20] = 9  # the wheat field gets the maize field's id
    with pytest.raises(PanopticLabelError, match=r"instance id 9 is shared by classes \['wheat', 'maize'\]"):
        _load(tmp_path, [_sample(tmp_path, classes, ids)])


def test_instance_ids_on_another_grid_are_refused(tmp_path):
    classes, ids = _labels()
    shifted = from_origin(500_000 + 10, 4_000_000, 10, 10)  # one pixel east
    with pytest.raises(PanopticLabelError, match=r"instance raster .* is not on the grid of the image.*origin"):
        _load(tmp_path, [_sample(tmp_path, classes, ids, ids_transform=shifted)])


def test_unknown_class_values_are_refused(tmp_path):
    classes, ids = _labels()
    classes[30:, :4] = 17
    with pytest.raises(PanopticLabelError, match=r"class values \[17\] are not classes.*class_values"):
        _load(tmp_path, [_sample(tmp_path, classes, ids)])


def test_instance_on_a_stuff_class_and_thing_pixels_without_id_are_refused(tmp_path):
    classes, ids = _labels()
    ids[28:30, 28:30] = 5  # on water
    with pytest.raises(PanopticLabelError, match=r"instance id 5 lies on the stuff class 'water'"):
        _load(tmp_path, [_sample(tmp_path, classes, ids)])
    classes, ids = _labels()
    ids[4:6, 4:16] = 0  # part of the wheat field without id
    with pytest.raises(PanopticLabelError, match=r"24 pixels of thing classes \['wheat'\] have no instance id"):
        _load(tmp_path, [_sample(tmp_path, classes, ids)])
    (d,) = _load(tmp_path, [_sample(tmp_path, classes, ids)], unlabelled_things="ignore")
    assert (read_label(d["sem_seg_file_name"])[4:6, 4:16] == 255).all()


def _parcels_lonlat(boxes):
    """GeoJSON FeatureCollection (EPSG:4326) of pixel boxes (col0, row0, col1, row1) on TRANSFORM."""
    from pyproj import Transformer

    tf = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    feats = []
    for (c0, r0, c1, r1), crop in boxes:
        ring = []
        for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1), (c0, r0)):
            x, y = TRANSFORM * (c, r)
            ring.append(list(tf.transform(x, y)))
        feats.append({"type": "Feature", "properties": {"crop": crop},
                      "geometry": {"type": "Polygon", "coordinates": [ring]}})
    return {"type": "FeatureCollection", "features": feats}


def test_parcel_polygons_in_another_crs_are_rasterized_onto_the_grid(tmp_path):
    pytest.importorskip("shapely")
    stuff = np.zeros((32, 32), np.uint8)
    stuff[:, 24:] = 1
    img, cls, _ = _sample(tmp_path, stuff, np.zeros((32, 32), np.uint16))
    parcels = _parcels_lonlat([((4, 4, 16, 12), "wheat"), ((2, 16, 10, 28), "maize")])
    (d,) = _load(tmp_path, [{"image": img, "classes": cls, "parcels": parcels}], class_key="crop")
    cat, inst = read_panoptic_gt(d["panoptic_file_name"])
    want = np.zeros((32, 32), np.int32)
    want[4:12, 4:16] = 1
    want[16:28, 2:10] = 2
    assert (inst == want).all()  # reprojected back onto the pixels they were drawn from
    assert (cat[want == 1] == 0).all() and (cat[want == 2] == 1).all()
    assert [a["category_id"] for a in d["annotations"]] == [0, 1]
    # the stuff beneath the parcels is covered; a parcel of an unknown crop is refused
    assert (read_label(d["sem_seg_file_name"])[want > 0] == 0).all()
    bad = _parcels_lonlat([((4, 4, 16, 12), "barley")])
    with pytest.raises(PanopticLabelError, match=r"crop='barley', not one of the thing classes"):
        _load(tmp_path, [{"image": img, "classes": cls, "parcels": bad}], class_key="crop")
    overlapping = _parcels_lonlat([((4, 4, 16, 12), "wheat"), ((10, 8, 20, 20), "maize")])
    with pytest.raises(PanopticLabelError, match=r"parcels overlap on \d+ pixels"):
        _load(tmp_path, [{"image": img, "classes": cls, "parcels": overlapping}], class_key="crop")


def test_registered_dataset_has_panoptic_metadata(tmp_path, d2_catalog):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    classes, ids = _labels()
    sample = _sample(tmp_path, classes, ids)
    register_geo_panoptic("_pan_reg", [sample], stuff_classes=STUFF, thing_classes=THINGS,
                          cache_dir=str(tmp_path / "c"))
    d2_catalog.append("_pan_reg")
    meta = MetadataCatalog.get("_pan_reg")
    assert meta.stuff_classes == ["things", *STUFF] and meta.thing_classes == THINGS
    assert len(DatasetCatalog.get("_pan_reg")[0]["annotations"]) == 3
    with pytest.raises(ValueError, match=r"classes \['wheat'\] are both stuff and things"):
        register_geo_panoptic("_pan_bad", [sample], stuff_classes=["wheat"], thing_classes=THINGS)


def test_parcels_from_a_vector_file_in_web_mercator(tmp_path):
    gpd = pytest.importorskip("geopandas")
    pytest.importorskip("pyogrio")
    stuff = np.zeros((32, 32), np.uint8)
    img, cls, _ = _sample(tmp_path, stuff, np.zeros((32, 32), np.uint16))
    fc = _parcels_lonlat([((4, 4, 16, 12), "maize"), ((20, 20, 30, 30), "wheat")])
    for i, f in enumerate(fc["features"]):
        f["properties"]["parcel_id"] = 40 + i
    path = str(tmp_path / "parcels.gpkg")
    gpd.GeoDataFrame.from_features(fc["features"], crs="EPSG:4326").to_crs("EPSG:3857").to_file(path)
    (d,) = _load(tmp_path, [{"image": img, "classes": cls, "parcels": path}], class_key="crop", id_key="parcel_id")
    _, inst = read_panoptic_gt(d["panoptic_file_name"])
    assert (inst[4:12, 4:16] == 40).all() and (inst[20:30, 20:30] == 41).all()
    assert int((inst > 0).sum()) == 8 * 12 + 10 * 10
    assert {a["id"]: a["category_id"] for a in d["annotations"]} == {40: 1, 41: 0}
