"""TerraMind 1.0 base (IBM / ESA) for the task configs: Sentinel-2 L2A + Sentinel-1 RTC + DEM.

``pretrained=True`` loads ``TerraMind_v1_base.pt`` of the Hugging Face repository
``ibm-esa-geospatial/TerraMind-1.0-base`` (``d2geo.encoders.get_pretrained_cfg("terramind_v1_base")``).
The channels are the 12 S2L2A bands, VV and VH of S1RTC and the DEM, named
``"<MODALITY>:<band>"`` (15 channels); the input statistics are TerraMind's pretraining
statistics of those bands from the pretrained table (``terramind_stats``), in the units of the
files (reflectance x 10 000, dB, metres). Use another modality set by overriding ``bands``
(e.g. ``["S2L1C"]``, ``["S1GRD"]``, ``["S2RGB"]``) and recomputing the statistics.

``merge`` is how each block's per-modality token grids become one feature map (terratorch's
``merge_method``): ``"mean"`` (terratorch's default), ``"max"``, or ``"concat"`` (the
modalities' channels side by side, ``embed_dim`` x the number of modalities; the backbone's
output channels follow, so the pyramid and heads get the wider maps). Override it with
``model.backbone.net.encoder_kwargs.merge=concat``.
"""
from d2geo.encoders.terramind import expand_terramind_bands, terramind_stats

_name = "terramind_v1_base"
_bands = list(expand_terramind_bands(["S2L2A", "S1RTC", "DEM"]))
_mean, _std = terramind_stats(_bands)

encoder = dict(
    backbone=dict(
        encoder=_name,
        pretrained=True,
        weights=None,
        drop_path_rate=0.1,
        encoder_kwargs=dict(bands=_bands, merge="mean"),
    ),
    bands=_bands,
    pixel_mean=_mean,
    pixel_std=_std,
    taps=[2, 5, 8, 11],
    lr_decay_rate=0.8,
)
