"""The one acquisition-metadata schema every encoder reads (band tables: ``bands.py``).

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
from typing import Any, Mapping

import torch

from .bands import SENSOR_BANDS, band_wavelengths  # noqa: F401  (their home is bands.py)
from .base import EncoderInputError

logger = logging.getLogger(__name__)

__all__ = ["METADATA_KEYS", "SENSOR_BANDS", "band_wavelengths", "check_metadata", "warn_once"]

METADATA_KEYS = ("timestamps", "latlon", "gsd", "wavelengths")

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
        if not torch.isfinite(t).all():
            raise EncoderInputError(f"metadata {key!r} holds NaN or inf values")
        out[key] = t
    if "latlon" in out and ((out["latlon"][:, 0].abs() > 90).any() or (out["latlon"][:, 1].abs() > 360).any()):
        raise EncoderInputError("metadata 'latlon' is out of range: give (latitude, longitude) in degrees")
    return out
