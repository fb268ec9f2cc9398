"""Geospatial foundation-model encoders in pure PyTorch (no detectron2 here).

>>> from d2geo.encoders import build_encoder, list_encoders
>>> enc = build_encoder("dinov2_vitb14_reg", weights="dinov2_vitb14_reg4_pretrain.pth")
>>> enc = build_encoder("prithvi_eo_v2_300_tl", pretrained=True)  # published weights, cached
>>> enc = build_encoder("clay_v1_5_large", weights="hf://made-with-clay/Clay/v1.5/clay-v1.5.ckpt")
>>> feats = enc.forward_features(images, layers=[3, 5, 7, 11], norm=True)

The band vocabulary (:mod:`.bands`) and the modality table (:mod:`.modalities`) are pure
Python: an inference-only install (``pip install d2geo[infer]``, no torch) imports them;
everything else here needs torch (``pip install d2geo[train]``).
"""
import importlib.util as _util

from .bands import HLS_BANDS, RGB_BANDS, SENSOR_BANDS, SENSORS, BandError, band_wavelengths, match_bands

try:
    _HAS_TORCH = _util.find_spec("torch") is not None
except (ImportError, ValueError):  # torch blocked or half-installed
    _HAS_TORCH = False

if _HAS_TORCH:
    from .base import EncoderInputError, GeoEncoder
    from .checkpoint import CheckpointError, load_encoder_weights, read_checkpoint
    from .hub import ChecksumMismatchError, ManualDownloadError, WeightsDownloadError, resolve_weights
    from .metadata import METADATA_KEYS
    from .registry import (
        InputStats,
        PretrainedCfg,
        build_encoder,
        encoder_family,
        get_encoder_config,
        get_pretrained_cfg,
        is_test_variant,
        list_encoders,
        list_pretrained,
        register_encoder,
        resolve_name,
    )

    # Importing the family modules registers their variants.
    from . import dinov2  # noqa: F401,E402  isort: skip
    from . import clay  # noqa: F401,E402  isort: skip
    from . import prithvi  # noqa: F401,E402  isort: skip
    from . import dinov3  # noqa: F401,E402  isort: skip
    from . import dinov3_convnext  # noqa: F401,E402  isort: skip
    from . import ssl4eo  # noqa: F401,E402  isort: skip
    from . import ssl4eo_data2vec  # noqa: F401,E402  isort: skip
    from . import scale_mae  # noqa: F401,E402  isort: skip
    from . import satlas  # noqa: F401,E402  isort: skip
    from . import satlas_resnet  # noqa: F401,E402  isort: skip
    from . import dofa  # noqa: F401,E402  isort: skip
    from . import terramind  # noqa: F401,E402  isort: skip
    from . import copernicusfm  # noqa: F401,E402  isort: skip
    from . import croma  # noqa: F401,E402  isort: skip
    from . import panopticon  # noqa: F401,E402  isort: skip
    from . import galileo  # noqa: F401,E402  isort: skip
    from . import anysat  # noqa: F401,E402  isort: skip
    from . import olmoearth  # noqa: F401,E402  isort: skip
    from . import softcon  # noqa: F401,E402  isort: skip

    from .cards import ModelCard, describe, encoder_list_text  # noqa: E402
    from .licenses import is_non_commercial, weights_licenses  # noqa: E402
else:
    def __getattr__(name):
        raise ImportError(f"d2geo.encoders.{name} needs torch, which is not installed (an inference-only "
                          f"install): pip install 'd2geo[train]' for the encoders and training")

__all__ = [
    "GeoEncoder", "EncoderInputError", "CheckpointError", "build_encoder", "list_encoders",
    "get_encoder_config", "register_encoder", "load_encoder_weights", "read_checkpoint",
    "METADATA_KEYS", "SENSOR_BANDS", "SENSORS", "band_wavelengths", "BandError", "match_bands",
    "RGB_BANDS", "HLS_BANDS", "PretrainedCfg", "InputStats", "get_pretrained_cfg", "list_pretrained",
    "resolve_weights", "WeightsDownloadError", "ChecksumMismatchError", "ManualDownloadError",
    "describe", "ModelCard", "encoder_list_text", "weights_licenses", "is_non_commercial", "resolve_name",
    "is_test_variant", "encoder_family",
]
