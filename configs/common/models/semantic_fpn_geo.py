"""Semantic FPN on a d2geo encoder: four encoder taps, a multi-layer pyramid, and
detectron2's ``SemSegFPNHead``.

``MultiLayerPyramid`` resamples four blocks of the ``GeoBackbone`` (shallow to deep) to
strides ``patch/4 .. 2*patch`` (``p2..p5`` for patch size 16); the head upsamples every
level to stride 4, sums them and predicts per-pixel classes (upsampled to the input size).

Configs set at least ``model.backbone.net.encoder`` (+ ``encoder_kwargs``) and
``layers`` (four block indices), ``model.pixel_mean``/``pixel_std`` and
``model.sem_seg_head.num_classes``. Labels equal to ``ignore_value`` (255) are ignored.
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.meta_arch.semantic_seg import SemSegFPNHead

from d2geo.modeling import GeoBackbone, GeoSemanticSegmentor, MultiLayerPyramid

model = L(GeoSemanticSegmentor)(
    backbone=L(MultiLayerPyramid)(
        net=L(GeoBackbone)(
            encoder="dinov2_vitb14",
            weights=None,
            layers=(3, 5, 7, 11),
            norm=True,
            drop_path_rate=0.1,
            freeze="none",
            encoder_kwargs=dict(patch_size=16),
        ),
        out_channels=256,
        top_block=None,
        norm="LN",
    ),
    sem_seg_head=L(SemSegFPNHead)(
        input_shape={
            name: L(ShapeSpec)(stride=stride, channels="${....backbone.out_channels}")
            for name, stride in (("p2", 4), ("p3", 8), ("p4", 16), ("p5", 32))
        },
        num_classes=2,
        conv_dims=128,
        common_stride=4,
        loss_weight=1.0,
        norm="GN",
        ignore_value=255,
    ),
    pixel_mean=[0.0],
    pixel_std=[1.0],
)
