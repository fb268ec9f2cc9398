"""The two-modality OlmoEarth config (Sentinel-2 L2A + Sentinel-1 in one encoder) trains tiny: the shipped
config with a tiny encoder of the same code path, a tiny head, no upstream weights, on a fixed batch of
14-channel images; its statistics come per modality from ``olmoearth_stats``."""
import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")

from detectron2.config import LazyConfig, instantiate  # noqa: E402

from helpers import tiny_semseg_head  # noqa: E402
from heads_tiny import falling, train_steps  # noqa: E402
from d2geo import model_zoo  # noqa: E402
from d2geo.encoders.olmoearth import olmoearth_stats  # noqa: E402
from d2geo.modeling import find_geo_backbones  # noqa: E402

NAME = "olmoearth/semantic_fpn_v1_base_multimodal.py"


def test_two_modality_config_trains_tiny(tmp_path):
    torch.manual_seed(0)
    cfg = LazyConfig.apply_overrides(model_zoo.get_config(NAME), [f"train.output_dir={tmp_path}"])
    net = cfg.model.backbone.net
    bands = list(net.encoder_kwargs.bands)
    assert bands[:12] == [f"S2L2A:{b}" for b in ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A",
                                                  "B09", "B11", "B12")]
    assert bands[12:] == ["S1RTC:VV", "S1RTC:VH"] == list(cfg.dataloader.train.mapper.bands)[12:]
    assert (list(cfg.model.pixel_mean), list(cfg.model.pixel_std)) == tuple(olmoearth_stats(bands))
    assert net.encoder == "olmoearth_v1_base" and net.pretrained is True and net.weights is None
    net.pretrained, net.drop_path_rate, net.layers = False, 0.0, (0, 1, 2, 3)
    net.encoder_kwargs = dict(net.encoder_kwargs, embed_dim=64, depth=4, num_heads=4)
    tiny_semseg_head(cfg.model)
    cfg.model.sem_seg_head.num_classes = 4
    g = torch.Generator().manual_seed(0)
    mean, std = torch.tensor(cfg.model.pixel_mean), torch.tensor(cfg.model.pixel_std)
    batch = []
    for i in range(2):
        image = mean[:, None, None] + std[:, None, None] * 0.25 * torch.randn(14, 32, 32, generator=g)
        label = (image[3] > mean[3]).long() + 2 * (image[12] > mean[12]).long()  # needs both sensors
        batch.append({"image": image, "sem_seg": label, "height": 32, "width": 32,
                      "metadata": {"timestamps": torch.tensor([1.62e9 + i * 1e7], dtype=torch.float64), "gsd": 10.0}})
    model = instantiate(cfg.model)
    (backbone,) = find_geo_backbones(model)
    assert backbone.encoder.modalities == ("sentinel2_l2a", "sentinel1")
    model, totals = train_steps(cfg, steps=10, lr=3e-3, model=model, batch=batch)
    assert falling(totals), totals


def test_two_modality_config_trains_on_real_s2l2a_s1rtc_and_lulc(terramind_examples, tmp_path):
    """The config's data path: {"S2L2A", "S1RTC"} files per place, stacked by the mapper (read_modalities),
    with the place's timestamps, LULC labels; a tiny encoder trains and both modalities' embeddings learn."""
    import glob
    import os

    from detectron2.config import LazyCall as L
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data import transforms as T

    from d2geo.data.datasets import register_geo_semseg

    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(terramind_examples, "S2L2A", "*.tif")))
    pairs = [({m: os.path.join(terramind_examples, m, n) for m in ("S2L2A", "S1RTC")},
              os.path.join(terramind_examples, "LULC", n)) for n in names]
    name = "_real_olmoearth_s2s1_lulc_train"
    for catalog in (DatasetCatalog, MetadataCatalog):
        if name in catalog.list():
            catalog.remove(name)
    register_geo_semseg(name, pairs, stuff_classes=[f"lulc_{v}" for v in range(1, 10)],
                        geo=dict(label_map={v: v - 1 for v in range(1, 10)} | {0: 255}))
    try:
        torch.manual_seed(0)
        cfg = LazyConfig.apply_overrides(model_zoo.get_config(NAME), [f"train.output_dir={tmp_path}"])
        net = cfg.model.backbone.net
        net.pretrained, net.drop_path_rate, net.layers = False, 0.0, (0, 1, 2, 3)
        net.encoder_kwargs = dict(net.encoder_kwargs, embed_dim=32, depth=4, num_heads=4)
        tiny_semseg_head(cfg.model)
        cfg.model.sem_seg_head.num_classes = 9
        cfg.dataloader.train.dataset.names = name
        cfg.dataloader.train.mapper.augmentations = [L(T.CropTransform)(x0=64, y0=64, w=64, h=64)]
        cfg.dataloader.train.total_batch_size = 4
        cfg.dataloader.train.num_workers = 0
        batch = next(iter(instantiate(cfg.dataloader.train)))
        assert batch[0]["image"].shape == (14, 64, 64) and "timestamps" in batch[0]["metadata"]
        model, totals = train_steps(cfg, steps=8, lr=3e-3, batch=batch)
        enc = model.backbone.net.encoder
        assert enc.modalities == ("sentinel2_l2a", "sentinel1")
        for g in range(4):  # the three Sentinel-2 band groups and the Sentinel-1 one learn
            assert enc.patch_embed[g].weight.grad.abs().sum() > 0, g
        assert falling(totals), totals
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
