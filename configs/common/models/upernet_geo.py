"""UperNet on a d2geo encoder: four encoder taps, the multi-layer pyramid and d2geo's
``UperNetHead`` (pyramid pooling on the coarsest level, FPN fusion of all four at stride 4).

The model is ``semantic_fpn_geo``'s with the head swapped; configs set the same fields
(``model.backbone.net.*``, ``pixel_mean``/``pixel_std``, ``model.sem_seg_head.num_classes``).
A family's ``upernet_*.py`` takes its ``semantic_fpn_*.py`` and puts this head on it::

    from ..common.models.upernet_geo import model as _upernet
    from .semantic_fpn_vitb14 import dataloader, lr_multiplier, model, optimizer, train
    model.sem_seg_head = _upernet.sem_seg_head
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from d2geo.modeling.heads import UperNetHead

from .semantic_fpn_geo import model

model.sem_seg_head = L(UperNetHead)(
    input_shape={
        name: L(ShapeSpec)(stride=stride, channels="${....backbone.out_channels}")
        for name, stride in (("p2", 4), ("p3", 8), ("p4", 16), ("p5", 32))
    },
    num_classes=2,
    channels=256,
    pool_scales=(1, 2, 3, 6),
    norm="GN",
    dropout=0.1,
    loss_weight=1.0,
    ignore_value=255,
)
