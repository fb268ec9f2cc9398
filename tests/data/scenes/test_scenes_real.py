"""The real TerraMind example tiles as scenes (five UTM zones) with labels made by vectorizing
their LULC rasters into EPSG:4326 polygons: the rasterized windows give back the LULC raster,
and a tiny Prithvi semantic FPN trains on the windows with a falling loss."""
from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import torch

from d2geo.data.mapper import GeoDatasetMapper
from d2geo.data.scenes import build_scene_datasets

import scene_fixtures  # this folder's helpers and fixtures

_clean_catalog = scene_fixtures._clean_catalog

#: LULC values 1..9 (values seen: 1-7 and 9) -> class ids 0..8
LULC_CLASSES = {v: v - 1 for v in range(1, 10)}


def _vectorize_lulc(root, out_path) -> str:
    """Every LULC tile's classes as polygons (rasterio.features.shapes), reprojected to EPSG:4326."""
    import geopandas as gpd
    import pandas as pd
    import rasterio
    import shapely
    from rasterio import features

    frames = []
    for path in sorted(glob.glob(os.path.join(root, "LULC", "*.tif"))):
        with rasterio.open(path) as src:
            data = src.read(1)
            shapes = [(shapely.geometry.shape(g), int(v)) for g, v in
                      features.shapes(data, transform=src.transform, connectivity=4)]
            frames.append(gpd.GeoDataFrame({"lulc": [v for _, v in shapes], "tile": os.path.basename(path)},
                                           geometry=[g for g, _ in shapes], crs=src.crs).to_crs("EPSG:4326"))
    gdf = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs="EPSG:4326")
    gdf.to_file(out_path, engine="pyogrio")
    return os.fspath(out_path)


def _interior(labels: np.ndarray) -> np.ndarray:
    """Pixels whose 3 x 3 neighbourhood holds one class (away from polygon edges)."""
    pad = np.pad(labels, 1, mode="edge")
    same = np.ones(labels.shape, bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            same &= pad[dy:dy + labels.shape[0], dx:dx + labels.shape[1]] == labels
    return same


@pytest.fixture(scope="module")
def lulc_gpkg(tmp_path_factory, request):
    from helpers import TERRAMIND_EXAMPLES

    if not os.path.isdir(os.path.join(TERRAMIND_EXAMPLES, "LULC")):
        pytest.skip(f"the real example tiles are not at {TERRAMIND_EXAMPLES} (set D2GEO_TERRAMIND_EXAMPLES)")
    return TERRAMIND_EXAMPLES, _vectorize_lulc(TERRAMIND_EXAMPLES, tmp_path_factory.mktemp("lulc") / "lulc.gpkg")


def test_rasterized_vector_lulc_equals_the_lulc_rasters(lulc_gpkg):
    import rasterio

    root, gpkg = lulc_gpkg
    datasets, *_ = build_scene_datasets("_real_lulc", os.path.join(root, "S2L2A"), gpkg, task="semantic",
                                        classes=LULC_CLASSES, class_key="lulc", window=96, sampler="grid")
    dicts = datasets["_real_lulc"]
    assert len({d["file_name"] for d in dicts}) == 5 and len(dicts) == 5 * 9  # 224 px: starts 0, 96, 128
    mapper = GeoDatasetMapper(is_train=False, augmentations=[])
    agree = total = agree_all = total_all = 0
    for d in dicts:
        col, row, w, h = d["window"]
        with rasterio.open(d["file_name"].replace("S2L2A", "LULC")) as src:
            truth = src.read(1)[row:row + h, col:col + w].astype(np.int64) - 1
        got = mapper(d)["sem_seg"].numpy()
        inner = _interior(truth)
        agree += int((got[inner] == truth[inner]).sum())
        total += int(inner.sum())
        agree_all += int((got == truth).sum())
        total_all += truth.size
    assert total > 0.8 * total_all
    assert agree / total >= 0.99, agree / total
    assert agree_all / total_all >= 0.97, agree_all / total_all


def test_tiny_prithvi_trains_on_real_scene_windows(lulc_gpkg, tmp_path):
    from detectron2.config import LazyConfig, instantiate
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from d2geo import model_zoo
    from d2geo.data.scenes import register_geo_scenes
    from d2geo.encoders.bands import HLS_BANDS

    root, gpkg = lulc_gpkg
    names = register_geo_scenes("_real_scenes", os.path.join(root, "S2L2A"), gpkg, task="semantic",
                                classes=LULC_CLASSES, class_key="lulc", window=112, sampler="random", count=10,
                                seed=0, geo=dict(sensor="sentinel-2-l2a", scale=1e-4))
    try:
        torch.manual_seed(0)
        cfg = LazyConfig.apply_overrides(model_zoo.get_config("prithvi/semantic_fpn_eo_v2_300_tl.py"),
                                         [f"train.output_dir={tmp_path}"])
        net = cfg.model.backbone.net
        net.weights = None
        net.pretrained = False  # tiny random encoder: nothing to download
        net.drop_path_rate = 0.0
        net.layers = (0, 1, 2, 3)
        net.temporal_fold = "mean"
        net.encoder_kwargs = dict(net.encoder_kwargs, num_frames=1, embed_dim=32, depth=4, num_heads=2,
                                  img_size=112, bands=["B02", "B03", "B04", "B8A", "B11", "B12"])
        cfg.model.backbone.out_channels = 32
        cfg.model.sem_seg_head.conv_dims = 32
        cfg.model.sem_seg_head.num_classes = 9
        cfg.model.pixel_mean = [0.1] * 6
        cfg.model.pixel_std = [0.1] * 6
        cfg.dataloader.train.dataset.names = names[0]
        cfg.dataloader.train.mapper.bands = list(HLS_BANDS)  # Prithvi's names, read from S2 B01..B12
        cfg.dataloader.train.mapper.augmentations = []
        cfg.dataloader.train.total_batch_size = 5
        cfg.dataloader.train.num_workers = 0
        batch = next(iter(instantiate(cfg.dataloader.train)))
        assert batch[0]["image"].shape == (6, 112, 112)
        from heads_tiny import train_steps

        _, totals = train_steps(cfg, steps=8, lr=2e-3, batch=batch)
        assert sum(totals[-2:]) / 2 < 0.8 * sum(totals[:2]) / 2, totals
    finally:
        for n in names:
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)
