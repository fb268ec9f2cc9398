"""Galileo base (NASA Harvest), Sentinel-2 + Sentinel-1 time series, for the task configs.

``pretrained=True`` loads ``models/base/encoder.pt`` of the Hugging Face repository
``nasaharvest/galileo`` at a pinned commit (``d2geo.encoders.get_pretrained_cfg("galileo_base")``;
``galileo_nano`` and ``galileo_tiny`` are the smaller ones). The channels are Galileo's ten
Sentinel-2 bands (B02..B12 without B01, B09, B10; L1C, as the publisher exported them from
Earth Engine) and Sentinel-1 GRD's VV, VH in dB, named ``"<MODALITY>:<band>"`` (12
channels), with the publisher's statistics (``x -> (x - mean + 2 std) / (4 std)`` written as
a mean and std). One date per sample, as ``read_modalities`` stacks one file per modality;
for a time series give ``(12, T, H, W)`` images and ``encoder_kwargs.num_frames=T`` (pretraining
used 3..12 dates). The encoder reads each date's month from the metadata ``timestamps`` and
refuses a batch without them (``read_modalities`` gives them when the S2 and S1 files carry the
same time; otherwise set ``encoder_kwargs.default_month`` 0..11 knowingly). Each tap's map is the
mean over Galileo's channel groups per date; the dates are averaged (``temporal_fold="mean"``:
upstream's per-patch average of all tokens). Patch 8 (the published
kernels; ``encoder_kwargs.patch_size`` 1..8 resamples them). A DEM (Galileo's SRTM group) is
taken too: add ``"DEM:DEM"`` (and ``"slope"`` if you have it; else it is derived from the
elevation and the GSD) to both ``bands`` lists and recompute ``pixel_mean/pixel_std`` with
``galileo_stats`` (docs/galileo.md).
"""
from d2geo.encoders import get_pretrained_cfg
from d2geo.encoders.galileo import galileo_stats

_name = "galileo_base"
_pre = get_pretrained_cfg(_name)
_s2, _s1 = _pre.stats_for("galileo-s2"), _pre.stats_for("galileo-s1")
_bands = [f"S2L1C:{b.split(':')[1]}" for b in _s2.bands] + [f"S1GRD:{b.split(':')[1]}" for b in _s1.bands]
_mean, _std = galileo_stats(_bands)

encoder = dict(
    backbone=dict(
        encoder=_name,
        pretrained=True,
        weights=None,
        drop_path_rate=0.1,
        temporal_fold="mean",
        encoder_kwargs=dict(num_frames=1, bands=_bands),
    ),
    bands=_bands,
    pixel_mean=_mean,
    pixel_std=_std,
    taps=[2, 5, 8, 11],
    lr_decay_rate=0.8,
)
