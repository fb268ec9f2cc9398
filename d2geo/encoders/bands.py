"""The band vocabulary: sensors' band ids, common names, aliases and centre wavelengths.

Every place in d2geo that names a band (the encoders' pretrained bands, the GeoTIFF reader,
the statistics tables) reads it here. A band is identified by its *key*, the physical band
it measures (the STAC ``eo:bands`` common name where one exists: ``coastal``, ``blue``,
``green``, ``red``, ``rededge1..3``, ``nir`` (broad NIR, Sentinel-2 B08), ``nir08`` (narrow
NIR, Sentinel-2 B8A, Landsat B5, HLS ``nir_narrow``), ``nir09``, ``cirrus`` (Sentinel-2 B10,
Landsat B9), ``swir16``, ``swir22``, ``pan`` (Landsat B8), ``lwir11`` and ``lwir12`` (Landsat
TIRS B10 and B11), ``lwir`` (Landsat TM/ETM+ B6), ``vv``, ``vh``).

How a name is read:

* **With a sensor** (:func:`sensor_band`): the sensor's own band ids and names first (for
  Sentinel-2 ``nir`` is B08, as in STAC), then the generic aliases below. Another
  sensor's band ids are not accepted (``B5`` is Landsat's NIR, not Sentinel-2's B05).
* **Without a sensor** (:func:`band_keys`): Sentinel-2/HLS-S30 ids (``B01``..``B12``,
  ``B8A``, ``B10``), Landsat Collection 2 ids (``B1``..``B9``, ``SR_B1``.., ``ST_B10``),
  common names and aliases (``nir_narrow``, ``swir_1``, ``R``/``G``/``B``, ...). ``B10`` and
  ``B11`` alone are Sentinel-2's (cirrus, SWIR 1.6 um): Landsat's thermal B10/B11 are read
  as such only with a Landsat sensor (``landsat-c2-l1``), or as ``lwir11``/``lwir12``/``ST_B10``. ``nir`` alone is
  generic: it means broad or narrow NIR, so it matches whichever of the two exists and is
  ambiguous where both do.

:func:`match_bands` maps a requested band list onto the bands of a file or of pretrained
weights: an exactly equal name first, then by key. A name that two bands could match is a
:class:`BandError` listing them; a name that matches nothing gives ``None``. HLS L30 files
use Landsat-style ids (its ``B05`` is narrow NIR, not Sentinel-2's red edge): name their
bands with common names.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence


logger = logging.getLogger(__name__)

__all__ = [
    "BandError", "BandSpec", "SENSORS", "SENSOR_BANDS", "RGB_BANDS", "HLS_BANDS", "BAND_GROUPS",
    "expand_bands", "band_keys", "sensor_band", "sensor_file_bands", "band_wavelengths",
    "wavelengths", "bandwidths", "match_bands", "describe_bands", "refuse_repeated_bands",
]


class BandError(ValueError):
    """Band names that cannot be read, or that do not map onto the bands available."""


@dataclass(frozen=True)
class BandSpec:
    id: str            # the sensor's band id (B8A, B5, VV)
    name: str          # the sensor's common name (nir08 for Sentinel-2, nir_narrow for HLS)
    key: str           # the physical band, shared across sensors
    wavelength: float  # centre wavelength, micrometres
    #: spectral bandwidth (full width), micrometres; None where the table has none (SAR
    #: bands, harmonized or aerial products)
    bandwidth: Optional[float] = None


def _specs(rows) -> tuple:
    return tuple(BandSpec(*r) for r in rows)


# Sentinel-2 MSI bandwidths: ESA's nominal values (the ones Copernicus-FM's configs use)
_S2 = [
    ("B01", "coastal", "coastal", 0.443, 0.020), ("B02", "blue", "blue", 0.493, 0.065),
    ("B03", "green", "green", 0.560, 0.035), ("B04", "red", "red", 0.665, 0.030),
    ("B05", "rededge1", "rededge1", 0.704, 0.015), ("B06", "rededge2", "rededge2", 0.740, 0.015),
    ("B07", "rededge3", "rededge3", 0.783, 0.020), ("B08", "nir", "nir", 0.842, 0.115),
    ("B8A", "nir08", "nir08", 0.865, 0.020), ("B09", "nir09", "nir09", 0.945, 0.020),
]
_S2_SWIR = [("B11", "swir16", "swir16", 1.610, 0.090), ("B12", "swir22", "swir22", 2.190, 0.180)]
# Landsat 8/9 OLI/TIRS band ids; centres and full widths from USGS's Landsat 8-9 band table
# (blue 0.45-0.51 um, ..., pan 0.50-0.68, cirrus 1.36-1.38, TIRS 10.60-11.19 and 11.50-12.51)
_LANDSAT_OLI = [
    ("B1", "coastal", "coastal", 0.443, 0.020), ("B2", "blue", "blue", 0.48, 0.060),
    ("B3", "green", "green", 0.56, 0.060), ("B4", "red", "red", 0.65, 0.030),
    ("B5", "nir08", "nir08", 0.86, 0.030), ("B6", "swir16", "swir16", 1.6, 0.080),
    ("B7", "swir22", "swir22", 2.2, 0.180),
]
_LANDSAT_L1_MORE = [
    ("B8", "pan", "pan", 0.59, 0.180), ("B9", "cirrus", "cirrus", 1.37, 0.020),
    ("B10", "lwir11", "lwir11", 10.9, 0.590), ("B11", "lwir12", "lwir12", 12.0, 1.010),
]
# Landsat 4-5 TM and Landsat 7 ETM+ band ids (USGS's band designations: TM blue 0.45-0.52 um,
# green 0.52-0.60, red 0.63-0.69, NIR 0.76-0.90, SWIR 1.55-1.75 and 2.08-2.35, thermal
# 10.40-12.50; ETM+ blue 0.45-0.52, green 0.52-0.60, red 0.63-0.69, NIR 0.77-0.90, SWIR
# 1.55-1.75 and 2.09-2.35, thermal 10.40-12.50 read at low (B6_VCID_1) and high gain
# (B6_VCID_2), pan 0.52-0.90). Their ids differ from OLI's (TM's B4 is NIR, OLI's red), so
# they are read only with the sensor named (the SSL4EO-L weights name it).
_LANDSAT_TM = [
    ("B1", "blue", "blue", 0.485, 0.070), ("B2", "green", "green", 0.56, 0.080),
    ("B3", "red", "red", 0.66, 0.060), ("B4", "nir08", "nir08", 0.83, 0.140),
    ("B5", "swir16", "swir16", 1.65, 0.200), ("B6", "lwir", "lwir", 11.45, 2.100),
    ("B7", "swir22", "swir22", 2.215, 0.270),
]
_LANDSAT_ETM = [
    ("B1", "blue", "blue", 0.485, 0.070), ("B2", "green", "green", 0.56, 0.080),
    ("B3", "red", "red", 0.66, 0.060), ("B4", "nir08", "nir08", 0.835, 0.130),
    ("B5", "swir16", "swir16", 1.65, 0.200), ("B6_VCID_1", "lwir_low_gain", "lwir", 11.45, 2.100),
    ("B6_VCID_2", "lwir_high_gain", "lwir", 11.45, 2.100), ("B7", "swir22", "swir22", 2.22, 0.260),
    ("B8", "pan", "pan", 0.71, 0.380),
]

#: Each sensor's bands; the tuple order is the band order of a file that stores all of
#: them (Sentinel-2 L2A without B10, as ESA's L2A products and most stacks store them).
#: Sentinel-1 has no optical wavelength: its values are the stand-ins Clay was trained with
#: (Copernicus-FM encodes SAR bands by its own convention, see ``copernicusfm.py``).
SENSORS: dict[str, tuple] = {
    "sentinel-2-l2a": _specs(_S2 + _S2_SWIR),
    "sentinel-2-l1c": _specs(_S2 + [("B10", "cirrus", "cirrus", 1.375, 0.030)] + _S2_SWIR),
    # Landsat 8/9 Collection 2: Level-2 surface reflectance (OLI B1..B7, SR_B1..SR_B7), and
    # Level-1 (all eleven OLI/TIRS bands: + B8 panchromatic, B9 cirrus, TIRS B10 and B11)
    "landsat-c2": _specs(_LANDSAT_OLI),
    "landsat-c2-l1": _specs(_LANDSAT_OLI + _LANDSAT_L1_MORE),
    # Landsat 4-5 TM and Landsat 7 ETM+ Collection 2 (Level-1 band order; their Level-2
    # surface reflectance files are SR_B1..SR_B5, SR_B7, read by the same ids)
    "landsat-tm": _specs(_LANDSAT_TM),
    "landsat-etm": _specs(_LANDSAT_ETM),
    # HLS v2 S30 ids; the names are the ones Prithvi's configs use
    "hls": _specs([
        ("B01", "coastal", "coastal", 0.443), ("B02", "blue", "blue", 0.490),
        ("B03", "green", "green", 0.560), ("B04", "red", "red", 0.665),
        ("B8A", "nir_narrow", "nir08", 0.865), ("B11", "swir_1", "swir16", 1.610),
        ("B12", "swir_2", "swir22", 2.190),
    ]),
    "naip": _specs([
        ("R", "red", "red", 0.650), ("G", "green", "green", 0.560),
        ("B", "blue", "blue", 0.480), ("N", "nir", "nir", 0.842),
    ]),
    "sentinel-1": _specs([("VV", "vv", "vv", 3.5), ("VH", "vh", "vh", 4.0)]),
}

#: ``{sensor: {common name: wavelength}}``, a view of :data:`SENSORS`
SENSOR_BANDS: dict[str, dict[str, float]] = {
    s: {b.name: b.wavelength for b in specs} for s, specs in SENSORS.items()
}

RGB_BANDS = ("red", "green", "blue")
#: the six HLS bands the published Prithvi-EO checkpoints were pretrained on, in order
HLS_BANDS = ("blue", "green", "red", "nir_narrow", "swir_1", "swir_2")
#: names that stand for a band list where a list is expected
BAND_GROUPS: dict[str, tuple] = {"rgb": RGB_BANDS}

#: generic names -> keys (lower case). ``nir`` is deliberately generic (broad or narrow).
_ALIASES: dict[str, frozenset] = {}


def _alias(key_or_keys, *names):
    keys = frozenset([key_or_keys] if isinstance(key_or_keys, str) else key_or_keys)
    for n in names:
        _ALIASES[n.lower()] = keys


_alias("coastal", "coastal", "coastal_aerosol", "aerosol")
_alias("blue", "blue", "b")
_alias("green", "green", "g")
_alias("red", "red", "r")
for _i in (1, 2, 3):
    _alias(f"rededge{_i}", f"rededge{_i}", f"red_edge_{_i}", f"rededge_{_i}", f"re{_i}")
_alias(("nir", "nir08"), "nir")
_alias("nir", "nir_broad", "broad_nir")
_alias("nir08", "nir08", "nir_narrow", "narrow_nir", "rededge4", "red_edge_4")
_alias("nir09", "nir09", "water_vapour", "water_vapor")
_alias("cirrus", "cirrus")
_alias("pan", "pan", "panchromatic")
_alias("lwir11", "lwir11", "lwir1", "tirs1", "ST_B10")
_alias("lwir12", "lwir12", "lwir2", "tirs2")
_alias("lwir", "lwir", "thermal")
_alias("swir16", "swir16", "swir_1", "swir1")
_alias("swir22", "swir22", "swir_2", "swir2")
_alias("vv", "vv")
_alias("vh", "vh")
# band ids of Sentinel-2 (= HLS S30) and Landsat C2 (also as its asset names SR_B1..)
for _b in SENSORS["sentinel-2-l1c"]:
    _alias(_b.key, _b.id)
for _b in SENSORS["landsat-c2"]:
    _alias(_b.key, _b.id, f"SR_{_b.id}")
for _b in SENSORS["landsat-c2-l1"][len(_LANDSAT_OLI):]:
    if _b.id.lower() not in _ALIASES:  # B10, B11 alone stay Sentinel-2's (see the module docstring)
        _alias(_b.key, _b.id)


_BAND_IDS = {b.id.lower() for s in ("sentinel-2-l1c", "landsat-c2-l1") for b in SENSORS[s]}
#: Landsat Collection 2 asset-name prefixes of the band ids (SR_B4, ST_B10)
_LANDSAT_PREFIXES = ("sr_", "st_")


def expand_bands(bands) -> tuple:
    """A band list as a tuple of names; a group name (``"rgb"``) stands for its bands."""
    if isinstance(bands, str):
        group = BAND_GROUPS.get(bands.lower())
        if group is None:
            raise BandError(f"bands must be a list of band names, not the string {bands!r} "
                            f"(strings that stand for a list: {', '.join(BAND_GROUPS)})")
        return group
    bands = tuple(bands)
    for b in bands:
        if not isinstance(b, str):
            raise BandError(f"band names must be strings, not {b!r} in {list(bands)}")
    return bands


def _sensor(sensor: str) -> tuple:
    specs = SENSORS.get(sensor.lower())
    if specs is None:
        raise KeyError(f"unknown sensor {sensor!r}; known sensors: {', '.join(SENSORS)}")
    return specs


def sensor_band(sensor: str, name: str) -> Optional[BandSpec]:
    """The band of ``sensor`` that ``name`` names (its id, its name, or an alias), or None.

    Raises :class:`BandError` when the alias fits two bands of the sensor (``nir`` in
    ``hls`` is its only NIR, but ``rededge4``-style names could fit two in some tables).
    """
    specs = _sensor(sensor)
    low = name.lower()
    for b in specs:
        if low in (b.id.lower(), b.name.lower()):
            return b
    if sensor.lower().startswith("landsat"):
        bare = low[3:] if low.startswith(_LANDSAT_PREFIXES) else low
        if len(bare) == 3 and bare.startswith("b0") and bare[2].isdigit():
            bare = "b" + bare[2]  # B05: torchgeo's and HLS L30's spelling of Landsat's B5
        if bare != low:
            own = next((b for b in specs if b.id.lower() == bare), None)
            if own is not None:  # SR_B4, ST_B10 (Collection 2 asset names), B01 .. B09
                return own
    if low in _BAND_IDS or low.startswith("sr_b"):
        return None  # another sensor's id: not a name in this sensor's vocabulary
    keys = _ALIASES.get(low, frozenset())
    found = [b for b in specs if b.key in keys]
    if len(found) > 1:
        raise BandError(f"band {name!r} is ambiguous for {sensor}: it could be "
                        f"{' or '.join(_describe(b) for b in found)}; use one of those names")
    return found[0] if found else None


def band_keys(name: str, sensor: str | None = None) -> frozenset:
    """The physical band(s) ``name`` can mean (empty when it names no known band)."""
    if sensor:
        b = sensor_band(sensor, name)
        return frozenset([b.key]) if b is not None else frozenset()
    return _ALIASES.get(name.lower(), frozenset())


def sensor_file_bands(sensor: str, count: int) -> Optional[tuple]:
    """The band ids of a file of ``sensor`` storing ``count`` bands in the sensor's order, or None."""
    specs = _sensor(sensor)
    return tuple(b.id for b in specs) if len(specs) == count else None


