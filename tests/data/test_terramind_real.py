"""TerraMind on the real example tiles: Sentinel-2 L2A + Sentinel-1 RTC + DEM files stacked by
modality, and a semantic FPN config trained against the LULC labels."""
from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import torch

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source (d2geo.data needs it)")

from d2geo.data.geotiff import GeoTiffError, read_modalities  # noqa: E402
from d2geo.encoders.terramind import TERRAMIND_MODALITIES, terramind_stats  # noqa: E402

MODS = ("S2L2A", "S1RTC", "DEM")


def _places(root):
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(root, "S2L2A", "*.tif")))
    assert len(names) == 5, names
    return names


def _files(root, name, mods=MODS):
    return {m: os.path.join(root, m, name) for m in mods}


def test_real_modalities_stack_with_their_band_names_and_values(terramind_examples):
    for name in _places(terramind_examples):
        s = read_modalities(_files(terramind_examples, name))
        assert s.band_names == tuple([f"S2L2A:{b}" for b in TERRAMIND_MODALITIES["S2L2A"].bands]
                                     + ["S1RTC:VV", "S1RTC:VH", "DEM:DEM"])
        raw = []
        for m in MODS:
            with rasterio.open(os.path.join(terramind_examples, m, name)) as src:
                raw.append(src.read().astype(np.float32))
                crs = src.crs
        np.testing.assert_array_equal(s.image, np.concatenate(raw))
        assert s.image.shape == (15, 224, 224) and s.valid.all()
        assert s.metadata["gsd"] == 10.0 and crs.to_epsg() // 100 in (326, 327)
        assert -33 < s.image[12:14].mean() < 1  # S1RTC in dB
    # a selection in another order, across modalities
    s = read_modalities(_files(terramind_examples, name), bands=["DEM", "S1RTC:VH", "S2L2A:B8A", "S2L2A:B02"])
    assert s.band_names == ("DEM:DEM", "S1RTC:VH", "S2L2A:B8A", "S2L2A:B02")
    np.testing.assert_array_equal(s.image[1], raw[1][1])
    np.testing.assert_array_equal(s.image[2], raw[0][8])


def test_real_s2l1c_and_s2rgb_read_with_their_modality_bands(terramind_examples):
    name = _places(terramind_examples)[0]
    s = read_modalities(_files(terramind_examples, name, ("S2L1C", "S2RGB", "S1RTC")))
    assert s.image.shape == (18, 224, 224)
    assert s.band_names[10] == "S2L1C:B10" and s.band_names[13:16] == ("S2RGB:red", "S2RGB:green", "S2RGB:blue")
    with rasterio.open(os.path.join(terramind_examples, "S2RGB", name)) as src:
        np.testing.assert_array_equal(s.image[13:16], src.read().astype(np.float32))


def test_real_file_of_another_modality_is_refused(terramind_examples):
    name = _places(terramind_examples)[0]
    with pytest.raises(GeoTiffError, match="is the S2L2A file but holds 13 bands.*another modality"):
        read_modalities({"S2L2A": os.path.join(terramind_examples, "S2L1C", name)})
    with pytest.raises(GeoTiffError, match="'S1GRD', which is not one of the files' modalities"):
        read_modalities(_files(terramind_examples, name), bands=["S1GRD:VV"])


def test_modalities_on_another_grid_are_refused(terramind_examples, tmp_path):
    name = _places(terramind_examples)[0]
    src_path = os.path.join(terramind_examples, "DEM", name)
    with rasterio.open(src_path) as src:
        profile, data = src.profile, src.read()
    profile.update(transform=profile["transform"] * rasterio.Affine.translation(3, 0))
    moved = tmp_path / "dem.tif"
    with rasterio.open(moved, "w", **profile) as dst:
        dst.write(data)
    files = {**_files(terramind_examples, name, MODS[:2]), "DEM": str(moved)}
    with pytest.raises(GeoTiffError, match="another CRS/transform.*onto one grid"):
        read_modalities(files)


