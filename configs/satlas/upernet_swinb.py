"""UperNet with the SatlasPretrain Swin-V2-B (Sentinel-2, nine bands): Swin + UperNet, the usual
semantic-segmentation pairing for a Swin backbone.

Weights, bands and scaling as ``semantic_fpn_swinb.py``. Swin is already a pyramid, so no FPN
or ``MultiLayerPyramid`` sits in between: the ``GeoBackbone``'s raw stage outputs ``res2..res5``
(strides 4, 8, 16, 32; ``C, 2C, 4C, 8C`` channels, 128..1024 for Swin-V2-B) are the
``UperNetHead``'s inputs, whose own lateral/top-down convs fuse them. The head's
``input_shape`` therefore names ``res2..res5`` with the stage widths; for a Swin-V2-T encoder
(``satlas_swint_*``, ``C`` = 96) set them to 96, 192, 384, 768 (the head stops with that hint
on a mismatch).
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from ..common.models.upernet_geo import model as _upernet
from .semantic_fpn_swinb import dataloader, lr_multiplier, model, optimizer, train

model.backbone = model.backbone.bottom_up  # the GeoBackbone itself: res2..res5
model.sem_seg_head = _upernet.sem_seg_head
model.sem_seg_head.input_shape = {
    name: L(ShapeSpec)(stride=4 * 2**i, channels=128 * 2**i) for i, name in enumerate(("res2", "res3", "res4", "res5"))
}
model.sem_seg_head.num_classes = 2

train.output_dir = "./output/satlas/upernet_swinb"
