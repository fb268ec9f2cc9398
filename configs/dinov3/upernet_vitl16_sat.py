"""UperNet with DINOv3 ViT-L/16 SAT-493M (four taps, multi-layer pyramid), RGB.

Everything but the head is ``semantic_fpn_vitl16_sat.py``; the head is ``UperNetHead``
(``configs/common/models/upernet_geo.py``).
"""
from ..common.models.upernet_geo import model as _upernet
from .semantic_fpn_vitl16_sat import dataloader, lr_multiplier, model, optimizer, train

model.sem_seg_head = _upernet.sem_seg_head
model.sem_seg_head.num_classes = 2

train.output_dir = "./output/dinov3/upernet_vitl16_sat"
