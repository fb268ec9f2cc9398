"""Scale-MAE ViT-L/16 (fMoW RGB) for the task configs.

Weights: ``vit_large_patch16_224_fmow_rgb_scalemae-98ed9821.pth`` of the Hugging Face
repository ``isaaccorley/vit_large_patch16_224_fmow_rgb_scalemae`` (``SCALE_MAE_PRETRAINED``
in ``d2geo/encoders/scale_mae.py``), loaded by name (``pretrained=True``). Input: RGB on a
0-255 scale normalized with the ImageNet statistics, as the weights were trained. Every
batch needs its ground sample distance (``metadata["gsd"]``, metres per pixel), which
d2geo's GeoTIFF reader takes from each file's transform.
"""
from d2geo.encoders import get_pretrained_cfg

_name = "scalemae_vitl16"
_pre = get_pretrained_cfg(_name)

encoder = dict(
    backbone=dict(
        encoder=_name,
        pretrained=True,
        weights=None,
        drop_path_rate=0.2,
        encoder_kwargs=dict(bands=list(_pre.bands)),
    ),
    bands=list(_pre.bands),
    pixel_mean=list(_pre.mean),
    pixel_std=list(_pre.std),
    taps=[5, 11, 17, 23],
    lr_decay_rate=0.8,
)
