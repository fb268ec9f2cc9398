"""UperNet with AnySat base (single-date Sentinel-2, 16-pixel patches).

Everything but the head is ``semantic_fpn_base.py`` (published weights by name, ten Sentinel-2
L2A bands, taps 1/3/5 and the last block); the head is ``UperNetHead``
(``configs/common/models/upernet_geo.py``).
"""
from ..common.models.upernet_geo import model as _upernet
from .semantic_fpn_base import dataloader, lr_multiplier, model, optimizer, train

model.sem_seg_head = _upernet.sem_seg_head
model.sem_seg_head.num_classes = 2

train.output_dir = "./output/anysat/upernet_base"
