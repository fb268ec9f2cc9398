"""Tiny detectron2 heads: the tests and the quick benchmark profile are about d2geo's backbone
glue, not detectron2's heads."""
from __future__ import annotations

__all__ = ["tiny_rcnn_heads"]


def tiny_rcnn_heads(model, channels: int = 32, box_conv_dims=()):
    """Shrink the pyramid, RPN and ROI heads of a Mask R-CNN LazyConfig ``model`` in place: the
    quick profile and the tests, which are about the backbone glue, not detectron2's heads."""
    from detectron2.layers import ShapeSpec

    model.backbone.out_channels = channels
    top = model.backbone.get("top_block")
    if top is not None and "in_channels" in top:  # e.g. LastLevelP6P7
        top.in_channels = top.out_channels = channels
    pg = model.proposal_generator
    pg.head.in_channels = channels
    pg.anchor_generator.sizes = [[16], [24], [32], [48], [64]]
    pg.batch_size_per_image = 64
    pg.pre_nms_topk = (200, 100)
    pg.post_nms_topk = (64, 32)
    rh = model.roi_heads
    rh.batch_size_per_image = 32
    rh.box_head.input_shape = ShapeSpec(channels=channels, height=7, width=7)
    rh.box_head.conv_dims = list(box_conv_dims)
    rh.box_head.fc_dims = [64]
    rh.box_predictor.input_shape = ShapeSpec(channels=64)
    rh.box_predictor.test_score_thresh = 0.0
    rh.box_predictor.test_topk_per_image = 10
    rh.mask_head.input_shape = ShapeSpec(channels=channels, width=14, height=14)
    rh.mask_head.conv_dims = [channels, channels]
    return model
