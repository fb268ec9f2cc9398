"""Quickstart: Panoptic FPN with d2geo's ``UperNetHead`` as the semantic branch.

``panoptic_tiny.py`` with the semantic branch swapped: PanopticFPN calls its semantic head
as detectron2's ``SemSegFPNHead`` (``head(features, targets) -> (logits, losses)``), which
``UperNetHead`` is too, so the panoptic variant of UperNet is this swap and nothing else
(Mask R-CNN and the panoptic combination are unchanged)::

    python tools/train_net.py --config-file configs/quickstart/panoptic_upernet_tiny.py
"""
from ..common.models.upernet_geo import model as _upernet
from .panoptic_tiny import dataloader, lr_multiplier, model, optimizer, train

model.sem_seg_head = _upernet.sem_seg_head
model.sem_seg_head.input_shape = {k: v for k, v in model.sem_seg_head.input_shape.items() if k != "p5"}
model.sem_seg_head.num_classes = 5  # "things" + grassland, forest, water, urban
model.sem_seg_head.channels = 64
model.sem_seg_head.loss_weight = 0.5  # PanopticFPN's weight of the semantic loss

train.output_dir = "./output/quickstart/panoptic_upernet_tiny"
