"""SSL4EO-S12 ViT-S/16 (DINO) for the task configs: 13-band Sentinel-2 L1C.

Weights: ``vit_small_patch16_224_sentinel2_all_dino-36bcc127.pth`` of the Hugging Face
repository ``torchgeo/vit_small_patch16_224_sentinel2_all_dino`` (``SSL4EO_PRETRAINED`` in
``d2geo/encoders/ssl4eo.py`` lists the MAE, MoCo-v3 and FG-MAE files too), saved where
``backbone.weights`` points. The weights were trained on the 13 L1C bands scaled by 1/10 000
(mean 0, std 10 000 here). Swap ``encoder`` and ``weights`` for another method's file.
"""
from d2geo.encoders.ssl4eo import SSL4EO_STATS

_name = "ssl4eo_s12_vits16_dino"

encoder = dict(
    backbone=dict(
        encoder=_name,
        weights="checkpoints/vit_small_patch16_224_sentinel2_all_dino-36bcc127.pth",
        drop_path_rate=0.1,
        encoder_kwargs=dict(bands=list(SSL4EO_STATS["bands"])),
    ),
    bands=list(SSL4EO_STATS["bands"]),
    pixel_mean=list(SSL4EO_STATS["mean"]),
    pixel_std=list(SSL4EO_STATS["std"]),
    taps=[3, 5, 7, 11],
    lr_decay_rate=0.75,
)
