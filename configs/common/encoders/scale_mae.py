"""Scale-MAE ViT-L/16 (fMoW RGB) for the task configs.

Weights: ``vit_large_patch16_224_fmow_rgb_scalemae-98ed9821.pth`` of the Hugging Face
repository ``isaaccorley/vit_large_patch16_224_fmow_rgb_scalemae`` (``SCALE_MAE_PRETRAINED``
in ``d2geo/encoders/scale_mae.py``), saved where ``backbone.weights`` points. Input: RGB on a
0-255 scale normalized with the ImageNet statistics, as the weights were trained. Every
batch needs its ground sample distance (``metadata["gsd"]``, metres per pixel), which
d2geo's GeoTIFF reader takes from each file's transform.
"""
from d2geo.encoders.scale_mae import SCALE_MAE_STATS

_name = "scalemae_vitl16"

encoder = dict(
    backbone=dict(
        encoder=_name,
        weights="checkpoints/vit_large_patch16_224_fmow_rgb_scalemae-98ed9821.pth",
        drop_path_rate=0.2,
        encoder_kwargs=dict(bands=list(SCALE_MAE_STATS["bands"])),
    ),
    bands=list(SCALE_MAE_STATS["bands"]),
    pixel_mean=list(SCALE_MAE_STATS["mean"]),
    pixel_std=list(SCALE_MAE_STATS["std"]),
    taps=[5, 11, 17, 23],
    lr_decay_rate=0.8,
)
