"""Opening GeoTIFFs: GDAL errors as :class:`GeoTiffError`, and a per-process cache of opened
datasets for windowed reads."""
from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import os
import warnings
from typing import Union

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


class GeoTiffError(ValueError):
    """A GeoTIFF or the options given to read it do not fit together."""


def _rasterio():
    try:
        import rasterio
    except ImportError as e:  # pragma: no cover - rasterio is installed in tests
        raise ImportError("reading GeoTIFFs needs rasterio: pip install 'd2geo[geo]'") from e
    return rasterio


def _open_quietly(path: str):
    rasterio = _rasterio()
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        # the reader says itself, in its own words, what a file without georeferencing
        # loses (location and GSD) and what to do: rasterio's generic warning adds nothing
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)


def _corrupt(path: str, e: Exception) -> GeoTiffError:
    return GeoTiffError(
        f"{path} could not be read as a GeoTIFF ({e}); it is probably truncated or corrupt: "
        "copy, download or export it again (gdalinfo -checksum shows where it breaks)")


#: how many opened datasets each process (DataLoader worker) and thread keeps for windowed reads
#: (``D2GEO_OPEN_RASTERS`` overrides it; 0 turns the cache off)
OPEN_RASTERS = int(os.environ.get("D2GEO_OPEN_RASTERS", "32"))
#: GDAL's block cache (bytes) in a process that keeps datasets open, unless ``GDAL_CACHEMAX``
#: is set: GDAL's default, 5% of the RAM per process (DataLoader worker), grows with every
#: distinct block the windows decode (``D2GEO_GDAL_CACHE_MB`` overrides it)
BLOCK_CACHE = int(float(os.environ.get("D2GEO_GDAL_CACHE_MB", "128")) * 2 ** 20)


class _Opened:
    __slots__ = ("src", "stamp", "memo")

    def __init__(self, src, stamp):
        self.src, self.stamp, self.memo = src, stamp, {}


class RasterHandleCache:
    """A bounded LRU of opened rasterio datasets, one per ``(path, thread)``, owned by one process.

    Windows of a scene are read many times; opening the file for each (GDAL parses the header
    and drops its block cache on close) costs as much as the read. The cache belongs to the
    process that filled it: a forked DataLoader worker finds the parent's handles (whose file
    descriptors and offsets it shares) and forgets them without using or closing them, so no
    two processes ever read through one handle; threads get their own handles (a rasterio
    dataset is not thread-safe). A file replaced or rewritten in place (another size, mtime or
    inode) is opened again. Everything still open is closed at exit. GDAL's block cache, which
    keeps the decoded blocks that neighbouring windows share, is bounded to :data:`BLOCK_CACHE`
    in each process that uses the cache, unless ``GDAL_CACHEMAX`` is set.
    """

    def __init__(self, size: int = OPEN_RASTERS):
        import threading

        self.size = size
        self._pid = os.getpid()
        self._bounded = None  # the process whose GDAL block cache was bounded
        self._items: "collections.OrderedDict" = collections.OrderedDict()
        self._lock = threading.Lock()
        self._ident = threading.get_ident

    def _own(self) -> None:
        if os.getpid() != self._pid:  # a forked child: the parent's handles are not ours to use
            self._items = collections.OrderedDict()
            self._pid = os.getpid()
        if self._bounded != self._pid:
            self._bounded = self._pid
            if "GDAL_CACHEMAX" not in os.environ:  # the user's setting wins
                from rasterio.env import set_gdal_config

                set_gdal_config("GDAL_CACHEMAX", BLOCK_CACHE)

    def get(self, path: str) -> _Opened:
        st = os.stat(path)
        stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
        key = (path, self._ident())
        with self._lock:
            self._own()
            entry = self._items.get(key)
            if entry is not None and entry.stamp == stamp and not entry.src.closed:
                self._items.move_to_end(key)
                return entry
            if entry is not None:
                self._drop(key)
        entry = _Opened(_open_quietly(path), stamp)  # outside the lock: opening may be slow
        with self._lock:
            self._own()
            if key in self._items:
                self._drop(key)
            self._items[key] = entry
            while len(self._items) > self.size:
                self._drop(next(iter(self._items)))
        return entry

    def _drop(self, key) -> None:
        entry = self._items.pop(key, None)
        if entry is not None:
            try:
                entry.src.close()
            except Exception:  # pragma: no cover - closing a broken handle
                logger.debug("closing %s failed", key[0], exc_info=True)

    def discard(self, path: str) -> None:
        """Close and forget this thread's handle of ``path`` (after an error reading it)."""
        with self._lock:
            self._own()
            self._drop((path, self._ident()))

    def clear(self) -> None:
        """Close every handle this process opened."""
        with self._lock:
            if os.getpid() != self._pid:
                self._items = collections.OrderedDict()
                return
            for key in list(self._items):
                self._drop(key)

    def __len__(self) -> int:
        with self._lock:
            self._own()
            return len(self._items)


OPEN = RasterHandleCache()
atexit.register(OPEN.clear)


@contextlib.contextmanager
def _open_raster(path: str, cached: bool = False, memo: dict | None = None):
    """``rasterio.open(path)``; GDAL's errors on opening or reading become a GeoTiffError.

    ``cached=True`` (windowed reads of scenes) takes the dataset from this process's
    :data:`OPEN` cache and leaves it open; ``memo``, when given, is filled with the cache
    entry's dict for facts about the file that do not change between windows (cleared for a
    dataset opened anew)."""
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import RasterioError

    use_cache = cached and OPEN.size > 0
    try:
        if use_cache:
            entry = OPEN.get(path)
            if memo is not None:
                memo["facts"] = entry.memo
            yield entry.src
        else:
            src = _open_quietly(path)
            if memo is not None:
                memo["facts"] = {}
            with src:
                yield src
    except (RasterioError, CPLE_BaseError) as e:
        if use_cache:
            OPEN.discard(path)
        raise _corrupt(path, e) from e
