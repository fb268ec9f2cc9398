"""Prithvi-EO-2.0-300M-TL (NASA/IBM) for the task configs, from the pretrained table.

``pretrained=True`` loads ``Prithvi_EO_V2_300M_TL.pt`` of the Hugging Face repository
``ibm-nasa-geospatial/Prithvi-EO-2.0-300M-TL`` (downloaded once into the Hub cache; see
``HF_HUB_OFFLINE`` / ``HF_ENDPOINT`` in the README). The six HLS bands, the number of dates
and the HLS statistics (reflectance x 10 000) are those of the weights
(``d2geo.encoders.get_pretrained_cfg("prithvi_eo_v2_300_tl")``). Applied as in ``dinov2.py``;
the task configs choose how the dates are folded (``temporal_fold``).
"""
from d2geo.encoders import get_pretrained_cfg

_name = "prithvi_eo_v2_300_tl"
_pre = get_pretrained_cfg(_name)

encoder = dict(
    backbone=dict(
        encoder=_name,
        pretrained=True,
        weights=None,
        drop_path_rate=0.1,
        encoder_kwargs=dict(num_frames=_pre.num_frames, bands=list(_pre.bands)),
    ),
    bands=list(_pre.bands),
    pixel_mean=list(_pre.mean),
    pixel_std=list(_pre.std),
    taps=[5, 11, 17, 23],
    lr_decay_rate=0.8,
)
