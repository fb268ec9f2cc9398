"""Shared test helpers: the upstream reference modules and tiny checkpoints."""
from __future__ import annotations

import logging
import os
import types

import pytest
import torch

from benchmarks import upstream  # the pinned upstream wheels, shared with the benchmarks
from benchmarks.common import tiny_rcnn_heads  # noqa: F401  (the benchmarks' quick profile uses it too)

def _or_skip(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except upstream.UpstreamUnavailable as e:
        pytest.skip(str(e))


def load_upstream_module(dist: str, member: str, module_name: str, *, aliases=()) -> types.ModuleType:
    """One ``.py`` file of a pinned upstream wheel as a module (see :mod:`benchmarks.upstream`);
    skips the test when the reference cannot be had."""
    return _or_skip(upstream.load_upstream_module, dist, member, module_name, aliases=aliases)


def terratorch_prithvi() -> types.ModuleType:
    """terratorch's ``prithvi_mae`` module (``PrithviViT``), or a skip."""
    return _or_skip(upstream.terratorch_prithvi)


def claymodel() -> types.ModuleType:
    """claymodel's ``model`` module (``Encoder``, its ``src.*`` siblings aliased), or a skip."""
    return _or_skip(upstream.claymodel)


def terratorch_terramind() -> types.ModuleType:
    """terratorch's terramind model package (``TerraMindViT``, ``TerraMind``, ...), or a skip."""
    return _or_skip(upstream.terratorch_terramind)


def torchgeo_copernicusfm() -> types.ModuleType:
    """torchgeo's ``copernicusfm`` module (``CopernicusFM``, its siblings loaded), or a skip."""
    return _or_skip(upstream.torchgeo_copernicusfm)


def torchgeo_croma() -> types.ModuleType:
    """torchgeo's ``croma`` module (``CROMA``, ``get_2dalibi``), or a skip."""
    return _or_skip(upstream.torchgeo_croma)


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours - ref| / max |ref|: the fidelity measure of the test suite."""
    assert ours.shape == ref.shape, f"shapes differ: {tuple(ours.shape)} vs {tuple(ref.shape)}"
    return ((ours.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


#: Real Sentinel-1/2, DEM, NDVI and land-cover tiles (TerraMind examples, Apache-2.0) that
#: sit in the workplace's shared folder beside the repository; never copied into the repo.
TERRAMIND_EXAMPLES = os.environ.get(
    "D2GEO_TERRAMIND_EXAMPLES",
    os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                 "shared", "data", "terramind-examples"))


@pytest.fixture
def terramind_examples() -> str:
    """Folder of the real TerraMind example tiles (S2L1C, S2L2A, S1RTC, DEM, NDVI, LULC, ...)."""
    if not os.path.isdir(os.path.join(TERRAMIND_EXAMPLES, "S2L2A")):
        pytest.skip(f"the real example tiles are not at {TERRAMIND_EXAMPLES} "
                    "(set D2GEO_TERRAMIND_EXAMPLES to their folder)")
    return TERRAMIND_EXAMPLES


# -- tiny detectron2 heads: the tests are about d2geo's glue, not detectron2's heads ---------------
def tiny_semseg_head(model, channels: int = 32):
    """Shrink the pyramid and the SemSegFPNHead of a semantic FPN LazyConfig ``model`` in place."""
    model.backbone.out_channels = channels
    model.sem_seg_head.conv_dims = channels
    model.sem_seg_head.norm = ""
    return model


def tiny_mask_rcnn(backbone=None, num_bands: int = 5, *, pixel_mean: float = 500.0, pixel_std: float = 290.0,
                   num_classes: int = 2, box_conv_dims=()):
    """detectron2's ViTDet Mask R-CNN as a ``GeoRCNN`` on the GeoBackbone (or its LazyCall)
    ``backbone`` (default: a tiny DINOv2 on :data:`BANDS5`), with tiny heads."""
    from detectron2 import model_zoo
    from detectron2.config import LazyCall as L
    from detectron2.config import instantiate
    from detectron2.modeling.backbone.fpn import LastLevelMaxPool

    from d2geo.modeling import GeoBackbone, GeoRCNN, SimpleFeaturePyramid

    net = backbone if backbone is not None else L(GeoBackbone)(encoder="dinov2_vits14_reg", encoder_kwargs=TINY_DINO)
    cfg = model_zoo.get_config("common/models/mask_rcnn_vitdet.py").model
    cfg._target_ = GeoRCNN
    cfg.backbone = L(SimpleFeaturePyramid)(net=net, out_channels=32, top_block=L(LastLevelMaxPool)(), norm="LN")
    cfg.pixel_mean, cfg.pixel_std = [pixel_mean] * num_bands, [pixel_std] * num_bands
    cfg.input_format = None
    cfg.roi_heads.num_classes = num_classes
    return instantiate(tiny_rcnn_heads(cfg, 32, box_conv_dims))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: tiny models run ~10x faster on one thread than on two on a shared
    CPU (the OpenMP workers spin-wait for each other)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_segmentor(backbone, num_bands: int, num_classes: int = 3):
    """A GeoSemanticSegmentor with a tiny SemSegFPNHead on the pyramid ``backbone``."""
    from detectron2.modeling.meta_arch.semantic_seg import SemSegFPNHead

    from d2geo.modeling import GeoSemanticSegmentor

    head = SemSegFPNHead(backbone.output_shape(), num_classes=num_classes, conv_dims=32, common_stride=4,
                         norm="", ignore_value=255)
    return GeoSemanticSegmentor(backbone=backbone, sem_seg_head=head,
                                pixel_mean=[500.0] * num_bands, pixel_std=[290.0] * num_bands)


#: five bands of a tiny multispectral DINOv2 (pretrained RGB plus coastal and nir)
BANDS5 = ("coastal", "blue", "green", "red", "nir")
TINY_DINO = dict(embed_dim=64, depth=4, num_heads=4, patch_size=16, img_size=64, bands=BANDS5)


def dino_backbone(**kw):
    """A GeoBackbone on a tiny DINOv2 with registers over :data:`BANDS5`."""
    from d2geo.modeling import GeoBackbone

    enc_kw = {**TINY_DINO, **kw.pop("encoder_kwargs", {})}
    return GeoBackbone("dinov2_vits14_reg", encoder_kwargs=enc_kw, **kw)


def make_sample(C=5, H=64, W=64, T=None, meta=True, n_boxes=2, seed=0) -> dict:
    """A dataset dict as a mapper makes it: image (x1000), metadata, two box/mask instances and
    the matching semantic labels."""
    from detectron2.structures import BitMasks, Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    shape = (C, H, W) if T is None else (C, T, H, W)
    d = {"image": torch.rand(shape, generator=g) * 1000, "height": H, "width": W}
    if meta:
        d["metadata"] = {"latlon": [10.0 + seed, 20.0], "gsd": 10.0 + seed,
                         "timestamps": [1.6e9 + 86400 * k for k in range(T or 1)]}
    boxes = torch.tensor([[4.0, 6.0, 30.0, 28.0], [34.0, 30.0, 60.0, 60.0]])[:n_boxes]
    inst = Instances((H, W))
    inst.gt_boxes = Boxes(boxes)
    inst.gt_classes = torch.tensor([0, 1])[:n_boxes]
    masks = torch.zeros(n_boxes, H, W, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
        masks[i, y0:y1, x0:x1] = True
    inst.gt_masks = BitMasks(masks)
    d["instances"] = inst
    d["sem_seg"] = (masks.long() * torch.tensor([1, 2])[:n_boxes, None, None]).amax(0)
    return d


# -- GeoTIFFs and detectron2's catalogs -----------------------------------------------------------
UTM = "EPSG:32610"


def write_tif(path, data, *, crs=UTM, transform=None, nodata=None, names=None, tags=None, scales=None,
              offsets=None) -> str:
    """Write ``data`` ``(C, H, W)`` or ``(H, W)`` (its dtype) as a GeoTIFF; returns the path.
    The default transform puts 30 m pixels in UTM zone 10N."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    c, h, w = data.shape
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    transform = transform if transform is not None else from_origin(500_000, 4_000_000, 30, 30)
    kw = dict(driver="GTiff", width=w, height=h, count=c, dtype=data.dtype.name, transform=transform)
    if crs is not None:
        kw["crs"] = crs
    if nodata is not None:
        kw["nodata"] = nodata
    with rasterio.open(path, "w", **kw) as dst:
        dst.write(data)
        if names:
            for i, n in enumerate(names):
                dst.set_band_description(i + 1, n)
        if tags:
            dst.update_tags(**tags)
        if scales is not None:
            dst.scales = scales
        if offsets is not None:
            dst.offsets = offsets
    return str(path)


@pytest.fixture
def d2_catalog():
    """A list to put registered dataset names in: they leave detectron2's catalogs afterwards."""
    names: list[str] = []
    yield names
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for n in names:
        if n in DatasetCatalog.list():
            DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)


