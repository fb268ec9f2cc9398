"""The one table of input modalities: named rasters of one sensor and processing level.

A channel of a multi-modal stack is named ``"<MODALITY>:<band>"`` (``"S2L2A:B04"``,
``"S1RTC:VV"``); a single-band modality may be named alone (``"DEM"``). TerraMind takes
these modalities, CROMA takes their Sentinel-2 and Sentinel-1 channels (and the platform
prefixes ``S2:`` / ``S1:``), and the data layer reads one file per modality
(``d2geo.data.geotiff.read_modalities``). Band ids are those of the band vocabulary
(``bands.py``) for the modality's ``sensor``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .bands import match_bands

__all__ = ["MODALITY_SEP", "Modality", "MODALITIES", "PLATFORM_PREFIXES", "find_modality",
           "split_channel", "canonical_channel"]

#: separates the modality from the band in a channel name: ``"S2L2A:B04"``
MODALITY_SEP = ":"

_S2 = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09")


@dataclass(frozen=True)
class Modality:
    """An input modality: its name, the sensor its band ids belong to (None: bands outside
    the band vocabulary), its bands in their usual file order, the units of its values, and
    the key of its patch embedding in TerraMind's checkpoints."""

    name: str
    sensor: Optional[str]
    bands: tuple
    units: str
    description: str
    terramind_key: Optional[str] = None

    @property
    def key(self) -> Optional[str]:
        """TerraMind's key of the modality (``untok_sen2l2a@224``)."""
        return self.terramind_key


#: The raw-data modalities (the TerraMind 1.0 ones). Band orders are terratorch's
#: ``PRETRAINED_BANDS`` (coastal aerosol .. SWIR 2 with B8A after B08; S2RGB is red, green,
#: blue; Sentinel-1 is VV, VH).
MODALITIES: dict[str, Modality] = {m.name: m for m in (
    Modality("S2L2A", "sentinel-2-l2a", _S2 + ("B11", "B12"), "reflectance x 10 000",
             "Sentinel-2 L2A surface reflectance x 10 000, 12 bands (no B10)", "untok_sen2l2a@224"),
    Modality("S2L1C", "sentinel-2-l1c", _S2 + ("B10", "B11", "B12"), "reflectance x 10 000",
             "Sentinel-2 L1C top-of-atmosphere reflectance x 10 000, 13 bands", "untok_sen2l1c@224"),
    Modality("S2RGB", None, ("red", "green", "blue"), "8-bit",
             "Sentinel-2 true-colour RGB, 8 bit", "untok_sen2rgb@224"),
    Modality("S1GRD", "sentinel-1", ("VV", "VH"), "dB",
             "Sentinel-1 GRD backscatter in dB", "untok_sen1grd@224"),
    Modality("S1RTC", "sentinel-1", ("VV", "VH"), "dB",
             "Sentinel-1 radiometrically terrain-corrected backscatter in dB", "untok_sen1rtc@224"),
    Modality("DEM", None, ("DEM",), "m", "elevation in metres", "untok_dem@224"),
)}

#: platform prefixes that name a sensor's channels without a processing level (CROMA reads
#: them), with the modalities (processing levels) of that sensor
PLATFORM_PREFIXES = {"S2": ("S2L1C", "S2L2A"), "S1": ("S1GRD", "S1RTC")}

_LOWER = {**{m.name.lower(): m for m in MODALITIES.values()},
          **{m.terramind_key.lower(): m for m in MODALITIES.values() if m.terramind_key}}


def find_modality(name: str) -> Optional[Modality]:
    """The modality ``name`` names (its name or TerraMind key, any case), or None."""
    return _LOWER.get(name.lower()) if isinstance(name, str) else None


def split_channel(name: str) -> Optional[tuple[str, str]]:
    """``"S2L2A:B04"`` -> ``("S2L2A", "B04")``, ``"DEM"`` -> ``("DEM", "DEM")``; None when the
    name says no modality of the table (the families word their own errors)."""
    if not isinstance(name, str):
        return None
    if MODALITY_SEP in name:
        mod, band = name.split(MODALITY_SEP, 1)
        spec = find_modality(mod.strip())
        return (spec.name, band.strip()) if spec is not None else None
    spec = find_modality(name)
    if spec is not None and len(spec.bands) == 1:
        return spec.name, spec.bands[0]
    return None


def canonical_channel(name: str) -> str:
    """A channel name with its band as the modality's band id, for comparing channel lists:
    ``"S2L2A:nir08"`` -> ``"S2L2A:B8A"``, ``"DEM"`` -> ``"DEM:DEM"``. Names of other
    modalities or bands come back as given."""
    parsed = split_channel(name)
    if parsed is None:
        return name
    mod, band = parsed
    spec = MODALITIES[mod]
    try:
        (i,) = match_bands([band], spec.bands, sensor=spec.sensor, available_sensor=spec.sensor)
    except ValueError:
        i = None
    return f"{mod}{MODALITY_SEP}{spec.bands[i] if i is not None else band}"