def wavelengths(sensor: str, bands: Sequence[str]) -> list:
    """Centre wavelengths (micrometres) of the named ``bands`` of ``sensor``."""
    specs = _sensor(sensor)
    out = []
    for band in bands:
        b = sensor_band(sensor, band)
        if b is None:
            raise KeyError(f"unknown band {band!r} for {sensor}; known bands: "
                           f"{', '.join(_describe(s) for s in specs)}")
        out.append(b.wavelength)
    return out


def bandwidths(sensor: str, bands: Sequence[str]) -> list:
    """Bandwidths (micrometres) of the named ``bands`` of ``sensor``; a band the table has no
    bandwidth for is a :class:`KeyError` naming it."""
    out = []
    for band in bands:
        b = sensor_band(sensor, band)
        if b is None or b.bandwidth is None:
            raise KeyError(f"no bandwidth for band {band!r} of {sensor} in the band vocabulary")
        out.append(b.bandwidth)
    return out


def band_wavelengths(sensor: str, bands: Sequence[str]) -> torch.Tensor:
    """Centre wavelengths (micrometres) of the named ``bands`` of ``sensor``, as a tensor."""
    import torch

    return torch.tensor(wavelengths(sensor, bands), dtype=torch.float32)


def _describe(b: BandSpec) -> str:
    return f"{b.id} ({b.name}, {b.wavelength:g} um)"


