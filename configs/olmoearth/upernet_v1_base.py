"""UperNet with the OlmoEarth v1 Base (band-group tokens averaged per position).

Everything but the head is ``semantic_fpn_v1_base.py`` (published weights by name, twelve
Sentinel-2 L2A bands, normed taps 3/5/7/11); the head is ``UperNetHead``
(``configs/common/models/upernet_geo.py``).
"""
from ..common.models.upernet_geo import model as _upernet
from .semantic_fpn_v1_base import dataloader, lr_multiplier, model, optimizer, train

model.sem_seg_head = _upernet.sem_seg_head
model.sem_seg_head.num_classes = 2

train.output_dir = "./output/olmoearth/upernet_v1_base"
