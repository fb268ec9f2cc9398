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

Timestamps are float64 (or integer) seconds within 1972..2100 (:func:`as_timestamps`
says why and names the unit of a wrong value); longitudes may be given in 0..360 and are
brought to -180..180. :func:`check_metadata` validates a mapping once, where it enters (the
meta-architectures, an encoder's ``forward_features``), and returns a :class:`Metadata` the
layers below take as it is.

Each encoder turns these into its own upstream encoding (see the family modules).
"""
from __future__ import annotations

import logging
import math
from datetime import datetime, timezone
from typing import Any, Mapping

import torch

from .bands import SENSOR_BANDS, band_wavelengths  # noqa: F401  (their home is bands.py)
from .errors import EncoderInputError
from .tracing import is_tracing

logger = logging.getLogger(__name__)

__all__ = ["METADATA_KEYS", "SENSOR_BANDS", "band_wavelengths", "check_metadata", "warn_once"]
__all__ += ["Metadata", "TIMESTAMP_MAX", "TIMESTAMP_MIN", "as_timestamps", "normalize_longitude"]
__all__ += ["GSD_MIN_M", "GSD_MAX_M", "check_gsd", "check_wavelengths"]

METADATA_KEYS = ("timestamps", "latlon", "gsd", "wavelengths")

_WARNED: set[tuple[str, str]] = set()


def warn_once(owner: str, key: str, fallback: str) -> None:
    """Log, once per encoder family and key, that metadata fell back to 'unknown'."""
    if (owner, key) not in _WARNED:
        _WARNED.add((owner, key))
        logger.warning("%s: no %r in metadata; using %s (warned once)", owner, key, fallback)


#: accepted range of ``timestamps`` (seconds since the Unix epoch, UTC): 1972-01-01 (Landsat 1,
#: the first civil Earth-observation satellite, flew in July 1972) to 2100-01-01. Earlier
#: values are almost always dates in another unit (day numbers, ``YYYYDDD`` or
#: ``YYYYMMDD`` digits read as seconds); later ones are milli-, micro- or nanoseconds.
#: For older archives (aerial photography), set these module attributes before training.
TIMESTAMP_MIN = 63072000.0
TIMESTAMP_MAX = 4102444800.0
_TIMESTAMP_FIX = ("pass seconds since the Unix epoch (UTC) as float64: "
                  "torch.tensor(..., dtype=torch.float64), e.g. datetime(2022, 9, 7, "
                  "tzinfo=timezone.utc).timestamp()")


def _timestamp_unit_hint(value: float) -> str:
    for factor, unit in ((1e3, "milliseconds"), (1e6, "microseconds"), (1e9, "nanoseconds")):
        if TIMESTAMP_MIN <= abs(value) / factor < TIMESTAMP_MAX:
            return f"; {value:.17g} looks like {unit} since the epoch (divide by {factor:.0e})"
    if 0 <= value < 1e5:
        return f"; {value:.17g} looks like a day number (day of year or days since the epoch)"
    if 1e5 <= value < TIMESTAMP_MIN:
        return f"; {value:.17g} looks like date digits (YYYYDDD or YYYYMMDD) read as seconds"
    return ""


def as_timestamps(value: Any, *, where: str = "metadata 'timestamps'",
                  check_range: bool = True) -> torch.Tensor:
    """``value`` as a float64 tensor of epoch seconds, refusing lossy dtypes and other units.

    Accepted: Python numbers and sequences of them, float64 tensors or arrays, and integer
    tensors or arrays (whole seconds, exact). Refused with the fix: float16/bfloat16/float32
    (float32 is torch's default dtype, and its spacing near 2020 is 128 s: 23:59:30 becomes
    the next day) and values outside 1972-01-01 .. 2100-01-01 (:data:`TIMESTAMP_MIN`,
    :data:`TIMESTAMP_MAX`), which are dates in another unit.
    """
    dtype = getattr(value, "dtype", None)
    if dtype is None and isinstance(value, (list, tuple)):
        dtypes = {str(getattr(v, "dtype", "")) for v in _flatten(value)} - {""}
        dtype = next((d for d in dtypes if "float64" not in d and "int" not in d), None)
    if dtype is not None:
        name = str(dtype).replace("torch.", "")
        if name != "float64" and "int" not in name:
            raise EncoderInputError(
                f"{where} are {name}, which cannot hold epoch seconds exactly (float32 rounds "
                f"to 128 s near 2020, moving 23:59:30 to the next day); {_TIMESTAMP_FIX}")
    try:
        t = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise EncoderInputError(f"{where} could not be read as numbers ({e}); {_TIMESTAMP_FIX}") from None
    if check_range and t.numel() and not is_tracing():  # no value checks while exporting
        finite = torch.isfinite(t)
        if not finite.all():
            raise EncoderInputError(f"{where} holds NaN or inf values; {_TIMESTAMP_FIX}")
        bad = (t < TIMESTAMP_MIN) | (t >= TIMESTAMP_MAX)
        if bad.any():
            first = float(t[bad].flatten()[0])
            lo, hi = (datetime.fromtimestamp(v, timezone.utc).date() for v in (TIMESTAMP_MIN, TIMESTAMP_MAX))
            raise EncoderInputError(
                f"{where} holds {first:.17g}, outside {lo} .. {hi} in seconds since the "
                f"Unix epoch{_timestamp_unit_hint(first)}; {_TIMESTAMP_FIX}")
    return t


#: accepted ground sample distances, metres. Below 2 cm is almost always a GSD in kilometres
#: (0.01 for 10 m); above 100 km, centimetres or a wrong transform. Drone imagery finer than
#: 2 cm: lower :data:`GSD_MIN_M` (a module attribute) before building the model.
GSD_MIN_M = 0.02
GSD_MAX_M = 1e5
#: centre wavelengths, micrometres: optical and thermal bands (and the 3.5/4.0 stand-ins that
#: Clay and DOFA take for SAR), and microwave bands for the families that code real radar
#: wavelengths (Copernicus-FM: C band 5.5e4 um). Nanometres (300 .. 15000) fall between.
WAVELENGTH_OPTICAL_UM = (0.2, 15.0)
WAVELENGTH_MICROWAVE_UM = (2e4, 2e6)


def _values(value: Any) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float64).detach().cpu().reshape(-1)


def check_wavelengths(value: Any, *, where: str = "metadata 'wavelengths'",
                      microwave: bool = False, error: type[Exception] = EncoderInputError) -> None:
    """Refuse centre wavelengths that are not micrometres: zero, negative or non-finite values,
    nanometres (``665`` for red), metres (``6.65e-7``). The one unit check of every family
    that takes wavelengths (DOFA, Clay, Copernicus-FM); ``microwave`` also accepts radar
    wavelengths (2 cm .. 2 m in micrometres). No value checks while tracing."""
    if value is None or is_tracing():
        return
    t = _values(value)
    lo, hi = WAVELENGTH_OPTICAL_UM
    ok = (t >= lo) & (t <= hi)
    if microwave:
        ok |= (t >= WAVELENGTH_MICROWAVE_UM[0]) & (t <= WAVELENGTH_MICROWAVE_UM[1])
    if bool(ok.all()):
        return
    v = float(t[~ok][0])
    accepted = f"{lo:g}..{hi:g} um" + (f" (or {WAVELENGTH_MICROWAVE_UM[0]:g}..{WAVELENGTH_MICROWAVE_UM[1]:g} "
                                       f"um for microwave bands)" if microwave else "")
    if not math.isfinite(v) or v <= 0:
        hint = "wavelengths are positive numbers"
    elif 100 <= v <= 15000:
        hint = f"{v:g} looks like nanometres: divide by 1000 ({v / 1000:g} um)"
    elif 1e-7 <= v <= 1.5e-5:
        hint = f"{v:g} looks like metres: multiply by 1e6 ({v * 1e6:g} um)"
    else:
        hint = "that is no band centre an encoder knows"
    raise error(
        f"{where} holds {v:g}, outside {accepted}; {hint}. Give one centre wavelength per band in "
        f"micrometres (e.g. 0.665 for red), or take them from the band vocabulary: "
        f"d2geo.encoders.band_wavelengths(sensor, bands)")


def check_gsd(value: Any, *, where: str = "metadata 'gsd'", error: type[Exception] = EncoderInputError) -> None:
    """Refuse ground sample distances that are not metres: zero, negative or infinite values,
    kilometres (``0.01`` for 10 m), values outside :data:`GSD_MIN_M` .. :data:`GSD_MAX_M`.
    NaN is left to the family (Copernicus-FM reads it as 'unknown'). The one GSD check of
    every family that takes a GSD (Scale-MAE, Clay, Copernicus-FM). No checks while tracing."""
    if value is None or is_tracing():
        return
    t = _values(value)
    t = t[~t.isnan()]
    ok = (t >= GSD_MIN_M) & (t <= GSD_MAX_M)
    if bool(ok.all()):
        return
    v = float(t[~ok][0])
    if not math.isfinite(v) or v <= 0:
        hint = "a GSD is a positive number of metres"
    elif v < GSD_MIN_M and GSD_MIN_M <= v * 1000 <= GSD_MAX_M:
        hint = (f"{v:g} looks like kilometres: multiply by 1000 ({v * 1000:g} m); if the pixels really are "
                f"{v * 100:g} cm, lower d2geo.encoders.metadata.GSD_MIN_M")
    else:
        hint = "is it in another unit (centimetres, degrees)?"
    raise error(f"{where} holds {v:g}, outside {GSD_MIN_M:g}..{GSD_MAX_M:g} metres per pixel; {hint}. "
                f"Give the ground sample distance in metres (e.g. 10.0 for Sentinel-2's visible bands)")


def _flatten(value):
    for v in value:
        if isinstance(v, (list, tuple)):
            yield from _flatten(v)
        else:
            yield v


def normalize_longitude(lon: torch.Tensor) -> torch.Tensor:
    """Longitudes in degrees (any of -360..360, e.g. 0..360) to -180..180. Values already
    within -180..180 are returned bit for bit (the float32 round trip through the wrap would
    move them by up to 1e-5 degrees, which Copernicus-FM's 1e-4-degree location code sees)."""
    wrapped = torch.remainder(lon + 180.0, 360.0) - 180.0
    return torch.where((lon >= -180.0) & (lon <= 180.0), lon, wrapped)


class Metadata(Mapping):
    """Metadata that :func:`check_metadata` validated: a read-only mapping of tensors.

    The meta-architectures and the encoders' public ``forward_features`` validate the
    metadata once, where it enters, and pass this object down; layers below accept it
    without checking its values again (only that it was made for this batch).
    """

    def __init__(self, values: Mapping[str, torch.Tensor], *, batch_size: int,
                 num_frames: int | None, num_bands: int | None):
        self._values = dict(values)
        self.batch_size = batch_size
        self.num_frames = num_frames
        self.num_bands = num_bands

    def __getitem__(self, key):
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self):
        return len(self._values)

    def __repr__(self):
        return f"Metadata({self._values!r}, batch_size={self.batch_size})"

    def to(self, device: torch.device | str | None) -> "Metadata":
        if device is None or all(v.device == torch.device(device) for v in self._values.values()):
            return self
        return Metadata({k: v.to(device) for k, v in self._values.items()}, batch_size=self.batch_size,
                        num_frames=self.num_frames, num_bands=self.num_bands)


def _check_validated(md: Metadata, batch_size: int, num_frames: int | None,
                     num_bands: int | None) -> None:
    """Shape-only check that already validated metadata belongs to this input."""
    if md.batch_size != batch_size:
        raise EncoderInputError(
            f"the metadata was made for a batch of {md.batch_size} images but the input has "
            f"{batch_size}; give each batch its own metadata")
    ts = md.get("timestamps")
    if num_frames is not None and ts is not None and ts.shape[1] != num_frames:
        raise EncoderInputError(
            f"metadata 'timestamps' has shape {tuple(ts.shape)}, expected ({batch_size}, {num_frames})")
    waves = md.get("wavelengths")
    if num_bands is not None and waves is not None and waves.shape[0] != num_bands:
        raise EncoderInputError(_wavelength_count(waves.shape[0], num_bands))


def _wavelength_count(given: int, num_bands: int) -> str:
    return (f"metadata 'wavelengths' gives {given} wavelengths but the input has {num_bands} bands; "
            "give one wavelength (micrometres) per input band, in the input's band order")


def check_metadata(metadata: Mapping[str, Any] | None, *, batch_size: int,
                   num_frames: int | None = None, num_bands: int | None = None,
                   device: torch.device | None = None) -> Metadata:
    """Validate a metadata mapping against the schema and return it as :class:`Metadata`.

    Keys that are absent stay absent; unknown keys are an error (a typo would
    otherwise silently fall back to 'unknown'). Timestamps must be float64 (or integer)
    epoch seconds within :data:`TIMESTAMP_MIN` .. :data:`TIMESTAMP_MAX` (see
    :func:`as_timestamps`); latitudes must be within -90..90 and longitudes within
    -360..360, returned as -180..180. A :class:`Metadata` that was validated already is
    only checked against the batch, band and frame counts.
    """
    if isinstance(metadata, Metadata):
        _check_validated(metadata, batch_size, num_frames, num_bands)
        return metadata.to(device)
    if metadata is None:
        return Metadata({}, batch_size=batch_size, num_frames=num_frames, num_bands=num_bands)
    return _validate_metadata(metadata, batch_size, num_frames, num_bands, device)


def _validate_metadata(metadata: Mapping[str, Any], batch_size: int, num_frames: int | None,
                       num_bands: int | None, device: torch.device | None) -> Metadata:
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
        if key == "timestamps":
            t = as_timestamps(value).to(device)
        else:
            t = torch.as_tensor(value, dtype=torch.float32, device=device)
        if key == "gsd" and t.ndim == 0:
            t = t.expand(batch_size)
        shape = expected[key]
        if key == "wavelengths" and t.ndim == 2:
            raise EncoderInputError(
                f"metadata 'wavelengths' has shape {tuple(t.shape)}; give one wavelength per band, "
                f"shape (C,), shared by the whole batch: batch one sensor at a time (group the "
                f"samples by sensor, e.g. with a per-sensor sampler)")
        if key == "wavelengths" and num_bands is not None and t.ndim == 1 and t.numel() != num_bands:
            raise EncoderInputError(_wavelength_count(t.numel(), num_bands))
        if t.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
            want = tuple("?" if s is None else s for s in shape)
            raise EncoderInputError(f"metadata {key!r} has shape {tuple(t.shape)}, expected {want}")
        if not is_tracing() and not torch.isfinite(t).all():  # no value checks while exporting
            raise EncoderInputError(f"metadata {key!r} holds NaN or inf values")
        if key == "gsd":
            check_gsd(t)
        elif key == "wavelengths":  # the family checks its own range (DOFA, Clay: no radar)
            check_wavelengths(t, microwave=True)
        out[key] = t
    if "latlon" in out:
        lat, lon = out["latlon"][:, 0], out["latlon"][:, 1]
        if not is_tracing() and ((lat.abs() > 90).any() or (lon.abs() > 360).any()):
            raise EncoderInputError(
                f"metadata 'latlon' {out['latlon'].tolist()} is out of range: give (latitude, "
                "longitude) in degrees, latitude in -90..90 and longitude in -180..180 (or 0..360)")
        out["latlon"] = torch.stack([lat, normalize_longitude(lon)], dim=1)
    return Metadata(out, batch_size=batch_size, num_frames=num_frames, num_bands=num_bands)
