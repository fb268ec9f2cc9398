"""OlmoEarth v1 Base on Sentinel-2 L2A and Sentinel-1 together, for the task configs: the 12 bands of an
S2L2A file and VV, VH of an S1RTC (or S1GRD) file on the same grid, named ``"<MODALITY>:<band>"`` as
``read_modalities`` stacks them (14 channels). Both modalities' band-group tokens go through one
attention, as upstream's multi-modal forward pass; the feature map of a position averages each
modality's group tokens, then the two modalities (upstream's ``pool_spatially``, MEAN).

Weights and license as ``olmoearth.py`` (the same ``weights.pth``: it holds both modalities' patch
embeddings). Statistics: ``olmoearth_stats`` per modality, upstream's (``computed.json`` as its ``Normalizer``
uses it): Sentinel-2 L2A in DN, Sentinel-1 in dB. The
encoder needs one acquisition time per sample (``metadata["timestamps"]``, upstream takes one for all
modalities): ``read_modalities`` gives it when the files agree; otherwise give the Sentinel-2 date.
"""
from d2geo.encoders.olmoearth_multimodal import expand_olmoearth_channels, olmoearth_stats

_name = "olmoearth_v1_base"
_bands = list(expand_olmoearth_channels(["S2L2A", "S1RTC"]))
_mean, _std = olmoearth_stats(_bands)

encoder = dict(
    backbone=dict(
        encoder=_name,
        pretrained=True,
        weights=None,
        norm=True,
        drop_path_rate=0.1,
        encoder_kwargs=dict(patch_size=8, bands=_bands),
    ),
    bands=_bands,
    pixel_mean=_mean,
    pixel_std=_std,
    taps=[3, 5, 7, 11],
    lr_decay_rate=0.75,
)
