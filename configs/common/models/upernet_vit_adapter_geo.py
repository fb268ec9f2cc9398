"""ViT-Adapter + UperNet on a d2geo encoder (the DINOv2/DINOv3 dense recipe, with UperNet).

``ViTAdapter`` wraps the ``GeoBackbone`` (all blocks; a spatial prior module and four
injector/extractor interactions) and gives ``res2..res5`` at strides 4-32, projected to
``out_channels``; ``UperNetHead`` fuses them. Configs set the same fields as
``semantic_fpn_geo.py`` (``model.backbone.net.*``, statistics, ``num_classes``); the
adapter's ``deform_heads`` must divide the encoder width.
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from d2geo.modeling import ViTAdapter

from .upernet_geo import model

model.backbone = L(ViTAdapter)(
    net=model.backbone.net,
    num_interactions=4,
    deform_heads=8,
    deform_points=4,
    value_ratio=0.5,
    ffn_ratio=0.25,
    spm_channels=64,
    norm="GN",
    out_norm="LN",
    out_channels=256,
)
model.sem_seg_head.input_shape = {
    name: L(ShapeSpec)(stride=stride, channels="${....backbone.out_channels}")
    for name, stride in (("res2", 4), ("res3", 8), ("res4", 16), ("res5", 32))
}
