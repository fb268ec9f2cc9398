"""Quickstart: ViT-Adapter + UperNet with the tiny ViT on d2geo's synthetic GeoTIFFs.

``semantic_fpn_tiny.py``'s encoder, data and schedule; the backbone wrapped in
``ViTAdapter`` (strides 4-32, 96 channels) and ``UperNetHead``::

    python tools/train_net.py --config-file configs/quickstart/upernet_vit_adapter_tiny.py
"""
from ..common.models.upernet_vit_adapter_geo import model as _adapter
from .semantic_fpn_tiny import dataloader, lr_multiplier, model, optimizer, train

_adapter.backbone.net = model.backbone.net
model.backbone = _adapter.backbone
model.backbone.out_channels = 96
model.backbone.deform_heads = 4
model.sem_seg_head = _adapter.sem_seg_head
model.sem_seg_head.num_classes = 4
model.sem_seg_head.channels = 64

train.output_dir = "./output/quickstart/upernet_vit_adapter_tiny"
