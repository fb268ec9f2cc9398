"""UperNet with TerraMind 1.0 base on Sentinel-2 L2A + Sentinel-1 RTC + DEM (e.g. land cover).

Everything but the head is ``semantic_fpn_v1_base.py`` (published weights by name, the 15
channels ``S2L2A:B01 .. S2L2A:B12, S1RTC:VV, S1RTC:VH, DEM:DEM`` stacked from one file per
modality, four taps); the head is ``UperNetHead`` (``configs/common/models/upernet_geo.py``),
terratorch's usual decoder for TerraMind. How each block's modalities become one map:
``model.backbone.net.encoder_kwargs.merge`` = ``"mean"`` (default), ``"max"`` or ``"concat"``
(the channels of the three modalities side by side: 3 x 768, which the pyramid takes).
"""
from ..common.models.upernet_geo import model as _upernet
from .semantic_fpn_v1_base import dataloader, lr_multiplier, model, optimizer, train

model.sem_seg_head = _upernet.sem_seg_head
model.sem_seg_head.num_classes = 10

train.output_dir = "./output/terramind/upernet_v1_base"
