"""Panoptic FPN on a d2geo encoder: Mask R-CNN (ViTDet style) plus a semantic FPN branch.

detectron2's ``PanopticFPN`` as ``GeoPanopticFPN`` (per-band normalization, ``(C, H, W)`` /
``(C, T, H, W)`` images, acquisition metadata): ``mask_rcnn_geo``'s backbone, RPN and ROI
heads, and detectron2's ``SemSegFPNHead`` on the same pyramid. At inference the two are
combined into ``"panoptic_seg"`` (detectron2's ``combine_semantic_and_instance_outputs``):
instances above ``combine_instances_score_thresh`` first, then stuff regions of at least
``combine_stuff_area_thresh`` pixels on what is left.

The semantic branch follows detectron2's panoptic convention (``d2geo.data.panoptic``):
label 0 is "things", stuff class ``i`` is ``i + 1``, so ``sem_seg_head.num_classes`` is
``len(stuff_classes) + 1``. Configs set ``model.roi_heads.num_classes`` (thing classes),
``model.sem_seg_head.num_classes`` and the encoder as for Mask R-CNN.
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.meta_arch.semantic_seg import SemSegFPNHead

from d2geo.modeling import GeoPanopticFPN

from .mask_rcnn_geo import model

model._target_ = GeoPanopticFPN
model.sem_seg_head = L(SemSegFPNHead)(
    input_shape={
        f"p{k}": L(ShapeSpec)(stride=2 ** k, channels="${....backbone.out_channels}")
        for k in range(2, 6)
    },
    ignore_value=255,
    num_classes=2,  # "things" + one stuff class: set len(stuff_classes) + 1
    conv_dims=128,
    common_stride=4,
    loss_weight=0.5,
    norm="GN",
)
model.combine_overlap_thresh = 0.5
model.combine_stuff_area_thresh = 4096
model.combine_instances_score_thresh = 0.5
