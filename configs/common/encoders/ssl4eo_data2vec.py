"""SSL4EO-S12 data2vec ViT-S/16 for the task configs: 13-band Sentinel-2 L1C.

The data2vec network is BEiT-style (``d2geo/encoders/ssl4eo_data2vec.py``); bands and input
scaling are those of the other SSL4EO-S12 weights (the 13 L1C bands / 10 000), read from the
pretrained table (``d2geo.encoders.get_pretrained_cfg(_name)``); layer decay 0.65 and drop
path 0.2 are the official fine-tuning's (``ft_data2vec_vit16_s2c_BE_100.sh``).

Weights: the backbone is shared on Google Drive only
(``get_pretrained_cfg("ssl4eo_s12_vits16_data2vec").source``), which no download client can
fetch: download it in a browser and set ``model.backbone.net.weights`` to its path
(``pretrained=True`` without it stops with these instructions).
"""
from d2geo.encoders import get_pretrained_cfg

_name = "ssl4eo_s12_vits16_data2vec"
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
    taps=[3, 5, 7, 11],
    lr_decay_rate=0.65,
)
