"""Panopticon ViT-B/14 for the task configs: any optical and SAR bands, each channel encoded by
its wavelength (or SAR polarization) and fused into one token per patch by cross-attention.

Weights: ``panopticon_vitb14_teacher.pth`` of the Hugging Face repository ``lewaldm/panopticon``
(``PANOPTICON_PRETRAINED`` in ``d2geo/encoders/panopticon.py``), loaded by name
(``pretrained=True``). The bands here are Sentinel-2 L2A's ten 10/20 m bands; their channel ids
are the ones Panopticon was pretrained with (set ``encoder_kwargs.bands`` to any other band names,
e.g. ``["VV", "VH"]`` for Sentinel-1). Panopticon standardizes every dataset with that dataset's
own per-band mean and std: ``pixel_mean``/``pixel_std`` are the table's placeholders (DN / 10 000)
to replace with your data's statistics. Dense features are normed taps of blocks 3, 5, 7, 11, as in
the publishers' ``get_intermediate_layers`` example. The 14-pixel patch kernel is resampled to
16 pixels on load (as for DINOv2) so the pyramids get strides 4..64.
"""
from d2geo.encoders import get_pretrained_cfg

_name = "panopticon_vitb14"
_pre = get_pretrained_cfg(_name)

encoder = dict(
    backbone=dict(
        encoder=_name,
        pretrained=True,
        weights=None,
        norm=True,
        drop_path_rate=0.1,
        encoder_kwargs=dict(patch_size=16, bands=list(_pre.bands), sensor=_pre.default_stats.sensor),
    ),
    bands=list(_pre.bands),
    pixel_mean=list(_pre.mean),
    pixel_std=list(_pre.std),
    taps=[3, 5, 7, 11],
    lr_decay_rate=0.75,
)
