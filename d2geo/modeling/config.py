"""yacs-config entry points: ``add_d2geo_config`` and BACKBONE_REGISTRY builders.

LazyConfig users build :class:`GeoBackbone` and the pyramids directly; these are for
``get_cfg()``-style projects::

    cfg = get_cfg()
    add_d2geo_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "GeoRCNN"
    cfg.MODEL.BACKBONE.NAME = "build_geo_vit_sfp_backbone"   # or build_geo_vit_fpn_backbone
    cfg.MODEL.D2GEO.ENCODER = "dinov2_vitb14_reg"
    cfg.MODEL.D2GEO.ENCODER_KWARGS.patch_size = 16

The pyramid width and norm come from ``cfg.MODEL.FPN.OUT_CHANNELS`` / ``cfg.MODEL.FPN.NORM``
(``""`` there means LayerNorm here, as in ViTDet, unless ``MODEL.D2GEO.PYRAMID_NORM`` is set).
"""
from __future__ import annotations

from detectron2.config import CfgNode as CN
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from .backbone import GeoBackbone
from .pyramid import MultiLayerPyramid, SimpleFeaturePyramid

__all__ = ["add_d2geo_config", "register_d2geo_defaults", "build_geo_backbone", "build_geo_vit_sfp_backbone",
           "build_geo_vit_fpn_backbone"]


def add_d2geo_config(cfg: CN) -> CN:
    """Add the ``MODEL.D2GEO`` section (defaults in the comments below) to ``cfg``."""
    d = cfg.MODEL.D2GEO = CN()
    d.ENCODER = "dinov2_vitb14_reg"      # registered encoder name
    d.WEIGHTS = None                     # encoder checkpoint (any upstream format; a path, hf://..., https://...)
    d.PRETRAINED = False                 # the encoder's published weights (used when WEIGHTS is None)
    d.ENCODER_KWARGS = CN(new_allowed=True)  # build_encoder overrides (lower-case keys)
    d.LAYERS = [-1]                      # taps; the FPN builder defaults to four evenly spaced
    d.NORM = True                        # final encoder norm on every tap
    d.TEMPORAL_FOLD = "concat"           # "concat" | "mean"
    d.FREEZE = "none"                    # "none" | "all" | "<k>" (embeddings + first k blocks)
    d.DROP_PATH_RATE = None              # None: the encoder's default
    d.GRAD_CHECKPOINTING = False
    d.SCALE_FACTORS = [4.0, 2.0, 1.0, 0.5]  # SimpleFeaturePyramid levels
    d.PYRAMID_NORM = None                # None: cfg.MODEL.FPN.NORM, or "LN" if that is ""
    d.TOP_BLOCK = True                   # add p6 with LastLevelMaxPool
    d.SQUARE_PAD = 0
    if "GEO" not in cfg.INPUT:  # GeoDatasetMapper's read options (d2geo.data.mapper)
        g = cfg.INPUT.GEO = CN()
        g.BANDS = []                     # band names to read, in the model's order; []: all
        g.SENSOR = ""                    # default sensor for band wavelengths
        g.FILL = "zero"                  # invalid pixels: "zero" | "mean" | a number
        g.SCALE = None                   # DN -> reflectance scale when the files do not say
        g.UNITS_CHECK = True             # GeoTrainer: refuse first samples whose units do not fit pixel_mean/std
    return cfg


def register_d2geo_defaults() -> None:
    """Put the ``MODEL.D2GEO`` / ``INPUT.GEO`` sections into detectron2's own defaults, so
    that ``get_cfg()`` in detectron2's unmodified tools accepts d2geo yaml configs.

    detectron2's ``tools/deploy/export_model.py`` (and ``train_net.py``) build their config
    with ``get_cfg()`` and merge the yaml file into it; a key the defaults lack is an error
    (``Non-existent config key: MODEL.D2GEO``), and the yaml cannot import d2geo to add it.
    ``python -m d2geo.engine.run_tool TOOL.py ARGS`` calls this, imports d2geo's registries
    (``GeoRCNN``, ``build_geo_vit_sfp_backbone``, ...) and runs the tool.
    """
    from detectron2.config import defaults

    if "D2GEO" not in defaults._C.MODEL:
        frozen = defaults._C.is_frozen()
        defaults._C.defrost()
        add_d2geo_config(defaults._C)
        if frozen:
            defaults._C.freeze()


