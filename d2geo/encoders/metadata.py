"""The one acquisition-metadata schema every encoder reads, and sensor band tables.

A metadata mapping may hold any of these keys (all optional at this level; an encoder
says which ones it needs):

==============  ===============  ==========================================================
key             shape / dtype    meaning
==============  ===============  ==========================================================
``timestamps``  ``(B, T)`` f64   acquisition time, seconds since the Unix epoch, UTC
``latlon``      ``(B, 2)``       tile centre latitude and longitude, degrees
``gsd``         ``(B,)``         ground sample distance, metres
``wavelengths`` ``(C,)``         centre wavelength of each input band, micrometres
==============  ===============  ==========================================================

Each encoder turns these into its own upstream encoding (see the family modules).
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import torch

from .base import EncoderInputError, is_tracing

logger = logging.getLogger(__name__)

__all__ = ["METADATA_KEYS", "SENSOR_BANDS", "band_wavelengths", "check_metadata", "warn_once"]

METADATA_KEYS = ("timestamps", "latlon", "gsd", "wavelengths")

#: centre wavelengths in micrometres, keyed by sensor then by band name. Names follow the
#: STAC ``eo:bands`` common names where they exist; Sentinel-2 and Landsat also accept
#: their band ids. Sentinel-1 has no optical wavelength: the values are the
#: stand-ins Clay was trained with for its VV and VH channels.
SENSOR_BANDS: dict[str, dict[str, float]] = {
    "sentinel-2-l2a": {
        "coastal": 0.443, "blue": 0.493, "green": 0.560, "red": 0.665,
        "rededge1": 0.704, "rededge2": 0.740, "rededge3": 0.783, "nir": 0.842,
        "nir08": 0.865, "nir09": 0.945, "swir16": 1.610, "swir22": 2.190,
    },
    "landsat-c2": {
        "coastal": 0.443, "blue": 0.48, "green": 0.56, "red": 0.65,
        "nir08": 0.86, "swir16": 1.6, "swir22": 2.2,
    },
    "hls": {
        "coastal": 0.443, "blue": 0.490, "green": 0.560, "red": 0.665,
        "nir_narrow": 0.865, "swir_1": 1.610, "swir_2": 2.190,
    },
    "naip": {"red": 0.650, "green": 0.560, "blue": 0.480, "nir": 0.842},
    "sentinel-1": {"vv": 3.5, "vh": 4.0},
}

_BAND_ALIASES: dict[str, dict[str, str]] = {
    "sentinel-2-l2a": {
        "b01": "coastal", "b02": "blue", "b03": "green", "b04": "red", "b05": "rededge1",
        "b06": "rededge2", "b07": "rededge3", "b08": "nir", "b8a": "nir08", "b09": "nir09",
        "b11": "swir16", "b12": "swir22",
    },
    "landsat-c2": {
        "b1": "coastal", "b2": "blue", "b3": "green", "b4": "red", "b5": "nir08",
        "b6": "swir16", "b7": "swir22",
    },
    "hls": {"nir": "nir_narrow", "nir08": "nir_narrow", "swir16": "swir_1", "swir22": "swir_2"},
}


def band_wavelengths(sensor: str, bands: Sequence[str]) -> torch.Tensor:
    """Centre wavelengths (micrometres) of the named ``bands`` of ``sensor``."""
    key = sensor.lower()
    if key not in SENSOR_BANDS:
        raise KeyError(f"unknown sensor {sensor!r}; known sensors: {', '.join(SENSOR_BANDS)}")
    table, aliases = SENSOR_BANDS[key], _BAND_ALIASES.get(key, {})
    out = []
    for band in bands:
        name = aliases.get(band.lower(), band.lower())
        if name not in table:
            raise KeyError(
                f"unknown band {band!r} for {sensor}; known bands: {', '.join(table)}"
                + (f" (or ids {', '.join(aliases)})" if aliases else "")
            )
        out.append(table[name])
    return torch.tensor(out, dtype=torch.float32)


_WARNED: set[tuple[str, str]] = set()


def warn_once(owner: str, key: str, fallback: str) -> None:
    """Log, once per encoder family and key, that metadata fell back to 'unknown'."""
    if (owner, key) not in _WARNED:
        _WARNED.add((owner, key))
        logger.warning("%s: no %r in metadata; using %s (warned once)", owner, key, fallback)


def check_metadata(metadata: Mapping[str, Any] | None, *, batch_size: int,
                   num_frames: int | None = None, num_bands: int | None = None,
                   device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """Validate a metadata mapping against the schema and return it as tensors.

    Keys that are absent stay absent; unknown keys are an error (a typo would
    otherwise silently fall back to 'unknown').
    """
    if metadata is None:
        return {}
    unknown = set(metadata) - set(METADATA_KEYS)
    if unknown:
        raise EncoderInputError(
            f"unknown metadata keys {sorted(unknown)}; the schema has {list(METADATA_KEYS)}"
        )
    expected = {
        "timestamps": (batch_size, num_frames),
        "latlon": (batch_size, 2),
        "gsd": (batch_size,),
        "wavelengths": (num_bands,),
    }
    out = {}
    for key, value in metadata.items():
        if value is None:
            continue
        dtype = torch.float64 if key == "timestamps" else torch.float32
        t = torch.as_tensor(value, dtype=dtype, device=device)
        if key == "gsd" and t.ndim == 0:
            t = t.expand(batch_size)
        shape = expected[key]
        if t.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
            want = tuple("?" if s is None else s for s in shape)
            raise EncoderInputError(f"metadata {key!r} has shape {tuple(t.shape)}, expected {want}")
        if not is_tracing() and not torch.isfinite(t).all():  # no value checks while exporting
            raise EncoderInputError(f"metadata {key!r} holds NaN or inf values")
        out[key] = t
    if "latlon" in out and not is_tracing() and ((out["latlon"][:, 0].abs() > 90).any() or (out["latlon"][:, 1].abs() > 360).any()):
        raise EncoderInputError("metadata 'latlon' is out of range: give (latitude, longitude) in degrees")
    return out
