"""CROMA base, joint Sentinel-2 + Sentinel-1 encoder, for the task configs.

``pretrained=True`` loads ``CROMA_base-0238d814.pt`` of the Hugging Face repository
``torchgeo/croma`` (``d2geo.encoders.get_pretrained_cfg("croma_base")``; ``croma_large`` is the
large one). The channels are CROMA's 12 Sentinel-2 bands (B10, cirrus, left out), read here
from L1C files, and Sentinel-1 GRD's VV, VH in dB, named ``"<MODALITY>:<band>"`` (14
channels), the names ``read_modalities`` gives one file per modality (a 13-band L1C file's
B10 is not read). CROMA pretrained on SSL4EO-S12, which holds L1C and L2A; its code does not
say which level it used, so L2A files (``"S2L2A"``, same 12 bands) are just as valid.
The joint encoder fuses the two sensors; its 6 blocks are the ones tapped, the two
unimodal ViTs before it count as the embedding for freezing and layer-wise lr decay.
CROMA scales every band with its own dataset's mean +- 2 std: the statistics are the table's
placeholders (SSL4EO-S12's, in that form, ``croma_stats``); replace them with your data's.
For one sensor set ``modality="optical"`` (or ``"sar"``) and its bands in ``encoder_kwargs``.
"""
from d2geo.encoders.croma import croma_bands, croma_stats

_name = "croma_base"
_bands = list(croma_bands(["S2L1C", "S1GRD"]))
_mean, _std = croma_stats(_bands)

encoder = dict(
    backbone=dict(
        encoder=_name,
        pretrained=True,
        weights=None,
        drop_path_rate=0.1,
        encoder_kwargs=dict(modality="joint", bands=_bands),
    ),
    bands=_bands,
    pixel_mean=_mean,
    pixel_std=_std,
    taps=[2, 3, 4, 5],
    lr_decay_rate=0.8,
)
