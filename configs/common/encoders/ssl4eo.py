"""SSL4EO-S12 ViT-S/16 (DINO) for the task configs: 13-band Sentinel-2 L1C.

Weights: ``vit_small_patch16_224_sentinel2_all_dino-36bcc127.pth`` of the Hugging Face
repository ``torchgeo/vit_small_patch16_224_sentinel2_all_dino`` (``SSL4EO_PRETRAINED`` in
``d2geo/encoders/ssl4eo.py`` lists the MAE, MoCo-v3 and FG-MAE files too). The weights were
trained on the 13 L1C bands scaled by 1/10 000 (mean 0, std 10 000 here), read from the
pretrained table
(``d2geo.encoders.get_pretrained_cfg(_name)``). ``pretrained=True`` downloads the file once
into the Hub cache. Swap ``encoder`` for another method's variant.

``data2vec``: the data2vec ViT-S/16 (``ssl4eo_s12_vits16_data2vec``, a BEiT-style network:
``d2geo/encoders/ssl4eo_data2vec.py``), same bands and scaling, with the official fine-tuning's
layer decay (0.65) and drop path (0.2). Its weights are on Google Drive only: download the
backbone file from the link in ``get_pretrained_cfg("ssl4eo_s12_vits16_data2vec").source`` and
set ``model.backbone.net.weights`` to its path (``pretrained=True`` alone says so and stops).
"""
from d2geo.encoders import get_pretrained_cfg

_name = "ssl4eo_s12_vits16_dino"
_pre = get_pretrained_cfg(_name)

encoder = dict(
    backbone=dict(
        encoder=_name,
        pretrained=True,
        weights=None,
        drop_path_rate=0.1,
        encoder_kwargs=dict(bands=list(_pre.bands)),
    ),
    bands=list(_pre.bands),
    pixel_mean=list(_pre.mean),
    pixel_std=list(_pre.std),
    taps=[3, 5, 7, 11],
    lr_decay_rate=0.75,
)

_d2v = get_pretrained_cfg("ssl4eo_s12_vits16_data2vec")
data2vec = dict(
    backbone=dict(
        encoder="ssl4eo_s12_vits16_data2vec",
        pretrained=True,
        weights=None,
        drop_path_rate=0.2,
        encoder_kwargs=dict(bands=list(_d2v.bands)),
    ),
    bands=list(_d2v.bands),
    pixel_mean=list(_d2v.mean),
    pixel_std=list(_d2v.std),
    taps=[3, 5, 7, 11],
    lr_decay_rate=0.65,
)