@pytest.fixture(autouse=True)
def _restore_logging():
    """Tools run in-process (train_net, export_model) call detectron2's ``setup_logger``, which
    stops d2geo's loggers from propagating to the root: later ``caplog`` tests would then see
    nothing. Put every logger back as it was before the test."""
    loggers = [logging.getLogger()] + [lg for lg in logging.root.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    saved = {id(lg): (lg, lg.propagate, lg.level, list(lg.handlers), lg.disabled) for lg in loggers}
    yield
    for lg in [logging.getLogger()] + [lg for lg in logging.root.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]:
        if id(lg) in saved:
            _, propagate, level, handlers, disabled = saved[id(lg)]
        else:  # made during the test: back to a plain logger that propagates
            propagate, level, handlers, disabled = True, logging.NOTSET, [], False
        lg.propagate, lg.level, lg.disabled = propagate, level, disabled
        lg.handlers[:] = handlers


# -- the gpu marker (tests/gpu, run by benchmarks/gpu_check.sh) ------------------------------------
#: device of the gpu tests: "cuda", or "cpu" for benchmarks/gpu_check.sh --dry-run
GPU_TEST_DEVICE = os.environ.get("D2GEO_GPU_TEST_DEVICE", "cuda")


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.gpu`` tests skip, with the reason, where they would need CUDA and it is absent."""
    if GPU_TEST_DEVICE != "cuda" or torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: bash benchmarks/gpu_check.sh runs these on a GPU machine "
                                   "(docs/gpu.md); its --dry-run runs them on the CPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
