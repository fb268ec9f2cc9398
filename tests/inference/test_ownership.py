"""The ownership rule (d2geo.inference.region.ownership): where scenes overlap, the scene in
which a point lies farthest from the edge predicts it; ties go to the scene listed first; a
scene without data at the point never takes it."""
from __future__ import annotations

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402

from d2geo.inference.region import collect_scenes, ownership  # noqa: E402


def _write(path, x0, y0, w, h, nodata_cols=None, crs="EPSG:32610"):
    data = np.ones((1, h, w), np.uint16)
    if nodata_cols is not None:
        data[:, :, nodata_cols] = 0
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint16", crs=crs,
                       transform=from_origin(x0, y0, 10, 10), nodata=0) as dst:
        dst.write(data)
    return str(path)


def test_the_point_goes_to_the_scene_it_lies_farthest_inside(tmp_path):
    # a: columns 0..59; b: shifted 40 px east (a's columns 40..59 are b's 0..19); same rows
    a = _write(tmp_path / "a.tif", 500000, 4200000, 60, 30)
    b = _write(tmp_path / "b.tif", 500400, 4200000, 60, 30)
    scenes = collect_scenes([a, b])
    own_a, own_b = ownership(scenes[0], scenes), ownership(scenes[1], scenes)
    assert own_a and own_b  # each has a neighbour
    ma, mb = own_a.owned(0, 0, 30, 60), own_b.owned(0, 0, 30, 60)
    # outside the overlap each scene keeps its pixels
    assert ma[:, :40].all() and mb[:, 20:].all()
    # in the overlap exactly one scene owns each pixel
    assert (ma[:, 40:] ^ mb[:, :20]).all()
    # in the middle rows the split is at the overlap's middle (column 50 of a = 10 of b)
    mid = slice(12, 18)
    assert ma[mid, 40:50].all() and not ma[mid, 50:].any()
    # near the top edge both scenes are as far inside (the distance to the top edge): the first listed wins
    assert ma[0, 40:].all() and not mb[0, :20].any()
    # the same call through __call__ (what the window loop passes as owner)
    np.testing.assert_array_equal(own_a(5, 45, 3, 10), ma[5:8, 45:55])


def test_a_neighbour_without_data_does_not_take_the_point(tmp_path):
    a = _write(tmp_path / "a.tif", 500000, 4200000, 60, 30)
    b = _write(tmp_path / "b.tif", 500400, 4200000, 60, 30, nodata_cols=slice(0, 20))  # b's overlap is empty
    scenes = collect_scenes([a, b])
    assert ownership(scenes[0], scenes).owned(0, 0, 30, 60).all()


def test_scenes_apart_have_no_neighbours_and_every_pixel_is_owned(tmp_path):
    a = _write(tmp_path / "a.tif", 500000, 4200000, 20, 20)
    b = _write(tmp_path / "b.tif", 600000, 4200000, 20, 20)
    scenes = collect_scenes([a, b])
    own = ownership(scenes[0], scenes)
    assert not own and own.owned(0, 0, 20, 20).all()


def test_ownership_across_utm_zones_is_exclusive(tmp_path):
    """b in zone 10, c in zone 11 overlapping it: every ground point once."""
    from rasterio.warp import transform as warp

    b = _write(tmp_path / "b.tif", 699000, 4200000, 60, 40)
    (x,), (y,) = warp("EPSG:32610", "EPSG:32611", [699000 + 300], [4200000])
    c = _write(tmp_path / "c.tif", round(x), round(y), 60, 40, crs="EPSG:32611")
    scenes = collect_scenes([b, c])
    mb = ownership(scenes[0], scenes).owned(0, 0, 40, 60)
    mc = ownership(scenes[1], scenes).owned(0, 0, 40, 60)
    assert not mb.all() and not mc.all()  # each gives up part of the overlap
    assert mb[:, :25].all()  # b keeps what c does not cover
