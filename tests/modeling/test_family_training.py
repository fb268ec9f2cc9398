"""Every encoder family trains in its packaged detection and segmentation config.

The configs are the shipped ones with four changes: the family's tiny registered test variant
(``<family>_test``: the same code and structure as the config's variant, 4 blocks, no
weights), tiny heads, and d2geo's synthetic GeoTIFFs (HLS-like bands, one or four dates) read
through ``GeoDatasetMapper`` with their metadata. A fixed
batch is trained for a few steps with the config's own optimizer; the loss must fall.
"""
import random

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")

from detectron2.config import LazyConfig, instantiate  # noqa: E402

from helpers import tiny_rcnn_heads, tiny_semseg_head  # noqa: E402
from heads_tiny import falling, synthetic_geotiffs, tiny_encoder, train_steps  # noqa: E402
from d2geo import model_zoo  # noqa: E402
from d2geo.modeling import find_geo_backbones  # noqa: E402

CONFIGS = {
    "dinov2": ("dinov2/mask_rcnn_vitb14.py", "dinov2/semantic_fpn_vitb14.py"),
    "dinov3": ("dinov3/mask_rcnn_vitl16_sat.py", "dinov3/semantic_fpn_vitl16_sat.py"),
    "prithvi": ("prithvi/mask_rcnn_eo_v2_300_tl.py", "prithvi/semantic_fpn_eo_v2_300_tl.py"),
    "clay": ("clay/mask_rcnn_v1_5_large.py", "clay/semantic_fpn_v1_5_large.py"),
    "ssl4eo": ("ssl4eo/mask_rcnn_vits16.py", "ssl4eo/semantic_fpn_vits16.py"),
    "ssl4eo_data2vec": ("ssl4eo/mask_rcnn_vits16_data2vec.py", "ssl4eo/semantic_fpn_vits16_data2vec.py"),
    "scale_mae": ("scale_mae/mask_rcnn_vitl16.py", "scale_mae/semantic_fpn_vitl16.py"),
    # hierarchical: the GeoBackbone's res2..res5 go to detectron2's FPN (cfg.model.backbone.bottom_up)
    "satlas": ("satlas/mask_rcnn_swinb.py", "satlas/semantic_fpn_swinb.py"),
    "dofa": ("dofa/mask_rcnn_vitb16.py", "dofa/semantic_fpn_vitb16.py"),
    "terramind": ("terramind/mask_rcnn_v1_base.py", "terramind/semantic_fpn_v1_base.py"),
    "copernicusfm": ("copernicusfm/mask_rcnn_vitb16.py", "copernicusfm/semantic_fpn_vitb16.py"),
    "croma": ("croma/mask_rcnn_base.py", "croma/semantic_fpn_base.py"),
    "panopticon": ("panopticon/mask_rcnn_vitb14.py", "panopticon/semantic_fpn_vitb14.py"),
    "galileo": ("galileo/mask_rcnn_base.py", "galileo/semantic_fpn_base.py"),
    "anysat": ("anysat/mask_rcnn_base.py", "anysat/semantic_fpn_base.py"),
    "olmoearth": ("olmoearth/mask_rcnn_v1_base.py", "olmoearth/semantic_fpn_v1_base.py"),
}
CASES = [(fam, cfg) for fam, pair in CONFIGS.items() for cfg in pair]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return synthetic_geotiffs(tmp_path_factory, "family", num_train=4)


@pytest.mark.parametrize("family, name", CASES, ids=[c for _, c in CASES])
def test_family_config_trains_on_synthetic_geotiffs(family, name, synthetic, tmp_path):
    # every RNG the batch depends on (detectron2's TrainingSampler draws its seed from numpy's
    # global RNG): the same batch whatever ran before in the session
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    seg = "semantic_fpn" in name
    cfg = LazyConfig.apply_overrides(model_zoo.get_config(name), [f"train.output_dir={tmp_path}"])
    net = cfg.model.backbone.net if "net" in cfg.model.backbone else cfg.model.backbone.bottom_up
    # user-facing configs name the family's encoder and load its published weights by name,
    # never train from scratch (as tests/configs/test_configs.py checks for the real-size builds)
    assert net.encoder.startswith(family.split("_")[0]) and net.pretrained is True and net.weights is None
    assert net.encoder.endswith("_data2vec") == family.endswith("_data2vec")
    if family == "galileo":  # four dates of the synthetic files (months from their timestamps)
        net.encoder_kwargs.num_frames = 4
    bands = tiny_encoder(net)
    assert net.encoder == f"{family}_test"
    cfg.model.pixel_mean = [1000.0] * len(bands)
    cfg.model.pixel_std = [1000.0] * len(bands)
    frames = 4 if family in ("prithvi", "galileo") else 1
    prefix = synthetic[frames]
    task = "seg" if seg else "det"
    cfg.dataloader.train.dataset.names = f"{prefix}_{task}_train"
    cfg.dataloader.train.mapper.bands = bands
    cfg.dataloader.train.total_batch_size = 2
    cfg.dataloader.train.num_workers = 0
    if seg:
        net.layers = (0, 1, 2, 3)  # the four taps of the pyramid, in 4 blocks (Swin: 4 stages)
        tiny_semseg_head(cfg.model)
        cfg.model.sem_seg_head.num_classes = 4
    else:
        tiny_rcnn_heads(cfg.model)
        cfg.model.roi_heads.num_classes = 1

    batch = next(iter(instantiate(cfg.dataloader.train)))
    assert batch[0]["image"].shape[0] == len(bands)
    assert set(batch[0]["metadata"]) >= {"timestamps", "latlon", "gsd", "wavelengths"}
    model, totals = train_steps(cfg, steps=10, lr=3e-3, model=instantiate(cfg.model), batch=batch)
    (backbone,) = find_geo_backbones(model)
    encoder = backbone.encoder
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())
    assert falling(totals), totals
