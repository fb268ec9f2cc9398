"""UperNet with Galileo base (Sentinel-2 L1C + Sentinel-1 GRD time series, 8-pixel patches).

Everything but the head is ``semantic_fpn_base.py`` (published weights by name, twelve
channels ``S2L1C:B02 .. S2L1C:B12, S1GRD:VV, S1GRD:VH``, blocks 2, 5, 8, 11
resampled from stride 8 to strides 4, 8, 16, 32); the head is ``UperNetHead``
(``configs/common/models/upernet_geo.py``).
"""
from ..common.models.upernet_geo import model as _upernet
from .semantic_fpn_base import dataloader, lr_multiplier, model, optimizer, train

model.sem_seg_head = _upernet.sem_seg_head
model.sem_seg_head.num_classes = 10

train.output_dir = "./output/galileo/upernet_base"