def describe_bands(names: Iterable[str], sensor: str | None = None) -> str:
    """``name (= other names)`` for each band, to list what a file or weights know."""
    ref = {b.key: b for s in ("sentinel-1", "landsat-c2-l1", "sentinel-2-l1c") for b in SENSORS[s]}
    out = []
    for n in names:
        keys = band_keys(n, sensor)
        b = ref.get(next(iter(keys))) if len(keys) == 1 else None
        # only the names that mean this band when read without a sensor (Landsat's B10 is not)
        others = [x for x in dict.fromkeys((b.id, b.name))
                  if x.lower() != n.lower() and b.key in band_keys(x)] if b else []
        out.append(f"{n} (= {', '.join(others)})" if others else n)
    return ", ".join(out)


def match_bands(requested: Sequence[str], available: Sequence[str], *,
                sensor: str | None = None, available_sensor: str | None = None,
                where: str = "the available bands") -> list:
    """For each requested band, the index of the band of ``available`` it is, or None.

    An equal name (case-insensitive) matches first, unless ``sensor`` and
    ``available_sensor`` read it as different bands; otherwise the bands whose keys
    (:func:`band_keys`, read with ``sensor`` / ``available_sensor``) overlap the requested
    name's. Two candidates are a :class:`BandError` naming them.
    """
    requested, available = expand_bands(requested), expand_bands(available)
    low = [a.lower() for a in available]
    akeys = [band_keys(a, available_sensor) for a in available]
    out: list = []
    for r in requested:
        keys = band_keys(r, sensor)
        if r.lower() in low:
            exact = [i for i, a in enumerate(low) if a == r.lower()]
            if len(exact) > 1:
                raise BandError(f"{where} name band {r!r} more than once: {list(available)}")
            # an equal name is the same band unless the two sensors read it as different ones
            # (Sentinel-2's B10 is cirrus, Landsat's B10 thermal)
            if not keys or not akeys[exact[0]] or keys & akeys[exact[0]]:
                out.append(exact[0])
                continue
        hits = [i for i, k in enumerate(akeys) if k & keys]
        if len(hits) > 1:
            raise BandError(
                f"band {r!r} is ambiguous: it could be any of {[available[i] for i in hits]} in {where}; "
                f"name one of them (e.g. B08 or nir_broad for broad NIR, B8A or nir_narrow for narrow NIR)"
            )
        out.append(hits[0] if hits else None)
    return out


def refuse_repeated_bands(names: Sequence[str], bands: Sequence, *, where: str = "bands") -> None:
    """Refuse two names of one physical band (``B02`` and ``blue``, ``VV`` twice): ``bands`` gives,
    for each name, what it was read as (a band key or an index into a band table; None for
    a name the caller reports itself). A :class:`BandError` (a ``ValueError``) names both."""
    seen: dict = {}
    for name, band in zip(names, bands):
        if band is None:
            continue
        if band in seen:
            raise BandError(f"{where} name one band twice: {seen[band]!r} and {name!r} are the same band "
                            f"(bands={list(names)}); give each band once")
        seen[band] = name
