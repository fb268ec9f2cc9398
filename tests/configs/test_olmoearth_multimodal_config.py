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
