"""detectron2 glue: d2geo encoders as backbones, pyramids, meta-architectures, optimizer
parameter groups. Importing this package registers ``GeoRCNN`` / ``GeoSemanticSegmentor``
in META_ARCH_REGISTRY and ``build_geo_vit_sfp_backbone`` / ``build_geo_vit_fpn_backbone``
in BACKBONE_REGISTRY, ``UperNetHead`` in SEM_SEG_HEADS_REGISTRY, and the ``d2geo://`` and
``hf://`` path handlers on detectron2's ``PathManager`` (so ``DetectionCheckpointer`` and every
detectron2 tool read them).
"""
from .backbone import TEMPORAL_FOLDS, GeoBackbone, find_geo_backbones, fold_time
from .config import (
    add_d2geo_config,
    build_geo_backbone,
    build_geo_vit_fpn_backbone,
    build_geo_vit_sfp_backbone,
)
from .heads import UperNetHead
from .lr_decay import (
    NO_WEIGHT_DECAY_NAMES,
    encoder_layer_ids,
    geo_optimizer_params,
    lr_decay_factor_func,
    no_weight_decay_overrides,
)
from .meta_arch import (
    GeoInputMixin,
    GeoPanopticFPN,
    GeoRCNN,
    GeoSemanticSegmentor,
    attach_metadata,
    collate_metadata,
    normalize_image,
)
from .pyramid import MultiLayerPyramid, SimpleFeaturePyramid
from .temporal import TemporalAttentionPool
from .vit_adapter import ViTAdapter

__all__ = [
    "GeoBackbone", "find_geo_backbones", "fold_time", "TEMPORAL_FOLDS", "TemporalAttentionPool",
    "SimpleFeaturePyramid", "MultiLayerPyramid", "UperNetHead", "ViTAdapter",
    "GeoRCNN", "GeoSemanticSegmentor", "GeoPanopticFPN", "GeoInputMixin", "collate_metadata", "attach_metadata",
    "normalize_image",
    "lr_decay_factor_func", "encoder_layer_ids", "no_weight_decay_overrides", "geo_optimizer_params",
    "NO_WEIGHT_DECAY_NAMES",
    "add_d2geo_config", "build_geo_backbone", "build_geo_vit_sfp_backbone", "build_geo_vit_fpn_backbone",
]

from .file_io import register_path_handlers as _register_path_handlers  # noqa: E402

_register_path_handlers()
