"""Rotated Faster R-CNN on a d2geo encoder: oriented boxes ``(cx, cy, w, h, angle)``.

``mask_rcnn_geo.py``'s model (``GeoRCNN``, a ``GeoBackbone`` under d2geo's
``SimpleFeaturePyramid``, ViTDet's heads) with detectron2's rotated machinery in place of
the axis-aligned one:

* ``RRPN`` with a ``RotatedAnchorGenerator`` (three aspect ratios x six angles per
  location) and ``Box2BoxTransformRotated`` (deltas of centre, size and angle);
* ``RROIHeads``: ``ROIAlignRotated`` pooling, the 4conv1fc box head, and
  ``RotatedFastRCNNOutputLayers`` (rotated box regression, rotated NMS at test time).
  No mask head: detectron2's rotated heads predict boxes only.

Angles are in degrees, counter-clockwise (``d2geo.data.rotated``). Any backbone that gives
``p2..p6`` (or the levels named in ``proposal_generator.in_features`` /
``roi_heads.box_in_features``) works: for Swin-style encoders put detectron2's ``FPN``
over the ``GeoBackbone``'s stages as in ``configs/satlas/rotated_rcnn_swinb.py``. Data:
``configs/common/data/geo_rotated_detection.py``; evaluation ``RotatedCOCOEvaluator``
(COCO AP with rotated IoU).
"""
from detectron2.config import LazyCall as L
from detectron2.modeling.anchor_generator import RotatedAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransformRotated
from detectron2.modeling.proposal_generator.rrpn import RRPN
from detectron2.modeling.roi_heads import RROIHeads
from detectron2.modeling.roi_heads.rotated_fast_rcnn import RotatedFastRCNNOutputLayers

from .mask_rcnn_geo import model

#: anchor angles (degrees); -90 and 90 are the same rectangle, so one of them only
ANGLES = [-60.0, -30.0, 0.0, 30.0, 60.0, 90.0]
RATIOS = [0.5, 1.0, 2.0]

rpn = model.proposal_generator
rpn._target_ = RRPN
rpn.anchor_generator = L(RotatedAnchorGenerator)(
    sizes=[[32], [64], [128], [256], [512]],
    aspect_ratios=[RATIOS],
    angles=[ANGLES],
    strides=[4, 8, 16, 32, 64],
    offset=0.0,
)
rpn.head.box_dim = 5
rpn.head.num_anchors = len(RATIOS) * len(ANGLES)
rpn.box2box_transform = L(Box2BoxTransformRotated)(weights=(1.0, 1.0, 1.0, 1.0, 1.0))

heads = model.roi_heads
heads._target_ = RROIHeads
for _key in ("mask_in_features", "mask_pooler", "mask_head"):
    heads.pop(_key, None)
heads.box_pooler.pooler_type = "ROIAlignRotated"
heads.box_predictor._target_ = RotatedFastRCNNOutputLayers
heads.box_predictor.box2box_transform = L(Box2BoxTransformRotated)(weights=(10.0, 10.0, 5.0, 5.0, 1.0))
heads.num_classes = 1
