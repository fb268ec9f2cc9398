"""Shared helpers of the family / head / adapter / LoRA / change-detection training tests:
synthetic GeoTIFF datasets, a packaged config shrunk to its family's tiny registered test
variant (``<family>_test``), trained a few steps on one fixed batch."""
from __future__ import annotations

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.utils.events import EventStorage

from d2geo import model_zoo

HLS = ["blue", "green", "red", "nir_narrow", "swir_1", "swir_2"]
RGB = ["red", "green", "blue"]
#: CROMA's joint encoder needs both sensors: the files' two SWIR bands stand in for VV, VH
CROMA_JOINT = ["S2L1C:B02", "S2L1C:B03", "S2L1C:B04", "S2L1C:B8A", "S1GRD:VV", "S1GRD:VH"]
#: the synthetic files' HLS bands as the families that name bands their own way take them:
#: TerraMind's S2L2A modality, Galileo's channel groups S2_RGB, S2_NIR_20m and S2_SWIR,
#: AnySat's Sentinel-2 projector columns (the others take HLS's names, with ``sensor="hls"``)
FAMILY_BANDS = {
    "terramind": ["S2L2A:B02", "S2L2A:B03", "S2L2A:B04", "S2L2A:B8A", "S2L2A:B11", "S2L2A:B12"],
    "croma": CROMA_JOINT,
    "galileo": ["S2:B02", "S2:B03", "S2:B04", "S2:B8A", "S2:B11", "S2:B12"],
    "anysat": ["B02", "B03", "B04", "B8A", "B11", "B12"],
}
#: families whose RGB weights take the files' red, green and blue bands
RGB_FAMILIES = ("dinov2", "dinov3", "scale_mae")


def family_test_variant(encoder: str) -> str:
    """The tiny registered test variant (``<family>_test``) of the family of ``encoder``."""
    from d2geo.encoders import encoder_family

    return f"{encoder_family(encoder)}_test"


def tiny_encoder(net) -> list[str]:
    """Point the GeoBackbone LazyCall ``net`` of a packaged config at its family's tiny test
    variant (the same code and structure, 4 blocks; no weights) and the synthetic files' bands;
    returns the bands the mapper must read (HLS, or RGB for the RGB families)."""
    from d2geo.encoders import encoder_family

    family = encoder_family(net.encoder)
    net.encoder = family_test_variant(net.encoder)
    net.weights = None
    net.pretrained = False  # tiny random encoder: nothing to download
    net.drop_path_rate = 0.0
    bands = list(RGB if family in RGB_FAMILIES else HLS)
    kwargs = dict(net.encoder_kwargs)
    kwargs["bands"] = FAMILY_BANDS.get(family, bands)
    if family in ("clay", "copernicusfm", "dofa", "panopticon", "olmoearth"):
        kwargs["sensor"] = "hls"
    if family == "copernicusfm":  # HLS S30's bands are Sentinel-2 MSI's: their bandwidths
        from d2geo.encoders.bands import bandwidths

        kwargs["bandwidths"] = bandwidths("sentinel-2-l2a", ["B02", "B03", "B04", "B8A", "B11", "B12"])
    net.encoder_kwargs = kwargs
    return bands


def family_of(config_name: str) -> str:
    return config_name.split("/")[0]  # the config folder is the family key


def synthetic_geotiffs(tmp_path_factory, name: str, *, num_train: int = 2, seed: int = 5) -> dict[int, str]:
    """d2geo's synthetic GeoTIFFs (64 px, HLS bands), one-date and four-date, registered as
    ``_<name>_t1`` and ``_<name>_t4``: ``{frames: prefix}`` (for a module-scoped fixture)."""
    pytest.importorskip("rasterio", reason="the GeoTIFF reader needs rasterio")
    from d2geo.data.synthetic import make_synthetic_dataset, register_synthetic_geotiff

    names = {}
    for frames in (1, 4):
        root = tmp_path_factory.mktemp(f"{name}_t{frames}")
        data = make_synthetic_dataset(root, num_train=num_train, num_val=1, size=64, num_frames=frames, seed=seed)
        register_synthetic_geotiff(data, prefix=f"_{name}_t{frames}")
        names[frames] = f"_{name}_t{frames}"
    return names


