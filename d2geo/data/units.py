"""The units check at the door: does the input's magnitude fit the model's statistics?

A foundation model fed raw digital numbers (DN) where it was trained on reflectance (or
8-bit true-colour images, or SAR in linear power where it expects dB) raises no error: its
features collapse and every window gets nearly the same output. :func:`check_units`
compares robust per-band statistics of the input, as the model receives it before its
normalization, with the model's normalization statistics (``pixel_mean`` / ``pixel_std``,
in the same units), and refuses clear mismatches with :class:`UnitsError`, naming the
bands, the observed and the expected magnitudes, the fix, and the switch to go on anyway
(``allow=True``; ``--skip-units-check`` in the tools, ``train.units_check=False`` in
training). ``predict_scene``, ``predict_region`` and training call this one function.

What is compared, per band, over the valid (finite) pixels of the sample(s):

* ``observed`` = ``max(|p2|, |p98|)``, the magnitude of the bulk of the values (2nd and
  98th percentiles: a few clouds, shadows or saturated pixels do not move it);
* ``expected`` = ``|mean| + 2 std`` of the statistics, the magnitude of the bulk of the
  training data;
* ``ratio`` = observed / expected.

Thresholds and why:

* :data:`FACTOR` = 100. A band is off when its ratio is >= 100 or <= 1/100. Unit mistakes
  are factors of 10 000 (DN = reflectance x 10 000 for Sentinel-2, HLS; a scale applied
  twice), about 1 000 (8-bit 0..255 against reflectance 0..1) or 30 000 (Landsat C2 DN).
  Good data stay well inside: on the five real TerraMind example tiles (snow and cloud at
  609U with reflectance medians near 0.7, dark water at 637U with L2A blue at 0.011), read
  with every statistics table that fits them (TerraMind S2L1C/S2L2A/S1RTC/S2RGB/DEM, Clay
  S2 L2A and S1 RTC, Sen1Floods11, HLS burn scars), fractional bands give ratios between
  0.047 and 11.8, integral ones between 0.003 (a DEM at sea level) and 2; every wrong
  reading of the same tiles (no dn_scale, a dn_scale too many, dB <-> linear, 8-bit RGB
  against reflectance or DN statistics) is refused. See ``tests/data/test_units.py``.
* "Too small" needs non-integer values (fewer than half of the valid values integral):
  integer data far below the statistics are legitimate (a DEM at sea level, a dark band),
  a reflectance read as DN or scaled twice is fractional. Terrain bands (DEM, elevation,
  slope, ...) are never refused for being small: a float DEM of a delta in metres and a DEM
  in kilometres over hills have the same magnitudes, so the check logs a warning that names
  both readings (``UnitsReport.warnings``) and goes on judging the other bands; unless the
  values are integers divided by 1000 or 2000 (an integer-metre DEM put in km, or divided by
  Galileo's 2000), which is refused as before.
* :data:`MIN_VALID` = 32 valid values per band, else the band is not judged (and a sample
  with no band judged passes with the report saying so).
* Statistics with ``mean == 0`` and ``std == 1`` for every band (no normalization) say
  nothing about units: nothing is judged.
* 8-bit: every valid value of the band integral and within 0..255. Against reflectance
  statistics the ratio (~1 000) flags such a band, and it is classed 8-bit. Against DN
  statistics (typical DN 1 000..3 000 for Sentinel-2, ratio only ~1/20) the whole sample is
  judged: at least 3 bands, every one 8-bit, the brightest band's 98th percentile >= 50 (not
  a black tile) and the statistics' mean band at >= 500 (no DN product of a land scene stays
  within 0..255 in every band; a single band such as a DEM in metres may).
* SAR (bands named ``vv``, ``vh``, ``hh``, ``hv``, or ``sensor="sentinel-1"``): statistics
  with a negative mean are in dB, else in linear power. Data with fewer than 1% negative
  values and a median >= 0 are linear (or amplitude), data with more than half negative are dB
  (10 log10 of a backscatter below 1). Linear where dB is expected: fix ``10 * log10(x)``;
  dB where linear is expected: ``10 ** (x / 10)``. The ratio cannot see this (-12 dB and
  0.06 are both "about 10").

Classification of a band that is off (``UnitsReport.problems``, ``kind``):

* ``"dn_for_reflectance"``: 300x..300 000x larger than statistics of reflectance-like
  magnitude (expected < 5): fix ``dn_scale=0.0001`` (Sentinel-2, HLS; Landsat C2 L2:
  0.0000275 with offset -0.2);
* ``"tci_8bit"``: 8-bit values where reflectance or DN is expected;
* ``"reflectance_for_dn"``: fractional values <= 3 where the statistics are DN-like
  (expected >= 100): drop ``dn_scale``;
* ``"scaled_twice"``: fractional values < 0.05 against reflectance-like statistics (a scale
  of 1e-4 applied to data already in reflectance, e.g. a leftover ``scale_factor`` tag):
  read with ``dn_scale=1``;
* ``"sar_linear_for_db"`` / ``"sar_db_for_linear"``: see SAR above;
* ``"magnitude"``: any other factor of >= 100 (or values above 255 against 8-bit statistics).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .geotiff import GeoTiffError

logger = logging.getLogger(__name__)

__all__ = ["UnitsError", "UnitsReport", "BandUnits", "check_units", "check_dataset_units", "FACTOR", "MIN_VALID",
           "SKIP_HINT", "NUM_SAMPLES", "model_statistics"]

#: a band whose magnitude differs from its statistics' by this factor or more is off
FACTOR = 100.0
#: fewer valid values than this in a band: the band is not judged
MIN_VALID = 32
#: at most this many values per band enter the percentiles (an evenly strided subset)
MAX_VALUES = 200_000
#: how many samples (windows) of a dataset :func:`check_dataset_units` reads
NUM_SAMPLES = 4
#: how the message names the switch that goes on anyway
SKIP_HINT = ("allow=True (tools: --skip-units-check; training: train.units_check=False, "
             "or INPUT.GEO.UNITS_CHECK False in a yacs config)")

_SAR_BANDS = {"vv", "vh", "hh", "hv"}
_SCALE_WHERE = "--dn-scale in tools/predict_*, scale= in read_geotiff / GeoDatasetMapper / a dataset's geo options"

_FIXES = {
    "dn_for_reflectance": (
        "raw digital numbers (DN) where the statistics expect reflectance",
        "scale the input to reflectance: dn_scale=0.0001 for Sentinel-2 L1C/L2A and HLS "
        f"({_SCALE_WHERE}; Landsat Collection 2 L2: 0.0000275 with offset -0.2), or use statistics in DN"),
    "tci_8bit": (
        "an 8-bit image (0..255, e.g. a true-colour TCI, PNG or JPEG rendering) where the statistics "
        "expect reflectance or DN",
        "8-bit renderings are stretched and clipped for display and are not reflectance: read the "
        "sensor's reflectance bands instead (e.g. Sentinel-2 L2A B02/B03/B04), or use statistics made "
        "for 8-bit images (e.g. TerraMind's S2RGB)"),
    "reflectance_for_dn": (
        "reflectance (fractional values of about 0..1) where the statistics are in DN (e.g. reflectance x 10 000)",
        f"drop dn_scale ({_SCALE_WHERE}; a scale stored in the file is used when none is given: "
        "pass dn_scale=1 to override it), or use statistics in reflectance"),
    "scaled_twice": (
        "values ~10 000x below reflectance: a scale such as 0.0001 was applied to data already in "
        "reflectance (dn_scale, or a leftover scale_factor / GDAL scale tag in the file)",
        f"read the file with dn_scale=1 ({_SCALE_WHERE}), which overrides the file's scale tag"),
    "sar_linear_for_db": (
        "non-negative SAR values (linear power or amplitude) where the statistics are in dB",
        "convert to dB first: 10 * log10(power) (20 * log10(amplitude)), e.g. with gdal_calc.py or numpy"),
    "sar_db_for_linear": (
        "SAR values in dB (mostly negative) where the statistics are in linear power",
        "convert to linear power first: 10 ** (dB / 10), or use statistics in dB"),
    "magnitude": (
        "values of another magnitude than the statistics",
        "check the input's scale (dn_scale), its bands and the statistics (pixel_mean/pixel_std) given "
        "to the model"),
}


class UnitsError(GeoTiffError):
    """The input's magnitude does not fit the model's normalization statistics."""

    def __init__(self, message: str, report: "UnitsReport"):
        super().__init__(message)
        self.report = report


@dataclass
class BandUnits:
    """Observed and expected magnitudes of one band (``kind`` None: fits or not judged)."""

    band: str
    valid: int
    p2: float = math.nan
    median: float = math.nan
    p98: float = math.nan
    mean: float = math.nan
    std: float = math.nan
    ratio: float = math.nan
    integral: bool = False
    kind: str | None = None
    judged: bool = False


@dataclass
class UnitsReport:
    """What :func:`check_units` found. ``ok`` is False when a band is off (then ``message``
    says what and how to fix it); ``allowed`` when ``allow=True`` let it through."""

    source: str
    bands: list = field(default_factory=list)
    ok: bool = True
    allowed: bool = False
    message: str = ""
    note: str = ""
    warnings: list = field(default_factory=list)  # what cannot be told apart (logged, not refused)

    @property
    def problems(self) -> dict:
        """``{kind: [band names]}`` of the bands that are off."""
        out: dict = {}
        for b in self.bands:
            if b.kind is not None:
                out.setdefault(b.kind, []).append(b.band)
        return out

    @property
    def judged(self) -> list:
        return [b.band for b in self.bands if b.judged]


def _channels_first(sample, n: int, channel_axis: int | None) -> list:
    """The sample(s) as a list of ``(C, N)`` float arrays."""
    arrays = list(sample) if isinstance(sample, (list, tuple)) else [sample]
    out = []
    for a in arrays:
        a = np.asarray(a)
        if a.ndim not in (3, 4):
            raise GeoTiffError(f"the units check takes (C, H, W), (C, T, H, W) or (T, C, H, W) arrays, "
                               f"got shape {a.shape}")
        axis = channel_axis
        if axis is None:
            # d2geo's models take (C, T, H, W); (T, C, H, W) is recognized when only axis 1 fits
            axis = 0 if a.shape[0] == n or a.ndim == 3 else 1
        if a.shape[axis] != n:
            raise GeoTiffError(f"the sample has {a.shape[axis]} bands on axis {axis} (shape {a.shape}) but "
                               f"{n} band names and statistics were given")
        out.append(np.moveaxis(a, axis, 0).reshape(n, -1))
    return out


def _is_sar(name: str, sensor: str | None) -> bool:
    return (sensor or "").lower().startswith("sentinel-1") or name.rsplit(":", 1)[-1].strip().lower() in _SAR_BANDS


#: band names (the part after ``MODALITY:``) of terrain bands, whose small values are legitimate
_TERRAIN_BANDS = {"dem", "dsm", "dtm", "elevation", "height", "srtm", "slope"}


def _is_terrain(name: str) -> bool:
    return name.rsplit(":", 1)[-1].strip().lower() in _TERRAIN_BANDS or name.strip().upper() == "DEM"


def _scaled_integers(v: np.ndarray) -> bool:
    """Whether ``v`` are integers divided by 1000 or 2000 (an integer-metre DEM put in km, or
    normalized by upstream's 2000): then small terrain values are a scaling, not low land."""
    return any(float(np.mean(np.abs(v * k - np.round(v * k)) < 0.01)) >= 0.9 for k in (1000.0, 2000.0))


def _fmt(v: float) -> str:
    return f"{v:.3g}" if math.isfinite(v) else "nan"


def check_units(sample, *, band_names: Sequence[str], mean: Sequence[float], std: Sequence[float],
                source: str, allow: bool = False, sensor: str | None = None,
                channel_axis: int | None = None) -> UnitsReport:
    """Compare the input's magnitude per band with the model's statistics (module docstring).

    Args:
        sample: the raw input as the model receives it before normalization: a float array
            ``(C, H, W)``, ``(C, T, H, W)`` (d2geo's layout) or ``(T, C, H, W)``, NaN where there is
            no data; or a list of such arrays (several windows or samples, pooled per band).
        band_names: the ``C`` band names (for the message; SAR bands are found by name).
        mean, std: the model's per-band normalization statistics (``pixel_mean`` / ``pixel_std``)
            in the units the input must have.
        source: what the sample is (a file, a dataset), for the message.
        allow: on a mismatch, log a warning and return the report instead of raising.
        sensor: the sensor key, when known (``"sentinel-1"`` marks SAR bands).
        channel_axis: the band axis of 4-D arrays when it is ambiguous (T == C); default 0.

    Returns a :class:`UnitsReport`; raises :class:`UnitsError` on a mismatch unless ``allow``.
    """
    names = [str(b) for b in band_names]
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    std = np.asarray(std, dtype=np.float64).reshape(-1)
    n = len(names)
    if mean.size != n or std.size != n:
        raise GeoTiffError(f"{n} band names but {mean.size} means and {std.size} stds were given to the units check")
    report = UnitsReport(source=str(source))
    flat = np.concatenate(_channels_first(sample, n, channel_axis), axis=1)
    if np.all(mean == 0) and np.all(std == 1):
        report.note = "the statistics are mean 0 and std 1 (no normalization): they say nothing about units"
        report.bands = [BandUnits(b, 0, mean=0.0, std=1.0) for b in names]
        logger.debug("units check of %s: %s", source, report.note)
        return report
    rows = []
    for c, name in enumerate(names):
        v = flat[c]
        v = v[np.isfinite(v)]
        row = BandUnits(name, int(v.size), mean=float(mean[c]), std=float(std[c]))
        rows.append(row)
        if v.size < MIN_VALID:
            continue
        if v.size > MAX_VALUES:
            v = v[:: int(math.ceil(v.size / MAX_VALUES))]
        v = v.astype(np.float64)
        row.p2, row.median, row.p98 = (float(x) for x in np.percentile(v, [2, 50, 98]))
        integral = v == np.round(v)
        row.integral = bool(integral.all())
        fractional = integral.mean() < 0.5
        expected = abs(row.mean) + 2 * abs(row.std)
        observed = max(abs(row.p2), abs(row.p98))
        if not math.isfinite(expected) or expected == 0:
            continue
        row.judged = True
        row.ratio = observed / expected
        if _is_sar(name, sensor):
            negative = float((v < 0).mean())
            if row.mean < 0 and negative < 0.01 and row.median >= 0:
                row.kind = "sar_linear_for_db"
            elif row.mean >= 0 and negative > 0.5:
                row.kind = "sar_db_for_linear"
            if row.kind:
                continue
        eight_bit = row.integral and row.p2 >= 0 and float(v.max()) <= 255 and float(v.min()) >= 0
        if row.ratio >= FACTOR:
            if eight_bit:
                row.kind = "tci_8bit"
            elif expected < 5 and row.ratio <= 3e5 and row.ratio >= 300:
                row.kind = "dn_for_reflectance"
            else:
                row.kind = "magnitude"
        elif row.ratio > 0 and row.ratio <= 1 / FACTOR and fractional and _is_terrain(name) \
                and not _scaled_integers(v):
            # a float DEM of low-lying land (a delta: 0..9 m) and the same DEM in km over hills
            # look alike: say so, and leave the other bands' checks on (no allow= needed)
            report.warnings.append(
                f"{name} is small (2%..98%: {_fmt(row.p2)}..{_fmt(row.p98)}) against statistics of mean "
                f"{_fmt(row.mean)} and std {_fmt(row.std)}: fine for low-lying or flat land in metres (degrees "
                f"for a slope), but if the file is in kilometres multiply it by 1000 first (--dn-scale / scale=)")
        elif row.ratio > 0 and row.ratio <= 1 / FACTOR and fractional:
            if expected >= 100 and observed <= 3:
                row.kind = "reflectance_for_dn"
            elif expected < 5 and observed < 0.05:
                row.kind = "scaled_twice"
            else:
                row.kind = "magnitude"
        elif (10 <= row.mean <= 255 and row.mean + row.std <= 320 and row.median > 255):
            row.kind = "magnitude"  # above 0..255 where the statistics describe 8-bit images
    for w in report.warnings:
        logger.warning("units check of %s: %s", source, w)
    judged = [r for r in rows if r.judged]
    # 8-bit images against DN statistics: the ratio (~1/20) cannot see it, the whole sample can
    if (len(judged) >= 3 and all(r.kind is None for r in judged)
            and all(r.integral and r.p2 >= 0 and r.p98 <= 255 for r in judged)
            and max(r.p98 for r in judged) >= 50 and float(np.mean([r.mean for r in judged])) >= 500):
        maxima = [float(np.nanmax(flat[names.index(r.band)])) for r in judged]
        if max(maxima) <= 255:
            for r in judged:
                r.kind = "tci_8bit"
    report.bands = rows
    if not judged:
        report.note = f"no band has {MIN_VALID} valid values: nothing was judged"
        logger.warning("units check of %s: %s", source, report.note)
        return report
    if all(r.kind is None for r in rows):
        logger.debug("units check of %s passed (ratios %s)", source,
                     ", ".join(f"{r.band} {_fmt(r.ratio)}" for r in judged))
        return report
    report.ok = False
    report.message = _message(report)
    if allow:
        report.allowed = True
        logger.warning("%s (going on: the units check was switched off)", report.message)
        return report
    raise UnitsError(report.message, report)


def check_dataset_units(dataset, mapper, *, mean, std, num_samples: int = NUM_SAMPLES,
                        allow: bool = False, what: str = "the training dataset") -> UnitsReport:
    """:func:`check_units` on the first ``num_samples`` dicts of ``dataset`` (a list of dataset
    dicts), read by ``mapper`` (a :class:`~d2geo.data.GeoDatasetMapper`, through its
    ``read_unnormalized``: before augmentation and normalization), pooled per band. Samples
    whose band count differs from the first one's are left out (the model would refuse them)."""
    count = min(int(num_samples), len(dataset))
    images, names, sensor, files = [], None, None, []
    for i in range(count):
        d = dataset[i]
        image, bands, s = mapper.read_unnormalized(d)
        if names is None:
            names, sensor = list(bands), s
        if image.shape[0] != len(names):
            continue
        images.append(image)
        f = d.get("file_name", "?")
        files.append(os.path.basename(str(f[0] if isinstance(f, (list, tuple)) else f)))
    if not images:
        return UnitsReport(source=what, note="the dataset is empty: nothing was judged")
    shown = ", ".join(files[:4]) + (", ..." if len(files) > 4 else "")
    source = f"{what} (its first {len(images)} sample{'s' if len(images) > 1 else ''}: {shown})"
    return check_units(images, band_names=names, mean=mean, std=std, source=source, allow=allow, sensor=sensor)


def model_statistics(model, mapper=None):
    """``(mean, std)`` numpy arrays a model's input is normalized with, or None: the
    mapper's ``mean``/``std`` when it normalizes, else the model's ``pixel_mean``/``pixel_std``."""
    if mapper is not None and getattr(mapper, "mean", None) is not None:
        return np.asarray(mapper.mean, dtype=np.float64), np.asarray(mapper.std, dtype=np.float64)
    model = getattr(model, "module", model)  # DistributedDataParallel
    mean, std = getattr(model, "pixel_mean", None), getattr(model, "pixel_std", None)
    if mean is None or std is None:
        return None
    as_np = lambda t: np.asarray(t.detach().cpu().reshape(-1) if hasattr(t, "detach") else t,  # noqa: E731
                                 dtype=np.float64).reshape(-1)
    return as_np(mean), as_np(std)


def _message(report: UnitsReport) -> str:
    parts = []
    for kind, bands in report.problems.items():
        rows = [b for b in report.bands if b.band in bands]
        what, fix = _FIXES[kind]
        shown = ", ".join(bands[:6]) + (f" and {len(bands) - 6} more" if len(bands) > 6 else "")
        r = rows[0]
        parts.append(
            f"band{'s' if len(bands) > 1 else ''} {shown} ({len(bands)} of {len(report.bands)}) look like {what}: "
            f"{r.band} has median {_fmt(r.median)} (2%..98%: {_fmt(r.p2)}..{_fmt(r.p98)}) where the statistics "
            f"have mean {_fmt(r.mean)} and std {_fmt(r.std)} (magnitude ratio {_fmt(r.ratio)}). Fix: {fix}")
    return (f"{report.source}: the input's units do not fit the model's normalization statistics "
            f"(pixel_mean/pixel_std): " + "; ".join(parts) + f". If the data really are in these units, "
            f"pass {SKIP_HINT} to go on")
