"""detectron2 glue: d2geo encoders as backbones, pyramids, meta-architectures, optimizer
parameter groups. Importing this package registers ``GeoRCNN`` / ``GeoSemanticSegmentor``
in META_ARCH_REGISTRY and ``build_geo_vit_sfp_backbone`` / ``build_geo_vit_fpn_backbone``
in BACKBONE_REGISTRY.
"""
from .backbone import TEMPORAL_FOLDS, GeoBackbone, find_geo_backbones, fold_time
from .config import (
    add_d2geo_config,
    build_geo_backbone,
    build_geo_vit_fpn_backbone,
    build_geo_vit_sfp_backbone,
)
from .lr_decay import (
    NO_WEIGHT_DECAY_NAMES,
    encoder_layer_ids,
    geo_optimizer_params,
    lr_decay_factor_func,
    no_weight_decay_overrides,
)
from .meta_arch import (
    GeoInputMixin,
    GeoRCNN,
    GeoSemanticSegmentor,
    attach_metadata,
    collate_metadata,
    normalize_image,
)
from .pyramid import MultiLayerPyramid, SimpleFeaturePyramid

__all__ = [
    "GeoBackbone", "find_geo_backbones", "fold_time", "TEMPORAL_FOLDS",
    "SimpleFeaturePyramid", "MultiLayerPyramid",
    "GeoRCNN", "GeoSemanticSegmentor", "GeoInputMixin", "collate_metadata", "attach_metadata",
    "normalize_image",
    "lr_decay_factor_func", "encoder_layer_ids", "no_weight_decay_overrides", "geo_optimizer_params",
    "NO_WEIGHT_DECAY_NAMES",
    "add_d2geo_config", "build_geo_backbone", "build_geo_vit_sfp_backbone", "build_geo_vit_fpn_backbone",
]
