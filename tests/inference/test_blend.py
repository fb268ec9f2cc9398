"""BlendBuffer (d2geo.inference.blend): the weighted mean of window logits, row by row."""
from __future__ import annotations

import numpy as np
import pytest

from d2geo.inference.blend import NODATA_CLASS, BlendBuffer
from d2geo.inference.windows import blend_weights, column_strips, tile_windows, window_shape


def _blend(logits, tile, overlap, valid=None, owner=None, scores=False, cols=None):
    """Blend the windows of a (K, H, W) logit field through a BlendBuffer, flushing as the loop does."""
    k, h, w = logits.shape
    valid = np.ones((h, w), bool) if valid is None else valid
    wh, ww = window_shape(h, w, tile)
    wt = blend_weights(wh, overlap, ww)
    c0, c1 = cols or (0, w)
    buf = BlendBuffer(k, h, wh, 0, w, out_cols=(c0, c1), owner=owner, scores=scores)
    labels = np.full((h, c1 - c0), 77, np.uint8)
    probs = np.full((k, h, c1 - c0), -1.0, np.float32)
    current = None

    def put(rows):
        if rows is None:
            return
        n = rows.labels.shape[0]
        labels[rows.row:rows.row + n] = rows.labels
        if scores:
            probs[:, rows.row:rows.row + n] = rows.scores

    for r, c in tile_windows(h, w, tile, overlap):
        if r != current:
            put(buf.flush(r))
            current = r
        buf.add(r, c, logits[:, r:r + wh, c:c + ww], wt, valid[r:r + wh, c:c + ww])
    put(buf.flush(h))
    return labels, probs


def test_windows_that_agree_blend_to_the_same_field_and_every_row_is_flushed_once():
    rng = np.random.default_rng(0)
    field = rng.normal(size=(3, 70, 90)).astype(np.float32)
    labels, probs = _blend(field, tile=32, overlap=12, scores=True)
    assert (labels != 77).all()  # every row written
    np.testing.assert_array_equal(labels, field.argmax(0))
    e = np.exp(field - field.max(0))
    np.testing.assert_allclose(probs, e / e.sum(0), rtol=1e-5, atol=1e-6)


def test_the_weighted_mean_favours_each_windows_centre():
    """Two windows disagree in their overlap: each pixel takes the window it is farther inside."""
    k, h, w, tile, overlap = 2, 16, 48, 32, 16
    wh, ww = window_shape(h, w, tile)
    wt = blend_weights(wh, overlap, ww)
    buf = BlendBuffer(k, h, wh, 0, w)
    a = np.zeros((k, wh, ww), np.float32)
    a[0] = 1  # the left window says class 0
    b = np.zeros((k, wh, ww), np.float32)
    b[1] = 1  # the right window class 1
    wins = tile_windows(h, w, tile, overlap)
    assert wins == [(0, 0), (0, 16)]
    buf.add(0, 0, a, wt, np.ones((wh, ww), bool))
    buf.add(0, 16, b, wt, np.ones((wh, ww), bool))
    labels = buf.flush(h).labels
    assert (labels[:, :24] == 0).all() and (labels[:, 24:] == 1).all()  # the seam in the middle of the overlap


def test_invalid_pixels_and_pixels_not_owned_are_no_data():
    rng = np.random.default_rng(1)
    field = rng.normal(size=(4, 40, 50)).astype(np.float32)
    valid = np.ones((40, 50), bool)
    valid[5:9, 10:30] = False

    def owner(row0, col0, rows, cols):
        rr, cc = np.mgrid[row0:row0 + rows, col0:col0 + cols]
        return cc < 35  # another scene owns the columns from 35 on

    labels, probs = _blend(field, 24, 8, valid=valid, owner=owner, scores=True)
    assert (labels[5:9, 10:30] == NODATA_CLASS).all() and np.isnan(probs[:, 5:9, 10:30]).all()
    assert (labels[:, 35:] == NODATA_CLASS).all() and np.isnan(probs[:, :, 35:]).all()
    keep = (labels != NODATA_CLASS)
    np.testing.assert_array_equal(labels[keep], field.argmax(0)[keep])
    assert keep.sum() == 40 * 35 - 4 * 20


def test_a_strip_returns_its_own_columns_and_cuts_windows_to_its_range():
    rng = np.random.default_rng(2)
    field = rng.normal(size=(2, 30, 80)).astype(np.float32)
    (a, b), _ = column_strips(80, 40)
    labels, _ = _blend(field, 16, 4, cols=(a, b))
    assert labels.shape == (30, 40)
    np.testing.assert_array_equal(labels, field.argmax(0)[:, a:b])
    buf = BlendBuffer(2, 30, 16, 20, 60)
    buf.add(0, 50, field[:, :16, 50:66], np.ones((16, 16), np.float32), np.ones((16, 16), bool))
    out = buf.flush(30)
    assert (out.labels[:16, 30:40] == field[:, :16, 50:60].argmax(0)).all()  # cut at column 60
    assert (out.labels[:, :30] == NODATA_CLASS).all()


def test_misuse_is_an_error_not_a_silent_blend():
    buf = BlendBuffer(3, 50, 16, 0, 40)
    with pytest.raises(ValueError, match="classes"):
        buf.add(0, 0, np.zeros((2, 16, 16), np.float32), np.ones((16, 16), np.float32), np.ones((16, 16), bool))
    buf.flush(20)
    with pytest.raises(ValueError, match="above the flushed rows"):
        buf.add(8, 0, np.zeros((3, 16, 16), np.float32), np.ones((16, 16), np.float32), np.ones((16, 16), bool))
    with pytest.raises(ValueError, match="flush first"):
        buf.add(30, 0, np.zeros((3, 16, 16), np.float32), np.ones((16, 16), np.float32), np.ones((16, 16), bool))


def test_windows_shrink_to_a_scene_smaller_than_the_tile():
    assert window_shape(224, 224, 256) == (224, 224)
    assert window_shape(90, 33, 64) == (64, 33)
    assert tile_windows(90, 33, 64, 16) == [(0, 0), (26, 0)]
    wt = blend_weights(64, 16, 33)
    assert wt.shape == (64, 33) and (wt > 0).all()


def test_the_class_map_holds_its_colour_table_and_class_names_without_the_sidecar(tmp_path):
    """The class names are in the GeoTIFF itself (its GDAL_METADATA tag), not only in the .aux.xml
    sidecar (which holds GDAL's category names, a field GeoTIFF does not have)."""
    import json
    import os

    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    from d2geo.inference.outputs import open_class_map, to_cog, write_category_names
    from d2geo.inference.region.inputs import RegionScene

    scene = RegionScene("s", [], [], "EPSG:32610", from_origin(500000, 4200000, 10, 10), 40, 50, 10.0)
    raw, cog = str(tmp_path / "raw.tif"), str(tmp_path / "map.tif")
    names = ["background", "water", "field"]
    with open_class_map(raw, scene, names, blocksize=128) as dst:
        dst.write(np.full((1, 40, 50), 2, np.uint8))
    to_cog(raw, cog, "nearest", 128)
    write_category_names(cog + ".aux.xml", names)
    os.unlink(cog + ".aux.xml")  # a copy without its sidecar (an upload, an e-mail)
    with rasterio.open(cog) as src:
        assert json.loads(src.tags(1)["class_names"]) == names
        assert src.colormap(1)[2][:3] != src.colormap(1)[1][:3] and src.colormap(1)[NODATA_CLASS][3] == 0
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
