"""DINOv3 ViT-L/16 pretrained on satellite imagery (SAT-493M) for the task configs.

``pretrained=True`` loads timm's copy on the Hugging Face Hub
(``timm/vit_large_patch16_dinov3_qkvb.sat493m``), which needs no signed link; Meta's own
file (download form) loads too, by path: ``model.backbone.net.weights=/path/to/file.pth``.
Bands and the SAT-493M input statistics come from the pretrained table
(``d2geo.encoders.get_pretrained_cfg("dinov3_vitl16_sat")``). Rotary position embeddings:
any input whose sides are multiples of 16. Applied as in ``dinov2.py``.
"""
from d2geo.encoders import get_pretrained_cfg

_name = "dinov3_vitl16_sat"
_pre = get_pretrained_cfg(_name)

encoder = dict(
    backbone=dict(
        encoder=_name,
        pretrained=True,
        weights=None,
        drop_path_rate=0.3,
        encoder_kwargs=dict(bands=list(_pre.bands)),
    ),
    bands=list(_pre.bands),
    pixel_mean=list(_pre.mean),
    pixel_std=list(_pre.std),
    taps=[5, 11, 17, 23],
    lr_decay_rate=0.8,  # ViTDet's value for ViT-L
)
