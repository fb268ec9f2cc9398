"""Dataset registration and the Sen1Floods11 / HLS Burn Scars layouts, on tiny copies written here."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")
rasterio = pytest.importorskip("rasterio")
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

from helpers import write_tif  # noqa: E402
from d2geo.data.datasets import (  # noqa: E402
    SEN1FLOODS11_S2_BANDS, load_hls_burn_scars, load_sen1floods11, register_geo_instances,
    register_hls_burn_scars, register_sen1floods11,
)
from d2geo.data.geotiff import parse_time  # noqa: E402
from d2geo.data.mapper import GeoDatasetMapper  # noqa: E402
from d2geo.data.stats import get_stats  # noqa: E402
from d2geo.data.synthetic import (  # noqa: E402
    SyntheticGeoDataset, make_synthetic_dataset, register_synthetic_geotiff,
)


def _write(path, data, dtype, nodata=None, crs="EPSG:32719"):
    write_tif(path, np.asarray(data, dtype=dtype), crs=crs, nodata=nodata,
              transform=from_origin(300_000, 8_200_000, 10, 10))


@pytest.fixture
def sen1floods11(tmp_path):
    """v1.1 layout: S2Hand 13-band uint16 chips, LabelHand int16 with -1, csv splits, metadata geojson."""
    root = tmp_path / "sen1floods11"
    hand = root / "v1.1/data/flood_events/HandLabeled"
    rng = np.random.default_rng(0)
    chips = {"train": ["Bolivia_103757", "Ghana_2012345"], "valid": ["India_1018327"], "test": ["Spain_7370579"]}
    for split, ids in chips.items():
        for chip in ids:
            img = rng.integers(0, 5000, size=(13, 16, 16)).astype(np.uint16)
            img[3] = 1000 + 10 * np.arange(16)[None, :]  # B04 (red), a known ramp
            _write(str(hand / "S2Hand" / f"{chip}_S2Hand.tif"), img, "uint16")
            lab = rng.integers(0, 2, size=(16, 16))
            lab[:2] = -1
            _write(str(hand / "LabelHand" / f"{chip}_LabelHand.tif"), lab, "int16")
        splits = root / "v1.1/splits/flood_handlabeled"
        splits.mkdir(parents=True, exist_ok=True)
        (splits / f"flood_{split}_data.csv").write_text(
            "".join(f"{c}_S1Hand.tif,{c}_LabelHand.tif\n" for c in ids))
    meta = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"location": "Bolivia", "s2_date": "2018-02-15"}, "geometry": None}]}
    (root / "v1.1/Sen1Floods11_Metadata.geojson").write_text(json.dumps(meta))
    return str(root)


def test_sen1floods11_layout_to_model_inputs(sen1floods11):
    dicts = load_sen1floods11(sen1floods11, "train")
    assert [os.path.basename(d["file_name"]) for d in dicts] == ["Bolivia_103757_S2Hand.tif", "Ghana_2012345_S2Hand.tif"]
    assert dicts[0]["height"] == dicts[0]["width"] == 16
    assert len(load_sen1floods11(sen1floods11, "val")) == 1
    assert dicts[0]["geo"]["band_names"] == SEN1FLOODS11_S2_BANDS
    m = GeoDatasetMapper(True, augmentations=[], bands=["b04", "b03", "b02", "b10"])
    out = m(dicts[0])
    assert out["image"].shape == (4, 16, 16)
    np.testing.assert_allclose(out["image"][0, 0].numpy(), (1000 + 10 * np.arange(16)) * 1e-4, rtol=1e-6)
    sem = out["sem_seg"].numpy()
    assert (sem[:2] == 255).all() and set(np.unique(sem[2:])) <= {0, 1}
    md = out["metadata"]
    assert md["timestamps"].item() == parse_time("2018-02-15")  # from the metadata geojson
    assert -90 <= md["latlon"][0] <= 0  # UTM 19S -> southern hemisphere
    np.testing.assert_allclose(md["wavelengths"].numpy(), [0.665, 0.560, 0.493, 1.375], rtol=1e-6)
    # Ghana has no entry in the metadata file, and its id is not taken for 2012 day 345
    assert "timestamps" not in m(dicts[1])["metadata"]
    # the stats select the same bands
    mean, std = get_stats("sen1floods11_s2", ["b04", "b03", "b02", "b10"])
    np.testing.assert_allclose(mean, [0.12353792, 0.13795798, 0.1412956, 0.00652506], rtol=1e-6)


def test_sen1floods11_registration_and_evaluator_loader(sen1floods11, d2_catalog):
    d2_catalog += register_sen1floods11(sen1floods11, prefix="t_s1f11")
    assert d2_catalog == ["t_s1f11_train", "t_s1f11_val", "t_s1f11_test"]
    assert len(DatasetCatalog.get("t_s1f11_test")) == 1
    meta = MetadataCatalog.get("t_s1f11_train")
    assert meta.stuff_classes == ["dry", "water"] and meta.ignore_label == 255
    gt = meta.sem_seg_loading_fn(DatasetCatalog.get("t_s1f11_train")[0]["sem_seg_file_name"], dtype=int)
    assert gt.dtype == int and (gt[:2] == 255).all()
    with pytest.raises(ValueError, match="unknown Sen1Floods11 split"):
        load_sen1floods11(sen1floods11, "holdout")
    with pytest.raises(FileNotFoundError, match="S2Hand"):
        load_sen1floods11(os.path.dirname(sen1floods11) + "/nowhere", "train")


@pytest.fixture
def burn_scars(tmp_path):
    root = tmp_path / "hls_burn_scars"
    rng = np.random.default_rng(1)
    for folder, tiles in (("training", ["T10SEH.2018190", "T11SLT.2020245"]), ("validation", ["T10SEH.2019200"])):
        for i, t in enumerate(tiles):
            stem = root / folder / f"subsetted_512x512_HLS.S30.{t}.v1.4"
            img = rng.uniform(0, 0.4, size=(6, 12, 12)).astype(np.float32)
            _write(str(stem) + "_merged.tif", img, "float32", crs="EPSG:32610")
            mask = rng.integers(0, 2, size=(12, 12))
            mask[-1] = -1
            _write(str(stem) + (".mask.tif" if i == 0 else "_mask.tif"), mask, "int16", crs="EPSG:32610")
    return str(root)


def test_hls_burn_scars_layout(burn_scars, d2_catalog):
    dicts = load_hls_burn_scars(burn_scars, "train")
    assert len(dicts) == 2 and all(d["sem_seg_file_name"].endswith("mask.tif") for d in dicts)
    out = GeoDatasetMapper(True, augmentations=[])(dicts[0])
    assert out["image"].shape == (6, 12, 12)
    assert (out["sem_seg"][-1] == 255).all() and (out["sem_seg"][:-1] != 255).all()
    assert out["metadata"]["timestamps"].item() == parse_time("2018-07-09")  # 2018 day 190
    d2_catalog += register_hls_burn_scars(burn_scars, prefix="t_burn")
    assert len(DatasetCatalog.get("t_burn_val")) == 1
    assert MetadataCatalog.get("t_burn_train").stats == "hls_burn_scars"
    with pytest.raises(ValueError, match="use train or val"):
        load_hls_burn_scars(burn_scars, "test")


def test_register_synthetic_geotiff_semseg_and_instances(tmp_path, d2_catalog):
    ds = make_synthetic_dataset(tmp_path / "s", num_train=4, num_val=2, size=48, num_frames=2, seed=5)
    d2_catalog += register_synthetic_geotiff(ds, prefix="t_syn")
    seg = DatasetCatalog.get("t_syn_seg_train")
    assert len(seg) == 4 and len(seg[0]["file_names"]) == 2 and seg[0]["file_name"] == seg[0]["file_names"][0]
    det = DatasetCatalog.get("t_syn_det_val")
    assert len(det) == 2 and len(det[0]["file_names"]) == 2
    cats = {a["category_id"] for d in DatasetCatalog.get("t_syn_det_train") for a in d["annotations"]}
    assert cats == {0}  # COCO id 1 -> contiguous 0
    assert MetadataCatalog.get("t_syn_det_train").thing_classes == ["building"]
    out = GeoDatasetMapper(True, augmentations=[])(seg[0])
    assert out["image"].shape == (6, 2, 48, 48) and out["metadata"]["timestamps"].shape == (2,)


def test_synthetic_dataset_reopened_from_its_folder_lists_the_same_files(tmp_path):
    written = make_synthetic_dataset(tmp_path / "s", num_train=3, num_val=1, size=48, num_frames=2, seed=5)
    opened = SyntheticGeoDataset.open(tmp_path / "s")
    assert opened.splits == written.splits and opened.num_frames == 2
    assert opened.semseg_pairs("val") == written.semseg_pairs("val")
    assert all(os.path.isfile(m) for _, m in opened.semseg_pairs("train"))
    with pytest.raises(FileNotFoundError, match="layout make_synthetic_dataset writes"):
        SyntheticGeoDataset.open(tmp_path / "nothing")


def test_register_geo_instances_from_geojson_samples(tmp_path, d2_catalog):
    ds = make_synthetic_dataset(tmp_path / "g", num_train=2, num_val=0, size=48, seed=6)
    base = ds.split_dir("train")
    samples = [{"file_name": f, "geojson_file_name": os.path.join(base, "geojson",
                                                                  os.path.basename(f).split(".")[0] + ".geojson")}
               for f in ds.splits["train"]]
    register_geo_instances("t_gj", samples=samples, geo={"sensor": "hls"}, thing_classes=["building"])
    d2_catalog.append("t_gj")
    dicts = DatasetCatalog.get("t_gj")
    assert [d["image_id"] for d in dicts] == [0, 1]
    counts = [len(json.load(open(s["geojson_file_name"]))["features"]) for s in samples]
    k = int(np.argmax(counts))
    n = counts[k]
    assert n > 0 and len(dicts[k]["annotations"]) == n and (dicts[k]["height"], dicts[k]["width"]) == (48, 48)
    out = GeoDatasetMapper(True, augmentations=[])(dicts[k])
    assert len(out["instances"]) == n
    with pytest.raises(ValueError, match="either json_file"):
        register_geo_instances("t_bad")


def test_stats_tables():
    mean, std = get_stats("prithvi_eo_v2", ["blue", "nir"])  # hls alias nir -> nir_narrow
    np.testing.assert_array_equal(mean, [1087.0, 2734.0])
    np.testing.assert_array_equal(std, [2248.0, 1850.0])
    mean, _ = get_stats("clay_sentinel-2-l2a", ["B04", "b08"], scale=1e-4)
    np.testing.assert_allclose(mean, [0.1552, 0.2743], rtol=1e-6)
    with pytest.raises(KeyError, match="no statistics named"):
        get_stats("sentinel-3")
    with pytest.raises(KeyError, match="'coastal' is not in"):
        get_stats("prithvi_eo_v1", ["coastal"])
