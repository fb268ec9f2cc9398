"""Per-sensor default normalization statistics (mean, std per band).

Each entry records the band names, the means and standard deviations, and the units
the numbers are in, so that a user can tell whether the data must be scaled first:

* ``"dn"``: raw digital numbers as stored in the product (e.g. reflectance x 10 000);
* ``"reflectance"``: surface reflectance in 0..1 (i.e. after the 0.0001 scale factor);
* ``"linear"``: linear backscatter power (Sentinel-1 RTC).

Sources: the statistics published with pretrained weights are read from the encoders'
pretrained tables (``d2geo.encoders.get_pretrained_cfg``), so they are written once:

* ``prithvi_eo_v1`` / ``prithvi_eo_v2``: the HLS statistics of Prithvi-EO-1.0 / 2.0;
* ``clay_*``: Clay v1.5's ``configs/metadata.yaml``, one entry per platform.
* ``ssl4eo_s12_s1``: SSL4EO-S12's Sentinel-1 GRD statistics (dB), torchgeo's ``_mean_s1``/``_std_s1``.
* ``ssl4eo_s12_l1c_band_stats``: SSL4EO-S12's per-band Sentinel-2 L1C statistics (DN), SoftCon's normalization.
* ``ssl4eo_l_<split>``: SSL4EO-L's 8-bit Landsat patches divided by 255, per sensor and level.

Dataset statistics (numbers only):

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

from d2geo.encoders import InputStats, get_pretrained_cfg
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


def _from_table(stats: InputStats) -> BandStats:
    return BandStats(stats.sensor, stats.bands, stats.mean, stats.std, stats.units)


SENSOR_STATS: dict[str, BandStats] = {
    "prithvi_eo_v1": _from_table(get_pretrained_cfg("prithvi_eo_v1_100").stats_for("hls")),
    "prithvi_eo_v2": _from_table(get_pretrained_cfg("prithvi_eo_v2_300").stats_for("hls")),
    **{f"clay_{s.name}": _from_table(s) for s in get_pretrained_cfg("clay_v1_5_large").stats},
    "ssl4eo_s12_s1": _from_table(get_pretrained_cfg("ssl4eo_s12_vits16_mae_s1").default_stats),
    "ssl4eo_s12_l1c_band_stats": _from_table(get_pretrained_cfg("softcon_vits14_s2").default_stats),
    **{f"ssl4eo_l_{split}": _from_table(get_pretrained_cfg(f"ssl4eo_l_vits16_{split}_moco").default_stats)
       for split in ("tm_toa", "etm_toa", "etm_sr", "oli_tirs_toa", "oli_sr")},
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
