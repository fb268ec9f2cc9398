"""ViT-Adapter + UperNet with Prithvi-EO-2.0-300M-TL.

Encoder, weights, bands, statistics, data and schedule as ``semantic_fpn_eo_v2_300_tl.py``;
the backbone is wrapped in ``ViTAdapter`` (strides 4-32) and segmented by ``UperNetHead``
(``configs/common/models/upernet_vit_adapter_geo.py``). The adapter uses every encoder block;
``model.backbone.net.layers`` is unused.
"""
from ..common.models.upernet_vit_adapter_geo import model as _adapter
from .semantic_fpn_eo_v2_300_tl import dataloader, lr_multiplier, model, optimizer, train

_adapter.backbone.net = model.backbone.net
model.backbone = _adapter.backbone
model.sem_seg_head = _adapter.sem_seg_head
model.sem_seg_head.num_classes = 2

train.output_dir = "./output/prithvi/upernet_vit_adapter_eo_v2_300_tl"
