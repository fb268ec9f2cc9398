"""The real TerraMind example tiles (Sentinel-2 L2A/L1C, Sentinel-1, LULC at five UTM places):
read with their real metadata, band ids mapped to the encoders' pretrained bands, and a
semantic FPN config training on S2L2A + LULC."""
from __future__ import annotations

import datetime as dt
import glob
import os

import numpy as np
import pytest
import torch

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")

from d2geo.data.geotiff import read_geotiff  # noqa: E402
from d2geo.encoders import build_encoder  # noqa: E402
from d2geo.encoders.bands import HLS_BANDS  # noqa: E402

#: Sentinel-2 L2A file order of these tiles (their README): B01..B09, B8A after B08, no B10
S2L2A_ORDER = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]


def _tiles(root, modality):
    paths = sorted(glob.glob(os.path.join(root, modality, "*.tif")))
    assert len(paths) == 5, paths
    return paths


def test_real_sentinel2_tiles_read_with_hls_names_and_their_metadata(terramind_examples):
    from pyproj import Transformer

    for path in _tiles(terramind_examples, "S2L2A"):
        s = read_geotiff(path, bands=list(HLS_BANDS), sensor="sentinel-2-l2a", fill=None)
        assert s.band_names == ("B02", "B03", "B04", "B8A", "B11", "B12")
        with rasterio.open(path) as src:
            raw = src.read().astype(np.float32)
            crs, tr, h, w = src.crs, src.transform, src.height, src.width
        assert crs.to_epsg() // 100 in (326, 327)  # UTM north/south
        np.testing.assert_array_equal(s.image, raw[[S2L2A_ORDER.index(b) for b in s.band_names]])
        # location: the tile centre in WGS84; GSD: 10 m
        lon, lat = Transformer.from_crs(crs.to_wkt(), "EPSG:4326", always_xy=True).transform(
            tr.c + tr.a * w / 2, tr.f + tr.e * h / 2)
        np.testing.assert_allclose(s.metadata["latlon"], [lat, lon], atol=1e-7)
        assert s.metadata["gsd"] == 10.0
        np.testing.assert_allclose(s.metadata["wavelengths"], [0.493, 0.56, 0.665, 0.865, 1.61, 2.19], rtol=1e-6)
        assert "timestamps" not in s.metadata  # the S2L2A files carry no date
    l1c = read_geotiff(_tiles(terramind_examples, "S2L1C")[0], sensor="sentinel-2-l1c")
    assert l1c.band_names[10] == "B10" and l1c.image.shape[0] == 13


def test_real_tiles_with_a_datetime_tag_give_their_acquisition_time(terramind_examples):
    for modality in ("LULC", "S1RTC"):
        for path in _tiles(terramind_examples, modality):
            with rasterio.open(path) as src:
                tag = src.tags()["datetime"]
            expected = dt.datetime.fromisoformat(tag[:19]).replace(tzinfo=dt.timezone.utc).timestamp()
            s = read_geotiff(path, sensor="sentinel-1" if modality == "S1RTC" else None)
            assert s.metadata["timestamps"].tolist() == [expected]
            assert s.metadata["gsd"] == 10.0
    s1 = read_geotiff(_tiles(terramind_examples, "S1RTC")[0], sensor="sentinel-1")
    assert s1.band_names == ("VV", "VH")  # the files' descriptions say 'bands' for both


def test_real_sentinel2_ids_map_onto_prithvi_and_dinov3_bands(terramind_examples):
    path = _tiles(terramind_examples, "S2L2A")[0]
    torch.manual_seed(0)
    # Prithvi: all of the file's bands but its six HLS bands' pretrained kernels
    kw = dict(embed_dim=32, depth=1, num_heads=2, img_size=224, num_frames=1)
    sd = build_encoder("prithvi_eo_v2_300", **kw).state_dict()
    s = read_geotiff(path, sensor="sentinel-2-l2a")
    assert s.band_names == tuple(S2L2A_ORDER)
    enc = build_encoder("prithvi_eo_v2_300", weights=sd, bands=s.band_names, **kw).eval()
    kernel, full = enc.patch_embed["proj"].weight, sd["patch_embed.proj.weight"]
    for j, band in enumerate(S2L2A_ORDER):
        if band in ("B02", "B03", "B04", "B8A", "B11", "B12"):
            hls = ["B02", "B03", "B04", "B8A", "B11", "B12"].index(band)
            torch.testing.assert_close(kernel[:, j], full[:, hls])
        else:
            assert kernel[:, j].abs().sum() == 0
    # DINOv3: the RGB bands of the file, named by their Sentinel-2 ids
    rgb = read_geotiff(path, bands=["red", "green", "blue"], sensor="sentinel-2-l2a")
    assert rgb.band_names == ("B04", "B03", "B02")
    dsd = build_encoder("dinov3_test", depth=1).vit.state_dict()
    dino = build_encoder("dinov3_test", weights=dsd, bands=rgb.band_names, depth=1).eval()
    torch.testing.assert_close(dino.vit.patch_embed.proj.weight, dsd["patch_embed.proj.weight"])
    x = torch.as_tensor(rgb.image[None] / 3000.0)
    with torch.no_grad():
        ref = dino.forward_features(x, layers=[0])[0]
        for c in range(3):
            y = x.clone()
            y[:, c] += 0.5
            assert (dino.forward_features(y, layers=[0])[0] - ref).abs().max() > 1e-4


