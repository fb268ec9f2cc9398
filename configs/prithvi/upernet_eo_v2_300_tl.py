"""UperNet with Prithvi-EO-2.0-300M-TL on 4-date HLS time series.

Everything but the head is ``semantic_fpn_eo_v2_300_tl.py`` (weights, bands, four dates
stacked into channels with ``temporal_fold="concat"``); the head is ``UperNetHead``
(``configs/common/models/upernet_geo.py``), terratorch's default decoder for Prithvi.
Other ways to fold the dates: ``model.backbone.net.temporal_fold`` = ``mean``, ``max``,
``diff`` or ``attention``, and ``temporal_frames`` (see ``d2geo.modeling.temporal``).
"""
from ..common.models.upernet_geo import model as _upernet
from .semantic_fpn_eo_v2_300_tl import dataloader, lr_multiplier, model, optimizer, train

model.sem_seg_head = _upernet.sem_seg_head
model.sem_seg_head.num_classes = 2

train.output_dir = "./output/prithvi/upernet_eo_v2_300_tl"
