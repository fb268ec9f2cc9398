"""SSL4EO-S12 ViT-S/16 (DINO) for the task configs: 13-band Sentinel-2 L1C.

Weights: ``vit_small_patch16_224_sentinel2_all_dino-36bcc127.pth`` of the Hugging Face
repository ``torchgeo/vit_small_patch16_224_sentinel2_all_dino`` (``SSL4EO_PRETRAINED`` in
``d2geo/encoders/ssl4eo.py`` lists the MAE, MoCo-v3 and FG-MAE files too). The weights were
trained on the 13 L1C bands scaled by 1/10 000 (mean 0, std 10 000 here), read from the
pretrained table
(``d2geo.encoders.get_pretrained_cfg(_name)``). ``pretrained=True`` downloads the file once
into the Hub cache. Swap ``encoder`` for another method's variant (data2vec, a BEiT-style
network, has its own fragment: ``ssl4eo_data2vec.py``).
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