def test_mapper_reads_modality_files_and_refuses_options_that_do_not_fit(terramind_examples):
    pytest.importorskip("detectron2", reason="detectron2 is not installed: see README")
    from d2geo.data.datasets import load_geo_semseg
    from d2geo.data.mapper import GeoDatasetMapper

    name = _places(terramind_examples)[0]
    (d,) = load_geo_semseg([(_files(terramind_examples, name), os.path.join(terramind_examples, "LULC", name))])
    assert d["file_name"].endswith(os.path.join("S2L2A", name)) and list(d["modality_files"]) == list(MODS)
    bands = ["S2L2A:nir_narrow", "S1RTC:VH", "DEM"]
    out = GeoDatasetMapper(is_train=False, bands=bands)(d)
    assert out["image"].shape == (3, 224, 224) and out["sem_seg"].shape == (224, 224)
    with rasterio.open(os.path.join(terramind_examples, "S1RTC", name)) as src:
        np.testing.assert_array_equal(out["image"][1].numpy(), src.read(2).astype(np.float32))
    with pytest.raises(GeoTiffError, match="sensor='sentinel-2-l2a' names one sensor.*one per modality"):
        GeoDatasetMapper(is_train=False, bands=bands, sensor="sentinel-2-l2a")(d)
    with pytest.raises(GeoTiffError, match=r"\['num_frames'\] are for a time series"):
        GeoDatasetMapper(is_train=False, bands=bands)({**d, "geo": {"num_frames": 2}})


def test_semantic_fpn_config_trains_on_real_s2l2a_s1rtc_dem_and_lulc(terramind_examples, tmp_path):
    pytest.importorskip("detectron2", reason="detectron2 is not installed: see README")
    from detectron2.config import LazyConfig, instantiate
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from d2geo import model_zoo
    from d2geo.data.datasets import register_geo_semseg

    pairs = [(_files(terramind_examples, n), os.path.join(terramind_examples, "LULC", n))
             for n in _places(terramind_examples)]
    name = "_real_terramind_lulc_train"
    for catalog in (DatasetCatalog, MetadataCatalog):
        if name in catalog.list():
            catalog.remove(name)
    # LULC class ids 1..9 as stored (seen: 1-7 and 9) -> training labels 0..8
    register_geo_semseg(name, pairs, stuff_classes=[f"lulc_{v}" for v in range(1, 10)],
                        geo=dict(label_map={v: v - 1 for v in range(1, 10)} | {0: 255}))
    try:
        torch.manual_seed(0)
        cfg = LazyConfig.apply_overrides(model_zoo.get_config("terramind/semantic_fpn_v1_base.py"),
                                         [f"train.output_dir={tmp_path}"])
        net = cfg.model.backbone.net
        assert net.encoder_kwargs["bands"] == cfg.dataloader.train.mapper.bands
        net.weights = None
        net.pretrained = False
        net.drop_path_rate = 0.0
        net.layers = (0, 1, 2, 3)
        net.encoder = "terramind_v1_tiny"
        net.encoder_kwargs = dict(net.encoder_kwargs, embed_dim=32, depth=4, num_heads=2)
        cfg.model.backbone.out_channels = 32
        cfg.model.sem_seg_head.conv_dims = 32
        cfg.model.sem_seg_head.num_classes = 9
        cfg.dataloader.train.dataset.names = name
        cfg.dataloader.train.mapper.augmentations = []
        cfg.dataloader.train.total_batch_size = 5
        cfg.dataloader.train.num_workers = 0
        batch = next(iter(instantiate(cfg.dataloader.train)))
        assert batch[0]["image"].shape == (15, 224, 224)
        assert list(cfg.model.pixel_mean) == terramind_stats(["S2L2A", "S1RTC", "DEM"])[0]
        labels = torch.unique(torch.cat([b["sem_seg"].flatten() for b in batch])).tolist()
        assert set(labels) <= set(range(9)) and len(labels) > 3
        from heads_tiny import train_steps

        model, totals = train_steps(cfg, steps=8, lr=2e-3, batch=batch)
        enc = model.backbone.net.encoder
        for m in MODS:  # every modality's patch embedding learns
            assert enc.patch_embed[m].weight.grad.abs().sum() > 0
        assert sum(totals[-2:]) / 2 < 0.8 * sum(totals[:2]) / 2, totals
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
