"""Clay v1.5 (ViT-L, 8-pixel patches) on Sentinel-2 L2A for the task configs.

``pretrained=True`` loads ``v1.5/clay-v1.5.ckpt`` of the Hugging Face repository
``made-with-clay/Clay``. The ten Sentinel-2 L2A bands and their statistics (digital numbers,
reflectance x 10 000) are Clay's own (``d2geo.encoders.get_pretrained_cfg("clay_v1_5_large")``;
``stats_for("landsat-c2l2-sr")``, ``"naip"``, ``"sentinel-1-rtc"`` ... give the other
platforms'). Clay's patch embedding is built from the band wavelengths, so other band sets
work too: change ``bands`` (names of d2geo's ``sentinel-2-l2a`` table, or give
``wavelengths``) and the statistics. The GSD defaults to 10 m. Applied as in ``dinov2.py``.
"""
from d2geo.encoders import get_pretrained_cfg

_name = "clay_v1_5_large"
_pre = get_pretrained_cfg(_name)
_s2 = _pre.stats_for("sentinel-2-l2a")

encoder = dict(
    backbone=dict(
        encoder=_name,
        pretrained=True,
        weights=None,
        drop_path_rate=0.1,
        encoder_kwargs=dict(sensor=_s2.sensor, bands=list(_s2.bands), gsd=10.0),
    ),
    bands=list(_s2.bands),
    pixel_mean=list(_s2.mean),
    pixel_std=list(_s2.std),
    lr_decay_rate=0.8,
)
