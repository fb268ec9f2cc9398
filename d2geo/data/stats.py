"""Per-sensor default normalization statistics (mean, std per band).

Each entry records the band names, the means and standard deviations, and the units
the numbers are in, so that a user can tell whether the data must be scaled first:

* ``"dn"``: raw digital numbers as stored in the product (e.g. reflectance x 10 000);
* ``"reflectance"``: surface reflectance in 0..1 (i.e. after the 0.0001 scale factor);
* ``"linear"``: linear backscatter power (Sentinel-1 RTC).

Sources (numbers only):

* ``prithvi_eo_v1`` / ``prithvi_eo_v2``: the HLS means/stds published with the
  Prithvi-EO-1.0 and Prithvi-EO-2.0 pretrained weights (HLS surface reflectance x 10 000).
* ``clay_*``: Clay v1.5 ``configs/metadata.yaml`` (Clay-foundation/model).
* ``sen1floods11_s2``: the Sentinel-2 L1C chip statistics used for Sen1Floods11
  fine-tuning (reflectance; TerraTorch's Sen1Floods11 data module).
* ``hls_burn_scars``: the HLS Burn Scars statistics (reflectance; TerraTorch's fire-scars
  data module).

Band names follow ``d2geo.encoders.SENSOR_BANDS``; :func:`get_stats` selects bands by
name with the sensor's aliases (``b04`` = ``red`` for Sentinel-2, ``nir`` =
``nir_narrow`` for HLS).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from d2geo.encoders.bands import HLS_BANDS

__all__ = ["BandStats", "SENSOR_STATS", "get_stats", "list_stats"]


@dataclass(frozen=True)
class BandStats:
    sensor: str  # key of d2geo.encoders.SENSOR_BANDS
    bands: tuple
    mean: tuple
    std: tuple
    units: str

    def select(self, bands: Sequence[str] | None = None, *, scale: float = 1.0):
        """(mean, std) float32 arrays for ``bands`` (default all), multiplied by ``scale``."""
        from .geotiff import GeoTiffError, resolve_band_indices

        try:
            idx = resolve_band_indices(self.bands, bands, self.sensor, where=f"these {self.sensor} statistics")
        except GeoTiffError as e:
            raise KeyError(str(e)) from None
        mean = np.asarray([self.mean[i] for i in idx], dtype=np.float32) * scale
        std = np.asarray([self.std[i] for i in idx], dtype=np.float32) * scale
        return mean, std


_HLS6 = HLS_BANDS

SENSOR_STATS: dict[str, BandStats] = {
    "prithvi_eo_v1": BandStats(
        "hls", _HLS6,
        (775.0, 1081.0, 1229.0, 2497.0, 2204.0, 1611.0),
        (1282.0, 1270.0, 1399.0, 1368.0, 1292.0, 1155.0), "dn"),
    "prithvi_eo_v2": BandStats(
        "hls", _HLS6,
        (1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0),
        (2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0), "dn"),
    "clay_sentinel-2-l2a": BandStats(
        "sentinel-2-l2a",
        ("blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir16", "swir22"),
        (1105.0, 1355.0, 1552.0, 1887.0, 2422.0, 2630.0, 2743.0, 2785.0, 2388.0, 1835.0),
        (1809.0, 1757.0, 1888.0, 1870.0, 1732.0, 1697.0, 1742.0, 1648.0, 1470.0, 1379.0), "dn"),
    "clay_landsat-c2l2-sr": BandStats(
        "landsat-c2", ("red", "green", "blue", "nir08", "swir16", "swir22"),
        (13705.0, 13310.0, 12474.0, 17801.0, 14615.0, 12701.0),
        (9578.0, 9408.0, 10144.0, 8277.0, 5300.0, 4522.0), "dn"),
    "clay_landsat-c2l1": BandStats(
        "landsat-c2", ("red", "green", "blue", "nir08", "swir16", "swir22"),
        (10678.0, 10563.0, 11083.0, 14792.0, 12276.0, 10114.0),
        (6025.0, 5411.0, 5468.0, 6746.0, 5897.0, 4850.0), "dn"),
    "clay_naip": BandStats(
        "naip", ("red", "green", "blue", "nir"),
        (110.16, 115.41, 98.15, 139.04), (47.23, 39.82, 35.43, 49.86), "dn"),
    "clay_sentinel-1-rtc": BandStats(
        "sentinel-1", ("vv", "vh"), (0.123273, 0.027337), (1.492154, 0.122182), "linear"),
    "sen1floods11_s2": BandStats(
        "sentinel-2-l1c",
        ("b01", "b02", "b03", "b04", "b05", "b06", "b07", "b08", "b8a", "b09", "b10", "b11", "b12"),
        (0.16450718, 0.1412956, 0.13795798, 0.12353792, 0.1481099, 0.23991728, 0.28587557,
         0.26345379, 0.30902815, 0.04911151, 0.00652506, 0.2044958, 0.11912015),
        (0.06977374, 0.07406382, 0.07370365, 0.08692279, 0.07778555, 0.09105416, 0.10690993,
         0.10096586, 0.11798815, 0.03380113, 0.01463465, 0.09772074, 0.07659938), "reflectance"),
    "hls_burn_scars": BandStats(
        "hls", _HLS6,
        (0.033349706741586264, 0.05701185520536176, 0.05889748132001316,
         0.2323245113436119, 0.1972854853760658, 0.11944914225186566),
        (0.02269135568823774, 0.026807560223070237, 0.04004109844362779,
         0.07791732423672691, 0.08708738838140137, 0.07241979477437814), "reflectance"),
}


def list_stats() -> list[str]:
    return sorted(SENSOR_STATS)


def get_stats(name: str, bands: Sequence[str] | None = None, *, scale: float = 1.0):
    """``(mean, std)`` float32 arrays of the statistics ``name`` for ``bands``.

    ``scale`` multiplies both (e.g. ``1e-4`` to use ``"dn"`` statistics on reflectance).
    """
    if name not in SENSOR_STATS:
        raise KeyError(f"no statistics named {name!r}; known: {', '.join(list_stats())}")
    return SENSOR_STATS[name].select(bands, scale=scale)
