"""Galileo's SRTM space group: channel names, normalization statistics and the derived slope.

Galileo's published models embed a *space* group ``SRTM`` of two bands, ``elevation`` (metres)
and ``slope`` (degrees), one token per patch with no date. The publisher's data pipeline
(``src/data/earthengine/srtm.py`` of github.com/nasaharvest/galileo) reads ``elevation`` from
SRTM (``USGS/SRTMGL1_003``) and defines ``slope`` as ``ee.Terrain.slope(elevation)`` on the
grid the samples are exported on (``scale=10``: 10 m): Earth Engine's slope in degrees from the
local gradient of the 4-connected neighbours of each pixel. So a slope that is not given is
derived here the same way, from the elevation and the pixel size (:func:`galileo_slope`):
central differences of the four neighbours over ``2 * gsd``; on the one-pixel border of the
image, where Earth Engine has no neighbour (and upstream's pipeline fills the missing values),
the one-sided difference over ``gsd``.

Normalization (``Normalizer(std=True)`` of ``src/data/dataset.py`` with ``config/normalization.json``,
key ``"16"``, the space bands, whose ``std_bands`` are the SRTM bands): ``x -> (x - (mean - 2 std))
/ (4 std)``, stored here, as for the space-time bands, as the mean ``mean - 2 std`` and std
``4 std`` (:data:`GALILEO_ELEVATION_STATS`, :data:`GALILEO_SLOPE_STATS`). The encoder receives
normalized channels; a slope it derives is computed from the elevation in metres (the
normalized elevation times its std: the mean cancels in differences) and normalized with the
slope statistics. The elevation must therefore be normalized with these statistics
(:func:`d2geo.encoders.galileo.galileo_stats` gives them per channel; the configs use it).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .bands import BandError
from .modalities import MODALITY_SEP
from .registry import InputStats

__all__ = ["SRTM_GROUP", "GALILEO_SRTM_BANDS", "GALILEO_ELEVATION_STATS", "GALILEO_SLOPE_STATS",
           "parse_srtm_band", "galileo_slope", "normalized_slope"]

#: the space group this encoder takes and its bands, in the checkpoint's order
SRTM_GROUP = "SRTM"
GALILEO_SRTM_BANDS = ("SRTM:elevation", "SRTM:slope")
#: the publisher's space groups, in ``sp_channel_embed``'s row order (only SRTM is taken)
UPSTREAM_SPACE_GROUPS = ("SRTM", "DW", "WC")

#: names users give the two SRTM bands, with or without a modality prefix (``"DEM:DEM"`` is
#: how ``read_modalities`` names a DEM file's band)
_PREFIXES = ("srtm", "dem")
_ELEVATION = ("elevation", "dem", "srtm")
_SLOPE = ("slope",)


def _affine(mean: float, std: float) -> tuple[tuple[float], tuple[float]]:
    return (mean - 2 * std,), (4 * std,)


# config/normalization.json of github.com/nasaharvest/galileo, key "16", bands 0 (elevation) and 1 (slope)
GALILEO_ELEVATION_STATS = InputStats("galileo-elevation", None, ("SRTM:elevation",),
                                     *_affine(673.0152819503361, 983.0697298296237), "m")
GALILEO_SLOPE_STATS = InputStats("galileo-slope", None, ("SRTM:slope",),
                                 *_affine(5.930092668915115, 8.167406789813247), "degrees")


def parse_srtm_band(name: str) -> str | None:
    """``"elevation"``, ``"DEM"``, ``"DEM:DEM"``, ``"SRTM:elevation"`` -> ``"elevation"``;
    ``"slope"``, ``"SRTM:slope"`` -> ``"slope"``; any other name -> None. A ``DEM:``/``SRTM:``
    prefix with another band is a :class:`BandError`."""
    low = name.strip().lower()
    prefix, sep, band = low.partition(MODALITY_SEP)
    if not sep:
        band, prefix = low, None
    elif prefix.strip() not in _PREFIXES:
        return None
    band = band.strip()
    if band in _ELEVATION:
        return "elevation"
    if band in _SLOPE:
        return "slope"
    if prefix is not None:
        raise BandError(f"channel {name!r}: Galileo's SRTM group has the bands elevation (metres; a DEM) and "
                        f"slope (degrees); name them 'elevation'/'DEM' and 'slope'")
    return None


def galileo_slope(elevation: torch.Tensor, gsd: torch.Tensor) -> torch.Tensor:
    """Slope in degrees ``(B, H, W)`` of an elevation ``(B, H, W)`` in metres on a grid of
    ``gsd`` ``(B,)`` metres per pixel, as Galileo's pipeline defines it (module doc): the
    gradient from the 4-connected neighbours (central differences), one-sided on the border."""
    H, W = elevation.shape[-2:]
    if H < 2 or W < 2:
        raise BandError(f"deriving the slope needs at least 2 x 2 pixels, got {H} x {W}: give the 'slope' band")
    z = elevation.float()

    def diff(dim: int) -> torch.Tensor:
        n = z.shape[dim]
        first = z.narrow(dim, 1, 1) - z.narrow(dim, 0, 1)
        last = z.narrow(dim, n - 1, 1) - z.narrow(dim, n - 2, 1)
        inner = (z.narrow(dim, 2, n - 2) - z.narrow(dim, 0, n - 2)) / 2
        return torch.cat([first, inner, last], dim=dim)

    g = gsd.float().reshape(-1, 1, 1)
    rise = torch.sqrt((diff(-1) / g) ** 2 + (diff(-2) / g) ** 2)
    return torch.atan(rise) * (180.0 / math.pi)


def normalized_slope(elevation_norm: torch.Tensor, gsd: torch.Tensor) -> torch.Tensor:
    """The normalized slope ``(B, H, W)`` from the normalized elevation ``(B, H, W)`` (both
    with :data:`GALILEO_ELEVATION_STATS` / :data:`GALILEO_SLOPE_STATS`)."""
    metres = elevation_norm.float() * GALILEO_ELEVATION_STATS.std[0]  # the mean cancels in differences
    slope = galileo_slope(metres, gsd)
    return ((slope - GALILEO_SLOPE_STATS.mean[0]) / GALILEO_SLOPE_STATS.std[0]).to(elevation_norm.dtype)


def srtm_layout(names: Sequence[tuple[int, str]]) -> tuple[int, int | None] | None:
    """``[(input channel, "elevation"|"slope")]`` -> ``(elevation channel, slope channel or None)``,
    or None when no SRTM band is given; slope without elevation is a :class:`BandError`."""
    where: dict[str, int] = {}
    for i, band in names:
        if band in where:
            raise BandError(f"two channels are Galileo's SRTM {band} (channels {where[band]} and {i}); give it once")
        where[band] = i
    if not where:
        return None
    if "elevation" not in where:
        raise BandError("a 'slope' channel without the elevation: Galileo's SRTM group is elevation (a DEM, metres) "
                        "and slope (degrees); give the elevation too (the slope alone is not a Galileo input)")
    return where["elevation"], where.get("slope")