def _encoder_kwargs(cfg) -> dict:
    return {k.lower(): v for k, v in dict(cfg.MODEL.D2GEO.ENCODER_KWARGS).items()}


def build_geo_backbone(cfg, input_shape: ShapeSpec | None = None, layers=None) -> GeoBackbone:
    """The plain single-stride :class:`GeoBackbone` described by ``cfg.MODEL.D2GEO``."""
    d = cfg.MODEL.D2GEO
    backbone = GeoBackbone(
        d.ENCODER, weights=d.WEIGHTS or None, pretrained=d.PRETRAINED, layers=tuple(layers if layers is not None else d.LAYERS),
        norm=d.NORM, temporal_fold=d.TEMPORAL_FOLD, freeze=d.FREEZE, drop_path_rate=d.DROP_PATH_RATE,
        grad_checkpointing=d.GRAD_CHECKPOINTING, encoder_kwargs=_encoder_kwargs(cfg),
    )
    bands = tuple(getattr(backbone.encoder, "bands", ()))
    n_mean, n_std = len(cfg.MODEL.PIXEL_MEAN), len(cfg.MODEL.PIXEL_STD)
    if bands and (n_mean != len(bands) or n_std != len(bands)):
        raise ValueError(
            f"the encoder takes {len(bands)} bands ({', '.join(bands)}) but MODEL.PIXEL_MEAN has "
            f"{n_mean} and MODEL.PIXEL_STD {n_std} values; give one mean and std per band"
        )
    return backbone


def _pyramid_kwargs(cfg) -> dict:
    d = cfg.MODEL.D2GEO
    norm = d.PYRAMID_NORM if d.PYRAMID_NORM is not None else (cfg.MODEL.FPN.NORM or "LN")
    return dict(out_channels=cfg.MODEL.FPN.OUT_CHANNELS, norm=norm,
                top_block=LastLevelMaxPool() if d.TOP_BLOCK else None, square_pad=d.SQUARE_PAD)


@BACKBONE_REGISTRY.register()
def build_geo_vit_sfp_backbone(cfg, input_shape: ShapeSpec):
    """ViTDet-style :class:`SimpleFeaturePyramid` on the last tap of ``MODEL.D2GEO.LAYERS``."""
    net = build_geo_backbone(cfg, input_shape)
    return SimpleFeaturePyramid(net, None, scale_factors=tuple(cfg.MODEL.D2GEO.SCALE_FACTORS),
                                **_pyramid_kwargs(cfg))


@BACKBONE_REGISTRY.register()
def build_geo_vit_fpn_backbone(cfg, input_shape: ShapeSpec):
    """:class:`MultiLayerPyramid` on four taps (``MODEL.D2GEO.LAYERS`` if it names four,
    else blocks at 1/4, 2/4, 3/4 and the end of the encoder)."""
    layers = list(cfg.MODEL.D2GEO.LAYERS)
    if len(layers) != 4:
        from ..encoders import get_encoder_config

        depth = {**get_encoder_config(cfg.MODEL.D2GEO.ENCODER), **_encoder_kwargs(cfg)}.get("depth")
        if depth is None:
            raise ValueError("set MODEL.D2GEO.LAYERS to four block indices for this encoder")
        layers = [depth // 4 - 1, depth // 2 - 1, 3 * depth // 4 - 1, depth - 1]
    net = build_geo_backbone(cfg, input_shape, layers=layers)
    return MultiLayerPyramid(net, **_pyramid_kwargs(cfg))
