"""Every encoder family trains in its packaged detection and segmentation config.

The configs are the shipped ones with four changes: a tiny encoder (the same family and
code path, few blocks), tiny heads, no upstream weights, and d2geo's synthetic GeoTIFFs (HLS-like
bands, one or four dates) read through ``GeoDatasetMapper`` with their metadata. A fixed
batch is trained for a few steps with the config's own optimizer; the loss must fall.
"""
import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")

from detectron2.config import LazyConfig, instantiate  # noqa: E402

from helpers import tiny_rcnn_heads, tiny_semseg_head  # noqa: E402
from heads_tiny import CROMA_JOINT, falling, synthetic_geotiffs, train_steps  # noqa: E402
from d2geo import model_zoo  # noqa: E402
from d2geo.modeling import find_geo_backbones  # noqa: E402
from d2geo.data.synthetic.generator import HLS_BANDS  # noqa: E402
from d2geo.encoders.bands import bandwidths  # noqa: E402

FAMILIES = {
    "dinov2": dict(embed_dim=64, depth=4, num_heads=4),
    "dinov3": dict(embed_dim=64, depth=4, num_heads=4),
    "prithvi": dict(embed_dim=64, depth=4, num_heads=4),
    "clay": dict(embed_dim=72, depth=4, num_heads=4, head_dim=16),
    "ssl4eo": dict(embed_dim=64, depth=4, num_heads=4, img_size=64),
    # BEiT-style: shared relative position table, layer scale, q/v biases (its own code path)
    "ssl4eo_data2vec": dict(embed_dim=64, depth=4, num_heads=4, img_size=64),
    "scalemae": dict(embed_dim=64, depth=4, num_heads=4, img_size=64),
    "satlas": dict(embed_dim=32, depths=(1, 1, 1, 1), num_heads=(2, 2, 4, 4)),
    "dofa": dict(embed_dim=64, depth=4, num_heads=4, img_size=64),
    "terramind": dict(embed_dim=64, depth=4, num_heads=4),
    "copernicusfm": dict(embed_dim=64, depth=4, num_heads=4, img_size=64),
    # the joint encoder (the tapped one) has depth // 2 = 4 blocks
    "croma": dict(embed_dim=64, depth=8, num_heads=4),
    "panopticon": dict(embed_dim=64, depth=4, num_heads=4, attn_dim=48, attn_heads=4),
    # four dates of the synthetic files (months from their timestamps); 8 px patches
    "galileo": dict(embed_dim=64, depth=4, num_heads=4, num_frames=4),
    # depth 3 + the cross-attention block: 4 blocks
    "anysat": dict(embed_dim=32, depth=3, num_heads=4),
    # the HLS bands: 2 of upstream's 3 Sentinel-2 band groups (absent bands zero-filled)
    "olmoearth": dict(embed_dim=64, depth=4, num_heads=4),
}
CONFIGS = {
    "dinov2": ("dinov2/mask_rcnn_vitb14.py", "dinov2/semantic_fpn_vitb14.py"),
    "dinov3": ("dinov3/mask_rcnn_vitl16_sat.py", "dinov3/semantic_fpn_vitl16_sat.py"),
    "prithvi": ("prithvi/mask_rcnn_eo_v2_300_tl.py", "prithvi/semantic_fpn_eo_v2_300_tl.py"),
    "clay": ("clay/mask_rcnn_v1_5_large.py", "clay/semantic_fpn_v1_5_large.py"),
    "ssl4eo": ("ssl4eo/mask_rcnn_vits16.py", "ssl4eo/semantic_fpn_vits16.py"),
    "ssl4eo_data2vec": ("ssl4eo/mask_rcnn_vits16_data2vec.py", "ssl4eo/semantic_fpn_vits16_data2vec.py"),
    "scalemae": ("scale_mae/mask_rcnn_vitl16.py", "scale_mae/semantic_fpn_vitl16.py"),
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
#: the synthetic files' HLS bands as TerraMind channels (its S2L2A modality's band ids)
TERRAMIND_HLS = ["S2L2A:B02", "S2L2A:B03", "S2L2A:B04", "S2L2A:B8A", "S2L2A:B11", "S2L2A:B12"]
#: the same bands as Galileo's channel groups S2_RGB, S2_NIR_20m, S2_SWIR
GALILEO_HLS = ["S2:B02", "S2:B03", "S2:B04", "S2:B8A", "S2:B11", "S2:B12"]
#: the synthetic files' HLS bands as AnySat's Sentinel-2 projector columns
ANYSAT_HLS = ["B02", "B03", "B04", "B8A", "B11", "B12"]
CASES = [(fam, cfg) for fam, pair in CONFIGS.items() for cfg in pair]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return synthetic_geotiffs(tmp_path_factory, "family", num_train=4)


@pytest.mark.parametrize("family, name", CASES, ids=[c for _, c in CASES])
def test_family_config_trains_on_synthetic_geotiffs(family, name, synthetic, tmp_path):
    torch.manual_seed(0)
    seg = "semantic_fpn" in name
    cfg = LazyConfig.apply_overrides(model_zoo.get_config(name), [f"train.output_dir={tmp_path}"])
    net = cfg.model.backbone.net if "net" in cfg.model.backbone else cfg.model.backbone.bottom_up
    # user-facing configs name the family's encoder and load its published weights by name,
    # never train from scratch (as tests/configs/test_configs.py checks for the real-size builds)
    assert net.encoder.startswith(family.split("_")[0]) and net.pretrained is True and net.weights is None
    assert net.encoder.endswith("_data2vec") == family.endswith("_data2vec")
    net.weights = None
    net.pretrained = False
    net.drop_path_rate = 0.0
    kwargs = dict(net.encoder_kwargs)
    kwargs.update(FAMILIES[family])
    rgb = family.startswith("dino") or family == "scalemae"
    bands = ["red", "green", "blue"] if rgb else list(HLS_BANDS)
    kwargs["bands"] = {"terramind": TERRAMIND_HLS, "croma": CROMA_JOINT,
                        "galileo": GALILEO_HLS, "anysat": ANYSAT_HLS}.get(family, bands)
    if family in ("clay", "dofa", "copernicusfm", "panopticon", "olmoearth"):
        kwargs["sensor"] = "hls"
    if family == "copernicusfm":  # HLS S30's bands are Sentinel-2 MSI's: their bandwidths
        kwargs["bandwidths"] = bandwidths("sentinel-2-l2a", ["B02", "B03", "B04", "B8A", "B11", "B12"])
    net.encoder_kwargs = kwargs
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
