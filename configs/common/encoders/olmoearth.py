"""OlmoEarth v1 Base for the task configs: Sentinel-2 L2A's twelve bands in upstream's three band
groups (one token per group and position, averaged into one feature per position).

Weights: ``weights.pth`` of the Hugging Face repository ``allenai/OlmoEarth-v1-Base``
(``OLMOEARTH_PRETRAINED`` in ``d2geo/encoders/olmoearth.py``), loaded by name (``pretrained=True``);
licensed under the OlmoEarth Artifact License, which forbids military, surveillance and extractive
uses (``d2geo.encoders.describe("olmoearth_v1_base")``). Sentinel-1 (``modality="sentinel1"``,
bands VV, VH) and Landsat (``modality="landsat"``) use the same weights: set
``encoder_kwargs.modality`` and ``bands``. The encoder needs each sample's acquisition time
(``metadata["timestamps"]``, which the GeoTIFF reader gives) for its month code.
``pixel_mean``/``pixel_std`` are upstream's pretraining statistics (its ``data/norm_configs/computed.json``
as its ``Normalizer`` applies them) for Sentinel-2 L2A in DN; for Sentinel-1 use ``olmoearth_stats``. Patch size 8 (the
published kernel; no image resize); dense features are normed taps of blocks 3, 5, 7, 11.
"""
from d2geo.encoders import get_pretrained_cfg

_name = "olmoearth_v1_base"
_pre = get_pretrained_cfg(_name)

encoder = dict(
    backbone=dict(
        encoder=_name,
        pretrained=True,
        weights=None,
        norm=True,
        drop_path_rate=0.1,
        encoder_kwargs=dict(patch_size=8, modality="sentinel2_l2a", bands=list(_pre.bands),
                            sensor=_pre.default_stats.sensor),
    ),
    bands=list(_pre.bands),
    pixel_mean=list(_pre.mean),
    pixel_std=list(_pre.std),
    taps=[3, 5, 7, 11],
    lr_decay_rate=0.75,
)
