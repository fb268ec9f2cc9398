"""Copernicus-FM ViT-B/16 for the task configs: any Copernicus sensor, its patch kernel made
from the band wavelengths and bandwidths, plus location, time and patch-area embeddings from
the sample metadata.

Weights: ``CopernicusFM_ViT_base_varlang-085350e4.pth`` of the Hugging Face repository
``torchgeo/copernicus-fm`` (``COPERNICUSFM_PRETRAINED`` in ``d2geo/encoders/copernicusfm.py``),
loaded by name (``pretrained=True``). The bands are Sentinel-2 L1C's thirteen; their
wavelengths and bandwidths come from the band vocabulary (the GeoTIFF reader puts the
wavelengths, the location, the acquisition time and the gsd into each sample's metadata; the
encoder turns the gsd into the area of one patch). ``pixel_mean``/``pixel_std`` are
Copernicus-Bench's per-dataset values (DN): replace them with your data's statistics. Dense
features are the raw block outputs of blocks 3, 5, 7, 11 (``norm=False``), as in
Copernicus-FM's segmentation code.
"""
from d2geo.encoders import get_pretrained_cfg

_name = "copernicusfm_vitb16"
_pre = get_pretrained_cfg(_name)

encoder = dict(
    backbone=dict(
        encoder=_name,
        pretrained=True,
        weights=None,
        norm=False,
        drop_path_rate=0.1,
        encoder_kwargs=dict(bands=list(_pre.bands), sensor=_pre.default_stats.sensor),
    ),
    bands=list(_pre.bands),
    pixel_mean=list(_pre.mean),
    pixel_std=list(_pre.std),
    taps=[3, 5, 7, 11],
    lr_decay_rate=0.75,
)
