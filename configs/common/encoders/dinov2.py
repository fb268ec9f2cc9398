"""DINOv2 (facebookresearch/dinov2) for the task configs, from the pretrained table.

``encoder.backbone`` holds the ``GeoBackbone`` arguments: the variant, its published
weights by name (``pretrained=True``: Meta's official file, downloaded once into torch.hub's
cache), and the bands. ``bands``, ``pixel_mean`` and ``pixel_std`` are the ones the weights
were trained with (``d2geo.encoders.get_pretrained_cfg("dinov2_vitb14")``), never pasted.
A task config applies them (and ``taps``, ``lr_decay_rate``) with ``apply.py``::

    from ..common.encoders.apply import apply_encoder as _apply_encoder
    from ..common.encoders.dinov2 import encoder as _enc
    _apply_encoder(_enc, model, dataloader, optimizer, layers=_enc.taps)

The 14-pixel patch kernel is resampled to 16 pixels on load so the pyramids get strides
4..64; the position table is interpolated to the input size at run time.
"""
from d2geo.encoders import get_pretrained_cfg

_name = "dinov2_vitb14"
_pre = get_pretrained_cfg(_name)

encoder = dict(
    backbone=dict(
        encoder=_name,
        pretrained=True,
        weights=None,  # a path or hf://... replaces the published file
        drop_path_rate=0.1,
        encoder_kwargs=dict(patch_size=16, bands=list(_pre.bands)),
    ),
    bands=list(_pre.bands),
    pixel_mean=list(_pre.mean),
    pixel_std=list(_pre.std),
    taps=[3, 5, 7, 11],  # four blocks for the multi-layer pyramid (ViT-B)
    lr_decay_rate=0.7,  # ViTDet's value for ViT-B
)
