"""AnySat base for the task configs: single-date Sentinel-2 L2A (the ten 10/20 m bands), one
encoder per modality.

Weights: ``models/AnySat.pth`` of the Hugging Face repository ``g-astruc/AnySat``
(``ANYSAT_PRETRAINED`` in ``d2geo/encoders/anysat.py``; its revision is not pinned: no public
source states one), loaded by name (``pretrained=True``); the Sentinel-2 projector is kept, the
other modalities' are ignored. AnySat cuts patches in metres: ``patch_size_m=160`` gives 16-pixel
patches at 10 m (strides 4..64 for the pyramids; 16 x 16 sub-patches per patch, coarser than
AnySat's pretraining scales, which used patches of 10..60 m: ``patch_size_m=80`` gives 8-pixel
patches and needs Clay's pyramid settings, see ``configs/clay/``). Every batch needs
``metadata["gsd"]`` = 10 m and the acquisition ``timestamps`` (the day of the year codes the
date), which d2geo's GeoTIFF reader gives; set ``encoder_kwargs.default_doy`` for files without
dates. AnySat standardizes every dataset with its own statistics: ``pixel_mean``/``pixel_std``
are the table's placeholders (DN / 10 000) to replace with your data's. AnySat has no norm after
its last (cross-attention) block, whose output is its ``patch`` features; the taps are blocks 1, 3,
5 and that last block.
"""
from d2geo.encoders import get_pretrained_cfg

_name = "anysat_base"
_pre = get_pretrained_cfg(_name)

encoder = dict(
    backbone=dict(
        encoder=_name,
        pretrained=True,
        weights=None,
        norm=True,
        drop_path_rate=0.1,
        encoder_kwargs=dict(modality="s2", frames=1, patch_size_m=160, bands=list(_pre.bands)),
    ),
    bands=list(_pre.bands),
    pixel_mean=list(_pre.mean),
    pixel_std=list(_pre.std),
    taps=[1, 3, 5, 6],
    lr_decay_rate=0.75,
)
