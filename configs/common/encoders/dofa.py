"""DOFA ViT-B/16 for the task configs: any sensor, its patch kernel made from the band
wavelengths.

Weights: ``dofa_base_patch16_224-a0275954.pth`` of the Hugging Face repository
``torchgeo/dofa`` (``DOFA_PRETRAINED`` in ``d2geo/encoders/dofa.py``; ``dofa_vitl16`` is the
large one), loaded by name (``pretrained=True``). The bands here are Sentinel-2 L2A's ten
10/20 m bands; their wavelengths come from the band vocabulary (the GeoTIFF reader also puts
them in each sample's metadata). DOFA normalizes every dataset with that dataset's own
per-band mean and std: ``pixel_mean``/``pixel_std`` are the table's placeholders (DN / 10 000)
to replace with your data's statistics. Dense features are the raw block outputs (``norm=False``), as in
DOFA's segmentation code.
"""
from d2geo.encoders import get_pretrained_cfg

_name = "dofa_vitb16"
_pre = get_pretrained_cfg(_name)

encoder = dict(
    backbone=dict(
        encoder=_name,
        pretrained=True,
        weights=None,
        norm=False,
        drop_path_rate=0.1,
        encoder_kwargs=dict(bands=list(_pre.bands), sensor="sentinel-2-l2a"),
    ),
    bands=list(_pre.bands),
    pixel_mean=list(_pre.mean),
    pixel_std=list(_pre.std),
    taps=[3, 5, 7, 11],
    lr_decay_rate=0.75,
)