def test_semantic_fpn_config_trains_on_real_s2l2a_and_lulc(terramind_examples, tmp_path):
    from detectron2.config import LazyConfig, instantiate
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from d2geo import model_zoo
    from d2geo.data.datasets import register_geo_semseg

    pairs = [(p, p.replace("S2L2A", "LULC")) for p in _tiles(terramind_examples, "S2L2A")]
    # LULC class ids 1..9 as stored (values seen: 1-7 and 9) -> training labels 0..8
    name = "_real_s2l2a_lulc_train"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_geo_semseg(name, pairs, stuff_classes=[f"lulc_{v}" for v in range(1, 10)],
                        geo=dict(sensor="sentinel-2-l2a", scale=1e-4,
                                 label_map={v: v - 1 for v in range(1, 10)} | {0: 255}))
    try:
        torch.manual_seed(0)
        cfg = LazyConfig.apply_overrides(model_zoo.get_config("prithvi/semantic_fpn_eo_v2_300_tl.py"),
                                         [f"train.output_dir={tmp_path}"])
        net = cfg.model.backbone.net
        net.encoder = "prithvi_test"  # Prithvi's tiny test variant: nothing to download
        net.weights = None
        net.pretrained = False
        net.drop_path_rate = 0.0
        net.layers = (0, 1, 2, 3)
        net.temporal_fold = "mean"
        net.encoder_kwargs = dict(net.encoder_kwargs, num_frames=1, bands=["B02", "B03", "B04", "B8A", "B11", "B12"])
        cfg.model.backbone.out_channels = 32
        cfg.model.sem_seg_head.conv_dims = 32
        cfg.model.sem_seg_head.num_classes = 9
        cfg.model.pixel_mean = [0.1] * 6
        cfg.model.pixel_std = [0.1] * 6
        cfg.dataloader.train.dataset.names = name
        cfg.dataloader.train.mapper.bands = list(HLS_BANDS)  # Prithvi's names, read from S2 B01..B12
        cfg.dataloader.train.mapper.augmentations = []
        cfg.dataloader.train.total_batch_size = 5
        cfg.dataloader.train.num_workers = 0
        batch = next(iter(instantiate(cfg.dataloader.train)))
        assert batch[0]["image"].shape == (6, 224, 224)
        assert batch[0]["metadata"]["gsd"] == 10.0 and "latlon" in batch[0]["metadata"]
        assert set(torch.unique(torch.cat([b["sem_seg"].flatten() for b in batch])).tolist()) <= set(range(9))
        from heads_tiny import train_steps

        model, totals = train_steps(cfg, steps=8, lr=2e-3, batch=batch)
        assert sum(totals[-2:]) / 2 < 0.8 * sum(totals[:2]) / 2, totals
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_real_s1_tile_metadata_reaches_copernicusfm_as_upstream_reads_it(terramind_examples):
    """A real Sentinel-1 RTC tile through the GeoTIFF reader and Copernicus-FM equals torchgeo's
    CopernicusFM given the tile's (lon, lat, days since 1970, km^2 per patch) computed here from
    the file itself, with Copernicus-FM's SAR wavelength/bandwidth (5 cm, 1 m)."""
    from functools import partial

    from pyproj import Transformer

    from helpers import rel_err, torchgeo_copernicusfm

    ref = torchgeo_copernicusfm()
    path = _tiles(terramind_examples, "S1RTC")[0]
    s = read_geotiff(path, sensor="sentinel-1")
    with rasterio.open(path) as src:
        crs, tr, h, w, tag = src.crs, src.transform, src.height, src.width, src.tags()["datetime"]
    lon, lat = Transformer.from_crs(crs.to_wkt(), "EPSG:4326", always_xy=True).transform(
        tr.c + tr.a * w / 2, tr.f + tr.e * h / 2)
    days = dt.datetime.fromisoformat(tag[:19]).replace(tzinfo=dt.timezone.utc).timestamp() / 86400
    lat32, lon32 = torch.tensor([lat, lon]).float().double().tolist()  # the schema holds latlon as float32
    torch.manual_seed(0)
    model = ref.CopernicusFM(img_size=224, patch_size=16, embed_dim=32, depth=1, num_heads=2,
                             norm_layer=partial(torch.nn.LayerNorm, eps=1e-6)).eval()
    with torch.no_grad():
        for name in ("coord_token", "scale_token", "time_token", "pos_embed"):
            getattr(model, name).normal_()
    enc = build_encoder("copernicusfm_vitb16", weights=model.state_dict(), embed_dim=32, depth=1, num_heads=2,
                        bands=s.band_names, sensor="sentinel-1").eval()
    x = torch.as_tensor(s.image, dtype=torch.float32)[None] / 10  # any numbers: the same for both
    md = {"latlon": torch.as_tensor(s.metadata["latlon"])[None], "gsd": torch.tensor([s.metadata["gsd"]]),
          "timestamps": torch.as_tensor(s.metadata["timestamps"], dtype=torch.float64)[None],
          "wavelengths": torch.as_tensor(s.metadata["wavelengths"])}
    up_md = torch.tensor([[lon32, lat32, days, (10.0 * 16 / 1000) ** 2]], dtype=torch.float64)
    taken = []
    model.blocks[-1].register_forward_hook(lambda m, i, o: taken.append(o))
    with torch.no_grad():
        got = enc.forward_features(x, layers=[0], norm=False, metadata=md)[0]
        model.forward_features(x, up_md, wavelengths=[5e7, 5e7], bandwidths=[1e9, 1e9])
    want = taken[0][:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    assert rel_err(got, want) <= 1e-4
