"""UperNet with the Panopticon ViT-B/14 (channel cross-attention over band codes).

Everything but the head is ``semantic_fpn_vitb14.py`` (published weights by name, ten
Sentinel-2 L2A bands, normed taps 3/5/7/11); the head is ``UperNetHead``
(``configs/common/models/upernet_geo.py``).
"""
from ..common.models.upernet_geo import model as _upernet
from .semantic_fpn_vitb14 import dataloader, lr_multiplier, model, optimizer, train

model.sem_seg_head = _upernet.sem_seg_head
model.sem_seg_head.num_classes = 2

train.output_dir = "./output/panopticon/upernet_vitb14"
