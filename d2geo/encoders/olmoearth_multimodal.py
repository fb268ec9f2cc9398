"""OlmoEarth's modalities and the channels of a multi-modal OlmoEarth encoder: upstream's band groups,
d2geo's ``"<MODALITY>:<band>"`` channel names (``modalities.py``, as ``read_modalities`` stacks one file
per modality) mapped to upstream's modalities, and the input statistics per modality."""
from __future__ import annotations

from typing import Sequence

from .bands import BandError, sensor_band
from .modalities import MODALITY_SEP, find_modality
from .registry import InputStats

__all__ = ["OLMOEARTH_MODALITIES", "OLMOEARTH_FROM_MODALITY", "OLMOEARTH_S2_STATS", "OLMOEARTH_S1_STATS",
           "expand_olmoearth_channels", "olmoearth_stats"]

#: upstream's band groups (its ``ModalitySpec.band_sets``) and the sensor whose band ids they are
OLMOEARTH_MODALITIES = {
    "sentinel2_l2a": ("sentinel-2-l2a", (("B02", "B03", "B04", "B08"), ("B05", "B06", "B07", "B8A", "B11", "B12"),
                                         ("B01", "B09"))),
    "sentinel1": ("sentinel-1", (("VV", "VH"),)),
    "landsat": ("landsat-c2-l1", (("B8",), ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9", "B10", "B11"))),
}
#: d2geo's modality names (``modalities.py``, the ``"<MODALITY>:<band>"`` channel prefixes) -> upstream's
OLMOEARTH_FROM_MODALITY = {"S2L2A": "sentinel2_l2a", "S1GRD": "sentinel1", "S1RTC": "sentinel1"}


def _band_ids(modality: str, bands: Sequence[str], sensor: str | None) -> list[str]:
    default_sensor, groups = OLMOEARTH_MODALITIES[modality]
    known = {b for g in groups for b in g}
    ids = []
    for band in bands:
        spec = sensor_band(sensor or default_sensor, band)
        bid = spec.id.upper() if spec is not None else None
        if bid not in known:
            raise BandError(f"band {band!r} is not one of OlmoEarth's {modality} bands {sorted(known)}"
                            f"{f' (read as {sensor} bands)' if sensor else ''}; name the input's bands, or build "
                            f"the encoder for another modality ({', '.join(OLMOEARTH_MODALITIES)})")
        if bid in ids:
            raise BandError(f"band {band!r} is given twice in OlmoEarth's bands {list(bands)}")
        ids.append(bid)
    return ids


def _is_multimodal(bands: Sequence[str]) -> bool:
    """Whether ``bands`` are ``"<MODALITY>:<band>"`` channels (or bare modality names)."""
    return any(isinstance(b, str) and (MODALITY_SEP in b or b.upper() in OLMOEARTH_FROM_MODALITY) for b in bands)


def expand_olmoearth_channels(bands: Sequence[str]) -> tuple[str, ...]:
    """``"<MODALITY>:<band>"`` channels with bare modality names (``"S2L2A"``, ``"S1RTC"``) expanded to
    all the modality's bands in its file order (``modalities.py``, as ``read_modalities`` stacks them)."""
    out = []
    for b in bands:
        spec = find_modality(b) if isinstance(b, str) and MODALITY_SEP not in b else None
        if spec is not None and spec.name in OLMOEARTH_FROM_MODALITY:
            out.extend(f"{spec.name}{MODALITY_SEP}{band}" for band in spec.bands)
        else:
            out.append(b)
    return tuple(out)


def _split_channels(bands: Sequence[str]) -> dict[str, list[tuple[int, str]]]:
    """Expanded ``"<MODALITY>:<band>"`` channels -> {upstream modality: [(channel, band id)]}, modalities in
    the order they first appear."""
    by_mod: dict[str, list[tuple[int, str]]] = {}
    source: dict[str, str] = {}
    for i, ch in enumerate(bands):
        mod, sep, band = ch.partition(MODALITY_SEP) if isinstance(ch, str) else ("", "", "")
        spec = find_modality(mod.strip()) if sep else None
        if spec is None or spec.name not in OLMOEARTH_FROM_MODALITY:
            raise BandError(
                f"channel {ch!r} of {list(bands)}: a multi-modal OlmoEarth encoder takes channels named "
                f"'<MODALITY>:<band>' of the modalities {', '.join(OLMOEARTH_FROM_MODALITY)} (e.g. 'S2L2A:B04', "
                f"'S1RTC:VV'; read_modalities names them so), or bare modality names for all their bands")
        up = OLMOEARTH_FROM_MODALITY[spec.name]
        if source.setdefault(up, spec.name) != spec.name:
            raise BandError(f"channels of {source[up]} and {spec.name} both feed OlmoEarth's {up} embedding; "
                            f"give one of them")
        (bid,) = _band_ids(up, [band.strip()], spec.sensor)
        if any(b == bid for _, b in by_mod.get(up, ())):
            raise BandError(f"band {bid} of {spec.name} is given twice in OlmoEarth's bands {list(bands)}")
        by_mod.setdefault(up, []).append((i, bid))
    return by_mod


#: upstream's per-band statistics of its pretraining data (``olmoearth_pretrain/data/norm_configs/
#: computed.json``: mean, std), which its ``Normalizer(Strategy.COMPUTED)`` (the one its inference
#: quickstart applies to raw Sentinel-2 L2A DN) turns into ``(x - (mean - 2 std)) / (4 std)``
_COMPUTED = {
    "sentinel2_l2a": {
        "B01": (1115.8494388252218, 1955.6991794280914), "B02": (1188.9412572078477, 1859.1923971769581),
        "B03": (1407.7739105458452, 1727.7387413631088), "B04": (1513.0573882432757, 1740.7757298757895),
        "B05": (1890.9893042634167, 1754.7320388511766), "B06": (2483.7812315422448, 1622.1172720635755),
        "B07": (2722.728248756412, 1621.8226170190276), "B08": (2755.481305028308, 1612.2565699990187),
        "B09": (3269.812554170875, 2651.088425085525), "B11": (2562.852607796968, 1441.5471830655151),
        "B12": (1914.1383249044113, 1328.8914382756407), "B8A": (2885.570263047681, 1611.3587521042082)},
    "sentinel1": {"VV": (-11.648990747328444, 10.840350299936597), "VH": (-17.745436133270044, 10.216274681392647)},
}
#: upstream's ``std_multiplier`` (its default, used in pretraining and its inference quickstart)
_STD_MULTIPLIER = 2.0


def _computed_stats(name: str, modality: str, units: str) -> InputStats:
    """Upstream's normalization of ``modality`` as d2geo's ``(x - mean) / std`` statistics."""
    sensor, groups = OLMOEARTH_MODALITIES[modality]
    bands = tuple(b for g in groups for b in g)
    table = _COMPUTED[modality]
    mean = tuple(table[b][0] - _STD_MULTIPLIER * table[b][1] for b in bands)
    std = tuple(2 * _STD_MULTIPLIER * table[b][1] for b in bands)
    return InputStats(name, sensor, bands, mean, std, units)


#: Sentinel-2 L2A in DN (the L2A product's integers, not divided by 10 000), in upstream's band-group order
OLMOEARTH_S2_STATS = _computed_stats("olmoearth-s2-l2a-dn", "sentinel2_l2a", "dn")
#: Sentinel-1 VV, VH in dB
OLMOEARTH_S1_STATS = _computed_stats("olmoearth-s1-db", "sentinel1", "dB")
#: which statistics of the table serve which of upstream's modalities
_STATS_OF = {"sentinel2_l2a": "olmoearth-s2-l2a-dn", "sentinel1": "olmoearth-s1-db"}


def olmoearth_stats(bands: Sequence[str], stats: Sequence[InputStats] | None = None) -> tuple[list, list]:
    """Per-channel mean and std for ``"<MODALITY>:<band>"`` channels (bare modality names expanded), from
    ``stats`` (default: the pretrained table's, Sentinel-2 L2A and Sentinel-1), e.g. for
    ``model.pixel_mean/std`` of a multi-modal config. A modality the statistics do not cover is an error."""
    by_name = {st.name: st for st in (stats if stats is not None else (OLMOEARTH_S2_STATS, OLMOEARTH_S1_STATS))}
    bands = expand_olmoearth_channels(bands)
    mean, std = [], []
    for mod, chans in _split_channels(bands).items():
        st = by_name.get(_STATS_OF.get(mod, mod))
        if st is None:
            raise KeyError(f"no statistics for OlmoEarth's {mod} (channels "
                           f"{[bands[i] for i, _ in chans]}): these statistics cover {sorted(by_name)}; give "
                           f"pixel_mean/pixel_std for those channels yourself (e.g. your data's)")
        for i, bid in chans:
            (j,) = [k for k, b in enumerate(st.bands) if b.upper() == bid]
            mean.append((i, st.mean[j]))
            std.append((i, st.std[j]))
    return [v for _, v in sorted(mean)], [v for _, v in sorted(std)]
