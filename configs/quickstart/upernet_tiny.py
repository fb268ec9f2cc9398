"""Quickstart: UperNet with a tiny ViT on d2geo's synthetic 6-band GeoTIFFs.

``semantic_fpn_tiny.py`` (same encoder, data, schedule, single-tap pyramid at strides 4, 8,
16) with ``UperNetHead`` in place of the semantic FPN head::

    python tools/train_net.py --config-file configs/quickstart/upernet_tiny.py
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from ..common.models.upernet_geo import model as _upernet
from .semantic_fpn_tiny import dataloader, lr_multiplier, model, optimizer, train

model.sem_seg_head = _upernet.sem_seg_head
model.sem_seg_head.input_shape = {
    name: L(ShapeSpec)(stride=stride, channels="${....backbone.out_channels}")
    for name, stride in (("p2", 4), ("p3", 8), ("p4", 16))
}
model.sem_seg_head.num_classes = 4
model.sem_seg_head.channels = 64

train.output_dir = "./output/quickstart/upernet_tiny"
