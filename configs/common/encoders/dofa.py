"""DOFA ViT-B/16 for the task configs: any sensor, its patch kernel made from the band
wavelengths.

Weights: ``dofa_base_patch16_224-a0275954.pth`` of the Hugging Face repository
``torchgeo/dofa`` (``DOFA_PRETRAINED`` in ``d2geo/encoders/dofa.py``; ``dofa_vitl16`` is the
large one), saved where ``backbone.weights`` points. The bands here are Sentinel-2 L2A's ten
10/20 m bands; their wavelengths come from the band vocabulary (the GeoTIFF reader also puts
them in each sample's metadata). DOFA normalizes every dataset with that dataset's own
per-band mean and std: ``pixel_mean``/``pixel_std`` are placeholders (DN / 10 000) to replace
with your data's statistics. Dense features are the raw block outputs (``norm=False``), as in
DOFA's segmentation code.
"""
_bands = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]

encoder = dict(
    backbone=dict(
        encoder="dofa_vitb16",
        weights="checkpoints/dofa_base_patch16_224-a0275954.pth",
        norm=False,
        drop_path_rate=0.1,
        encoder_kwargs=dict(bands=list(_bands), sensor="sentinel-2-l2a"),
    ),
    bands=list(_bands),
    pixel_mean=[0.0] * len(_bands),
    pixel_std=[10000.0] * len(_bands),
    taps=[3, 5, 7, 11],
    lr_decay_rate=0.75,
)
