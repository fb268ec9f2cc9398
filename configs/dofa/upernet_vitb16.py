"""UperNet with the DOFA ViT-B/16 (patch kernel from the band wavelengths), the decoder PANGAEA
puts on DOFA's four raw taps.

Everything but the head is ``semantic_fpn_vitb16.py`` (published weights by name, ten
Sentinel-2 L2A bands, raw taps 3/5/7/11 without the final norm, as PANGAEA's DOFA encoder
gives them); the head is ``UperNetHead`` (``configs/common/models/upernet_geo.py``).
"""
from ..common.models.upernet_geo import model as _upernet
from .semantic_fpn_vitb16 import dataloader, lr_multiplier, model, optimizer, train

model.sem_seg_head = _upernet.sem_seg_head
model.sem_seg_head.num_classes = 2

train.output_dir = "./output/dofa/upernet_vitb16"