def tiny_config(name: str, datasets: dict[int, str], tmp_path, *, channels: int = 32):
    """The packaged config ``name`` with its family's tiny test variant (``<family>_test``), no
    weights, HLS or RGB bands of the synthetic GeoTIFFs ``datasets`` (of :func:`synthetic_geotiffs`):
    the four-date ones for Prithvi, the one-date ones for the others."""
    family = family_of(name)
    dataset_prefix = datasets[4 if family == "prithvi" else 1]
    cfg = LazyConfig.apply_overrides(model_zoo.get_config(name), [f"train.output_dir={tmp_path}"])
    hierarchical = "net" not in cfg.model.backbone  # Swin: the GeoBackbone is the backbone (or FPN's bottom_up)
    net = cfg.model.backbone.get("bottom_up", cfg.model.backbone) if hierarchical else cfg.model.backbone.net
    bands = tiny_encoder(net)
    net.layers = (0, 1, 2, 3)
    cfg.model.pixel_mean = [1000.0] * len(bands)
    cfg.model.pixel_std = [1000.0] * len(bands)
    head = cfg.model.sem_seg_head
    if hierarchical and "res2" in head.input_shape:  # the head takes the stages themselves
        from d2geo.encoders import get_encoder_config

        width = get_encoder_config(net.encoder)["embed_dim"]
        for i, name in enumerate(("res2", "res3", "res4", "res5")):
            head.input_shape[name].channels = width * 2**i
    else:
        cfg.model.backbone.out_channels = channels
    head.num_classes = 4
    if "channels" in head:
        head.channels = channels
    if "conv_dims" in head:
        head.conv_dims = channels
    cfg.dataloader.train.dataset.names = f"{dataset_prefix}_seg_train"
    cfg.dataloader.train.mapper.bands = bands
    cfg.dataloader.train.total_batch_size = 2
    cfg.dataloader.train.num_workers = 0
    return cfg


def train_steps(cfg, steps: int = 10, lr: float = 1e-3, model=None, batch=None):
    """Train ``steps`` steps on one fixed batch with the config's optimizer; returns
    (model, losses)."""
    torch.manual_seed(0)
    if batch is None:
        batch = next(iter(instantiate(cfg.dataloader.train)))
    if model is None:
        model = instantiate(cfg.model)
    model.train()
    cfg.optimizer.params.model = model
    cfg.optimizer.lr = lr
    optimizer = instantiate(cfg.optimizer)
    totals = []
    with EventStorage():
        for _ in range(steps):
            torch.manual_seed(1)  # the same proposal/ROI sampling draws every step
            losses = model(batch)
            total = sum(losses.values())
            assert torch.isfinite(total)
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            totals.append(total.item())
    return model, totals


def falling(totals, factor: float = 0.8) -> bool:
    return sum(totals[-3:]) / 3 < factor * sum(totals[:3]) / 3


def train_hierarchical_config(name: str, encoder_kwargs: dict, bands: list, tmp_path_factory, tmp_path,
                              *, steps: int = 10):
    """Train the packaged semantic FPN or Mask R-CNN config ``name`` of a hierarchical encoder
    (its GeoBackbone is FPN's ``bottom_up``) with ``encoder_kwargs`` (a tiny build of the same
    code path), no weights, ``bands`` of d2geo's synthetic GeoTIFFs; asserts the encoder gets
    gradients and the loss falls."""
    from helpers import tiny_rcnn_heads, tiny_semseg_head

    from d2geo.modeling import find_geo_backbones

    prefix = synthetic_geotiffs(tmp_path_factory, name.replace("/", "_")[:-3], num_train=4)[1]
    cfg = LazyConfig.apply_overrides(model_zoo.get_config(name), [f"train.output_dir={tmp_path}"])
    net = cfg.model.backbone.bottom_up
    assert net.pretrained is True and net.weights is None  # the user-facing config loads published weights
    net.pretrained = False
    net.drop_path_rate = 0.0
    net.encoder_kwargs = dict(net.encoder_kwargs, bands=list(bands), **encoder_kwargs)
    net.layers = (0, 1, 2, 3)
    cfg.model.pixel_mean = [1000.0] * len(bands)
    cfg.model.pixel_std = [1000.0] * len(bands)
    seg = "semantic_fpn" in name
    cfg.dataloader.train.dataset.names = f"{prefix}_{'seg' if seg else 'det'}_train"
    cfg.dataloader.train.mapper.bands = list(bands)
    cfg.dataloader.train.total_batch_size = 2
    cfg.dataloader.train.num_workers = 0
    if seg:
        tiny_semseg_head(cfg.model)
        cfg.model.sem_seg_head.num_classes = 4
    else:
        tiny_rcnn_heads(cfg.model)
        cfg.model.roi_heads.num_classes = 1
    model, totals = train_steps(cfg, steps=steps, lr=3e-3)
    (backbone,) = find_geo_backbones(model)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.encoder.parameters())
    assert falling(totals), totals
    return model
