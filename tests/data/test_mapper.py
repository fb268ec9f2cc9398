"""GeoDatasetMapper on real GeoTIFFs: N-band/temporal augmentation, metadata, targets."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")
pytest.importorskip("rasterio")

import detectron2.data.transforms as T  # noqa: E402
from detectron2.data.datasets import load_coco_json  # noqa: E402

from d2geo.data.geotiff import GeoTiffError, read_geotiff, read_label  # noqa: E402
from d2geo.data.mapper import ExtentTransformND, GeoDatasetMapper, RandomExtentND  # noqa: E402
from d2geo.data.synthetic.generator import HLS_BANDS, make_synthetic_dataset  # noqa: E402
from d2geo.encoders import band_wavelengths  # noqa: E402


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return make_synthetic_dataset(root, num_train=6, num_val=2, size=64, seed=3, nodata_prob=0.5)


@pytest.fixture(scope="module")
def synth_t(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_t")
    return make_synthetic_dataset(root, num_train=3, num_val=1, size=48, num_frames=3, seed=4)


def _dicts(ds, split="train"):
    base = ds.split_dir(split)
    dicts = load_coco_json(ds.coco_json(split), os.path.join(base, "images"))
    for d in dicts:
        tile = os.path.basename(d["file_name"]).split(".")[0]
        d["sem_seg_file_name"] = os.path.join(base, "masks", f"{tile}_mask.tif")
        d["geo"] = {"sensor": "hls"}
    return dicts


def test_mapper_output_contract(synth):
    dicts = _dicts(synth)
    d = max(dicts, key=lambda x: len(x["annotations"]))
    out = GeoDatasetMapper(True, augmentations=[], use_instance_mask=True)(d)
    img = out["image"]
    assert img.dtype == torch.float32 and img.shape == (6, 64, 64)
    ref = read_geotiff(d["file_name"])
    np.testing.assert_array_equal(img.numpy(), ref.image)  # no augmentation: the reader's values
    md = out["metadata"]
    assert set(md) == {"timestamps", "latlon", "gsd", "wavelengths"}
    assert md["timestamps"].dtype == torch.float64 and md["timestamps"].shape == (1,)
    assert md["latlon"].shape == (2,) and md["gsd"].shape == () and float(md["gsd"]) == pytest.approx(10.0)
    torch.testing.assert_close(md["wavelengths"], band_wavelengths("hls", HLS_BANDS))
    assert len(out["instances"]) == len(d["annotations"]) > 0
    assert out["instances"].gt_masks is not None
    assert "geo" not in out and "sem_seg_file_name" not in out


def test_sem_seg_ignores_invalid_pixels(synth):
    dicts = _dicts(synth)
    # a tile with a nodata wedge
    d = next(x for x in dicts if not read_geotiff(x["file_name"]).valid.all())
    valid = read_geotiff(d["file_name"]).valid
    out = GeoDatasetMapper(True, augmentations=[])(d)
    sem = out["sem_seg"].numpy()
    assert out["sem_seg"].dtype == torch.int64
    assert (sem[~valid] == 255).all() and (sem[valid] != 255).all()
    assert (out["image"].numpy()[:, ~valid] == 0).all()  # filled with zero


def test_resize_flip_keep_targets_aligned_and_scale_gsd(synth):
    d = max(_dicts(synth), key=lambda x: len(x["annotations"]))
    base = GeoDatasetMapper(True, augmentations=[], use_instance_mask=True)(d)
    augs = [T.ResizeShortestEdge(128, 1000), T.RandomFlip(prob=1.0)]
    out = GeoDatasetMapper(True, augmentations=augs, use_instance_mask=True)(d)
    assert out["image"].shape == (6, 128, 128)
    assert float(out["metadata"]["gsd"]) == pytest.approx(5.0)  # 2x upsampled: half the ground distance
    up = torch.nn.functional.interpolate(base["image"][None], scale_factor=2, mode="bilinear",
                                         align_corners=False)[0].flip(-1)
    torch.testing.assert_close(out["image"], up, atol=1e-5, rtol=1e-5)
    exp_sem = base["sem_seg"].repeat_interleave(2, 0).repeat_interleave(2, 1).flip(-1)
    assert (out["sem_seg"] == exp_sem).float().mean() > 0.999
    b0 = base["instances"].gt_boxes.tensor
    b1 = out["instances"].gt_boxes.tensor
    exp = torch.stack([128 - 2 * b0[:, 2], 2 * b0[:, 1], 128 - 2 * b0[:, 0], 2 * b0[:, 3]], 1)
    torch.testing.assert_close(b1, exp, atol=1e-3, rtol=0)


def test_time_series_gets_one_transform_for_all_frames(synth_t):
    base = synth_t.split_dir("train")
    dicts = load_coco_json(synth_t.coco_json("train"), os.path.join(base, "images"))
    coco = json.load(open(synth_t.coco_json("train")))
    d = dicts[0]
    d["file_names"] = [os.path.join(base, "images", f) for f in coco["images"][0]["file_names"]]
    plain = GeoDatasetMapper(True, augmentations=[])(d)
    assert plain["image"].shape == (6, 3, 48, 48)
    ts = plain["metadata"]["timestamps"]
    assert ts.shape == (3,) and (torch.diff(ts) > 0).all()
    crop = T.RandomCrop("absolute", (32, 40))
    out = GeoDatasetMapper(True, augmentations=[crop, T.RandomFlip(prob=1.0, horizontal=False, vertical=True)])(d)
    assert out["image"].shape == (6, 3, 32, 40)
    # find the crop offset from frame 0 and check every frame was cropped/flipped the same way
    img, full = out["image"].flip(-2), plain["image"]
    hits = [(y, x) for y in range(17) for x in range(9)
            if torch.equal(full[:, 0, y:y + 32, x:x + 40], img[:, 0])]
    assert len(hits) == 1
    y, x = hits[0]
    torch.testing.assert_close(img, full[:, :, y:y + 32, x:x + 40])


def test_geojson_annotations_match_coco(synth):
    dicts = _dicts(synth)
    d = max(dicts, key=lambda x: len(x["annotations"]))
    tile = os.path.basename(d["file_name"]).split(".")[0]
    g = {k: v for k, v in d.items() if k != "annotations"}
    g["geojson_file_name"] = os.path.join(synth.split_dir("train"), "geojson", f"{tile}.geojson")
    m = GeoDatasetMapper(True, augmentations=[], use_instance_mask=True)
    a, b = m(d)["instances"], m(g)["instances"]
    assert len(a) == len(b) > 0
    torch.testing.assert_close(a.gt_boxes.tensor, b.gt_boxes.tensor, atol=1e-3, rtol=0)


def test_many_band_float_augmentations_and_extent():
    rng = np.random.default_rng(0)
    img = rng.random((40, 50, 13)).astype(np.float32)
    for aug in (T.ResizeShortestEdge(20, 100), T.RandomFlip(prob=1.0), T.RandomCrop("absolute", (16, 16)),
                T.RandomRotation([90, 90]), RandomExtentND((0.5, 0.5), (0.0, 0.0))):
        inp = T.AugInput(img.copy(), sem_seg=np.zeros((40, 50), np.uint8))
        T.AugmentationList([aug])(inp)
        assert inp.image.dtype == np.float32 and inp.image.shape[2] == 13
        assert inp.image.shape[:2] == inp.sem_seg.shape
    # the N-D extent transform moves a marked pixel where apply_coords says
    img = np.zeros((40, 50, 7), np.float32)
    img[10, 20] = 1.0
    t = ExtentTransformND((10, 5, 30, 25), (40, 40))
    out = t.apply_image(img)
    assert out.shape == (40, 40, 7)
    x, y = t.apply_coords(np.array([[20.5, 10.5]], np.float32))[0]
    peak = np.unravel_index(out[..., 3].argmax(), out.shape[:2])
    assert abs(peak[0] + 0.5 - y) <= 1.0 and abs(peak[1] + 0.5 - x) <= 1.0
    np.testing.assert_array_equal(out[..., 0], out[..., 6])  # all channels warped alike


def test_padding_from_augmentation_is_ignored(synth):
    d = _dicts(synth)[0]
    out = GeoDatasetMapper(True, augmentations=[T.RandomRotation([45, 45], expand=True)])(d)
    sem = out["sem_seg"].numpy()
    assert sem[0, 0] == 255 and sem[-1, -1] == 255  # rotated-in corners are not data
    assert (sem != 255).mean() > 0.3


def test_normalization_and_band_selection(synth):
    d = _dicts(synth)[0]
    m = GeoDatasetMapper(False, augmentations=[], bands=["nir_narrow", "red"], mean=[0.3, 0.1], std=[0.1, 0.05])
    out = m(d)
    raw = read_geotiff(d["file_name"], bands=["nir_narrow", "red"]).image
    np.testing.assert_allclose(out["image"].numpy(), (raw - np.array([0.3, 0.1])[:, None, None])
                               / np.array([0.1, 0.05])[:, None, None], rtol=1e-5, atol=1e-5)
    assert "instances" not in out and "annotations" not in out  # test mode drops targets
    with pytest.raises(ValueError, match="mean/std have 2 values for 6 bands"):
        GeoDatasetMapper(False, augmentations=[], mean=[0.3, 0.1], std=[0.1, 0.05])(d)


def test_bad_inputs_are_named(synth):
    d = dict(_dicts(synth)[0])
    d["height"] = 99
    with pytest.raises(GeoTiffError, match="dataset dict says 99x64"):
        GeoDatasetMapper(True, augmentations=[])(d)
    with pytest.raises(KeyError, match="file_name"):
        GeoDatasetMapper(True, augmentations=[])({"image_id": 0})
    with pytest.raises(ValueError, match="NaN"):
        GeoDatasetMapper(True, augmentations=[], fill=None)


def test_from_config_builds_training_augmentations():
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.RANDOM_FLIP = "both"
    cfg.INPUT.CROP.ENABLED = True
    cfg.MODEL.MASK_ON = True
    m = GeoDatasetMapper(cfg, is_train=True)
    names = [type(a).__name__ for a in m.augmentations.augs]
    assert names == ["RandomCrop", "ResizeShortestEdge", "RandomFlip", "RandomFlip"]
    assert m.use_instance_mask and m.recompute_boxes
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 7
    assert GeoDatasetMapper(cfg, is_train=False).num_classes == 7  # label files are checked against it


def test_read_label_shape_matches_image(synth):
    d = _dicts(synth)[0]
    assert read_label(d["sem_seg_file_name"]).shape == read_geotiff(d["file_name"]).valid.shape
