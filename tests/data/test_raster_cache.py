"""The per-process cache of opened datasets behind windowed reads (d2geo.data.geotiff.opening):
one open per file for many windows, fresh pixels after a file is rewritten, bounded, never a
handle shared across a fork, and the same pixels as an uncached read."""
from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from rasterio.windows import Window  # noqa: E402

from d2geo.data.geotiff import opening, read_geotiff  # noqa: E402
from helpers import write_tif  # noqa: E402


@pytest.fixture
def cache(monkeypatch):
    fresh = opening.RasterHandleCache(size=3)
    monkeypatch.setattr(opening, "OPEN", fresh)
    yield fresh
    fresh.clear()


def _counting_open(monkeypatch):
    calls = []
    real = opening._open_quietly

    def counted(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(opening, "_open_quietly", counted)
    return calls


def test_windows_of_one_file_open_it_once_and_read_the_same_pixels(tmp_path, cache, monkeypatch):
    data = np.arange(3 * 64 * 64, dtype=np.int16).reshape(3, 64, 64)
    path = write_tif(tmp_path / "s.tif", data, names=["red", "green", "blue"])
    calls = _counting_open(monkeypatch)
    wins = [Window(0, 0, 16, 16), Window(40, 8, 16, 16), Window(60, 60, 16, 16)]  # the last reaches past the edge
    cached = [read_geotiff(path, window=w) for w in wins]
    assert calls == [path]  # one open for three windows
    monkeypatch.setattr(opening.OPEN, "size", 0)  # cache off: the reference
    plain = [read_geotiff(path, window=w) for w in wins]
    assert len(calls) == 1 + len(wins)
    for a, b in zip(cached, plain):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.valid, b.valid)
        assert a.band_names == b.band_names and a.transform == b.transform
    np.testing.assert_array_equal(cached[1].image[:, :, :], data[:, 8:24, 40:56].astype(np.float32))
    assert not cached[2].valid[-1, -1] and cached[2].valid[0, 0]


def test_a_file_rewritten_in_place_is_read_again(tmp_path, cache):
    path = write_tif(tmp_path / "s.tif", np.full((1, 32, 32), 1, np.uint8))
    assert read_geotiff(path, window=Window(0, 0, 8, 8)).image.max() == 1
    os.utime(path, ns=(1, 1))  # a distinct stamp even where mtime is coarse
    write_tif(tmp_path / "s.tif", np.full((1, 32, 32), 7, np.uint8))
    assert read_geotiff(path, window=Window(0, 0, 8, 8)).image.max() == 7
    assert len(cache) == 1  # the stale handle was closed, not kept beside the new one


def test_the_cache_is_bounded_and_closes_what_it_drops(tmp_path, cache):
    paths = [write_tif(tmp_path / f"s{i}.tif", np.full((1, 8, 8), i, np.uint8)) for i in range(5)]
    for p in paths:
        read_geotiff(p, window=Window(0, 0, 4, 4))
    assert len(cache) == 3
    held = [e.src for e in cache._items.values()]
    assert [os.path.basename(s.name) for s in held] == ["s2.tif", "s3.tif", "s4.tif"]  # least recently used went
    cache.clear()
    assert len(cache) == 0 and all(s.closed for s in held)


def test_whole_file_reads_do_not_hold_files_open(tmp_path, cache):
    path = write_tif(tmp_path / "chip.tif", np.ones((1, 8, 8), np.uint8))
    read_geotiff(path)
    assert len(cache) == 0


def _child(path, queue):
    from d2geo.data.geotiff import opening as op

    inherited = [e.src for e in op.OPEN._items.values()]  # the parent's handles, copied by fork (kept alive)
    sample = read_geotiff(path, window=Window(0, 0, 4, 4))
    used = [e.src for e in op.OPEN._items.values()]
    reused = any(u is s for u in used for s in inherited)
    queue.put((len(inherited), len(used), reused, float(sample.image.max())))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork start method only")
def test_a_forked_worker_opens_its_own_handles(tmp_path, cache):
    path = write_tif(tmp_path / "s.tif", np.full((1, 16, 16), 5, np.uint8))
    read_geotiff(path, window=Window(0, 0, 4, 4))
    parent_src = next(iter(cache._items.values())).src
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    proc = ctx.Process(target=_child, args=(path, q))
    proc.start()
    inherited, held, reused, value = q.get(timeout=60)
    proc.join(60)
    assert proc.exitcode == 0
    assert inherited == 1  # the fork copied the parent's cache ...
    assert held == 1 and not reused and value == 5.0  # ... which the child forgot, opening the file itself
    assert not parent_src.closed  # and the parent's handle is untouched
    assert read_geotiff(path, window=Window(4, 4, 4, 4)).image.max() == 5


def test_gdal_block_cache_is_bounded_unless_the_user_set_it(tmp_path, cache, monkeypatch):
    """Open datasets keep GDAL's block cache filled; its default (5% of the RAM per worker) let a
    loader's memory grow with the scene (+406 MB for 200 windows of an 8k px scene)."""
    import rasterio.env

    calls = []
    monkeypatch.setattr(rasterio.env, "set_gdal_config", lambda k, v: calls.append((k, v)))
    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    path = write_tif(tmp_path / "s.tif", np.ones((1, 8, 8), np.uint8))
    read_geotiff(path, window=Window(0, 0, 4, 4))
    read_geotiff(path, window=Window(4, 4, 4, 4))
    assert calls == [("GDAL_CACHEMAX", opening.BLOCK_CACHE)]  # once per process
    other = opening.RasterHandleCache(size=3)
    monkeypatch.setattr(opening, "OPEN", other)
    monkeypatch.setenv("GDAL_CACHEMAX", "512")
    read_geotiff(path, window=Window(0, 0, 4, 4))
    assert len(calls) == 1
    other.clear()
