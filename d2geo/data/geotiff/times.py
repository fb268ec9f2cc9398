"""Acquisition times of GeoTIFFs: tags, file names, the TIFF DateTime (see the package docstring)."""
from __future__ import annotations

import datetime as _dt
import logging
import os
import re

from .opening import GeoTiffError

logger = logging.getLogger(__name__)

#: acquisition-time tags searched, in order, before the file name
TIME_TAGS = ("ACQUISITION_DATETIME", "ACQUISITION_DATE", "ACQUISITION_TIME", "SENSING_TIME",
             "SENSING_DATE", "DATETIME", "TIMESTAMP")
#: the TIFF ``DateTime`` tag: the file's creation time by the TIFF spec, often processing time
TIFF_DATETIME_TAG = "TIFFTAG_DATETIME"

# ------------------------------------------------------------------------------ time
_ISO_DATE = re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?:[T_ ](\d{2}):?(\d{2}):?(\d{2}))?(?!\d)")
_YMD = re.compile(r"(?<!\d)((?:19|20)\d{2})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2}))?(?!\d)")
_YDOY = re.compile(r"(?<!\d)((?:19|20)\d{2})(\d{3})(?:T(\d{2})(\d{2})(\d{2}))?(?!\d)")


def _epoch(dt: _dt.datetime) -> float:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_dt.timezone.utc)
    return dt.timestamp()


def parse_time(text: str) -> float:
    """Seconds since the Unix epoch (UTC) of an ISO 8601 or TIFF-style date/time string."""
    s = str(text).strip()
    m = re.fullmatch(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})", s)  # TIFF DateTime
    if m:
        return _epoch(_dt.datetime(*map(int, m.groups())))
    iso = s.replace("Z", "+00:00")
    iso = re.sub(r"(\.\d{6})\d+", r"\1", iso)  # Python < 3.11 takes at most microseconds
    try:
        return _epoch(_dt.datetime.fromisoformat(iso))
    except ValueError:
        pass
    t = time_from_filename(s)
    if t is None:
        raise GeoTiffError(f"cannot parse the date/time {text!r}: use ISO 8601 (2020-09-01T18:59:19Z)")
    return t


def time_from_filename(name: str) -> float | None:
    """Acquisition time encoded in a file name, or None (see the module docstring)."""
    base = os.path.basename(str(name))
    m = _ISO_DATE.search(base)
    if m:
        y, mo, d = (int(g) for g in m.groups()[:3])
        hms = [int(g) for g in m.groups()[3:] if g is not None] or [0, 0, 0]
        try:
            return _epoch(_dt.datetime(y, mo, d, *hms))
        except ValueError:
            pass
    for m in _YMD.finditer(base):
        y, mo, d = (int(g) for g in m.groups()[:3])
        hms = [int(g) for g in m.groups()[3:] if g is not None] or [0, 0, 0]
        try:
            return _epoch(_dt.datetime(y, mo, d, *hms))
        except ValueError:
            continue
    for m in _YDOY.finditer(base):
        y, doy = int(m.group(1)), int(m.group(2))
        if not 1 <= doy <= (366 if y % 4 == 0 and (y % 100 != 0 or y % 400 == 0) else 365):
            continue
        hms = [int(g) for g in m.groups()[2:] if g is not None] or [0, 0, 0]
        start = _dt.datetime(y, 1, 1, *hms)
        return _epoch(start + _dt.timedelta(days=doy - 1))
    return None


_TIME_SOURCES_LOGGED: set = set()


def _log_time_source(source: str, path: str, level=logging.INFO, extra: str = "") -> None:
    if source not in _TIME_SOURCES_LOGGED:  # once per kind of source, not per sample
        _TIME_SOURCES_LOGGED.add(source)
        logger.log(level, "acquisition time from %s (e.g. %s)%s", source, path, extra)
    logger.debug("%s: acquisition time from %s", path, source)


def _time_of(src, path: str, time_tag: str | None, from_name: bool = True) -> float | None:
    """Acquisition time: acquisition tags, then the file name, then (warned) TIFF DateTime."""
    tags = {k.upper(): v for k, v in src.tags().items()}
    if time_tag:
        key = time_tag.upper()
        if key not in tags or not str(tags[key]).strip():
            raise GeoTiffError(f"{path} has no tag {time_tag!r}; its tags are {sorted(tags)}")
        _log_time_source(f"tag {key}", path)
        return parse_time(tags[key])
    for key in TIME_TAGS:
        if key in tags and str(tags[key]).strip():
            _log_time_source(f"tag {key}", path)
            return parse_time(tags[key])
    tiff = tags.get(TIFF_DATETIME_TAG)
    tiff_t = parse_time(tiff) if tiff is not None and str(tiff).strip() else None
    named = time_from_filename(path) if from_name else None
    if named is not None:
        day = 86_400
        if tiff_t is not None and named % day == 0 and named <= tiff_t < named + day:
            _log_time_source("the file name's date and the TIFF DateTime's time of day", path)
            return tiff_t
        if tiff_t is not None:
            logger.debug("%s: TIFF DateTime %s differs from the file name's date; using the file name",
                         path, tiff)
        _log_time_source("the file name", path)
        return named
    if tiff_t is not None:
        _log_time_source(
            "the TIFF DateTime tag", path, logging.WARNING,
            ": by the TIFF spec this is when the file was made, often the processing time, not the "
            "acquisition; write the acquisition time into an ACQUISITION_DATETIME tag, put the date in "
            "the file name, or pass timestamps=")
        return tiff_t
    return None

