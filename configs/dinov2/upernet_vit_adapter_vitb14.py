"""ViT-Adapter + UperNet with DINOv2 ViT-B/14.

Encoder, weights, bands, statistics, data and schedule as ``semantic_fpn_vitb14.py``;
the backbone is wrapped in ``ViTAdapter`` (strides 4-32) and segmented by ``UperNetHead``
(``configs/common/models/upernet_vit_adapter_geo.py``). The adapter uses every encoder block;
``model.backbone.net.layers`` is unused.
"""
from ..common.models.upernet_vit_adapter_geo import model as _adapter
from .semantic_fpn_vitb14 import dataloader, lr_multiplier, model, optimizer, train

_adapter.backbone.net = model.backbone.net
model.backbone = _adapter.backbone
model.sem_seg_head = _adapter.sem_seg_head
model.sem_seg_head.num_classes = 2

train.output_dir = "./output/dinov2/upernet_vit_adapter_vitb14"
