"""UperNet with CROMA base (joint Sentinel-2 L1C + Sentinel-1 GRD, 8-pixel patches), the decoder
PANGAEA puts on CROMA's joint encoder.

Everything but the head is ``semantic_fpn_base.py`` (published weights by name, the 14
channels ``S2L1C:B01 .. S2L1C:B12, S1GRD:VV, S1GRD:VH`` stacked from one file per modality,
blocks 2..5 of the 6-block joint encoder resampled from stride 8 to strides 4, 8, 16, 32);
the head is ``UperNetHead`` (``configs/common/models/upernet_geo.py``).
"""
from ..common.models.upernet_geo import model as _upernet
from .semantic_fpn_base import dataloader, lr_multiplier, model, optimizer, train

model.sem_seg_head = _upernet.sem_seg_head
model.sem_seg_head.num_classes = 10

train.output_dir = "./output/croma/upernet_base"
