"""Panoptic scene outputs (d2geo.inference.panoptic): windows' panoptic_seg stitched into a
class map and instance ids unique across windows (an object cut by a seam keeps one id), and
polygons that rasterize back to the ids."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from d2geo.inference.panoptic import UNASSIGNED, PanopticStitcher, panoptic_polygons, window_panoptic

STUFF, THINGS = ["forest", "water"], ["wheat", "maize"]


def _scene():
    """A 40 x 60 scene: forest, water on the right; a wheat field across the seam at x=30, a
    maize field in the left window and a wheat field in the right window only."""
    classes = np.zeros((40, 60), np.uint8)
    classes[:, 50:] = 1
    ids = np.zeros((40, 60), np.int32)
    ids[5:15, 20:40] = 1  # wheat across the seam
    ids[25:35, 5:15] = 2  # maize
    ids[25:35, 40:48] = 3  # wheat
    classes[ids == 1] = 2
    classes[ids == 2] = 3
    classes[ids == 3] = 2
    return classes, ids


def _window_output(classes, ids, x0, x1):
    """What PanopticFPN returns for the window of columns x0..x1 (its own segment numbering)."""
    c, i = classes[:, x0:x1], ids[:, x0:x1]
    seg = torch.zeros(c.shape, dtype=torch.int32)
    infos, n = [], 0
    for inst in np.unique(i[i > 0]):
        n += 1
        seg[torch.from_numpy(i == inst)] = n
        infos.append({"id": n, "isthing": True, "category_id": int(c[i == inst][0]) - len(STUFF), "score": 0.9})
    for s in range(len(STUFF)):
        sel = (c == s) & (i == 0)
        if sel.any():
            n += 1
            seg[torch.from_numpy(sel)] = n
            infos.append({"id": n, "isthing": False, "category_id": s + 1})
    return seg, infos


def test_windows_stitch_into_unique_ids_and_seam_objects_keep_one_id():
    classes, ids = _scene()
    st = PanopticStitcher(40, 60, num_stuff=len(STUFF), num_things=len(THINGS))
    # two overlapping windows (columns 0-39 and 20-59), each owning its half of the overlap
    st.add(_window_output(classes, ids, 0, 40), 0, 0, core=(0, 0, 30, 40))
    st.add(_window_output(classes, ids, 20, 60), 20, 0, core=(10, 0, 40, 40))
    assert (st.classes == classes).all()
    # the same partition into objects as the truth, one id per object, unique in the scene
    got = {int(g): set(np.unique(ids[st.ids == g]).tolist()) for g in np.unique(st.ids[st.ids > 0])}
    assert sorted(map(sorted, got.values())) == [[1], [2], [3]]
    assert ((st.ids > 0) == (ids > 0)).all()


def test_objects_of_two_windows_that_do_not_overlap_get_different_ids():
    classes, ids = _scene()
    st = PanopticStitcher(40, 60, num_stuff=len(STUFF), num_things=len(THINGS))
    # the field across the seam is split between windows without overlap: two objects
    st.add(_window_output(classes, ids, 0, 30), 0, 0)
    st.add(_window_output(classes, ids, 30, 60), 30, 0)
    assert len(np.unique(st.ids[ids == 1])) == 2
    assert len(np.unique(st.ids[st.ids > 0])) == 4


def test_unassigned_pixels_and_bad_labels():
    seg = torch.zeros(4, 4, dtype=torch.int32)
    seg[:2] = 1
    classes, seg_ids = window_panoptic((seg, [{"id": 1, "isthing": False, "category_id": 2}]),
                                       num_stuff=2, num_things=2)
    assert (classes[:2] == 1).all() and (classes[2:] == UNASSIGNED).all() and not seg_ids.any()
    with pytest.raises(ValueError, match=r"stuff label 0; expected 1..2"):
        window_panoptic((seg, [{"id": 1, "isthing": False, "category_id": 0}]), num_stuff=2, num_things=2)
    st = PanopticStitcher(4, 4, num_stuff=2, num_things=2)
    with pytest.raises(ValueError, match=r"does not fit the 4x4 scene"):
        st.add((seg, []), 2, 0)


def test_polygons_rasterize_back_to_the_instance_ids():
    pytest.importorskip("shapely")
    pytest.importorskip("rasterio")
    from rasterio.features import rasterize
    from rasterio.transform import from_origin
    from shapely.geometry import shape

    classes, ids = _scene()
    ids[20:24, 50:58] = 4  # an object in two pieces (an L and a separate block)
    ids[20:24, 30:33] = 4
    classes[ids == 4] = 3
    t = from_origin(600_000, 4_100_000, 10, 10)
    fc = panoptic_polygons(ids, classes, t, class_names=STUFF + THINGS)
    assert [f["properties"]["instance_id"] for f in fc["features"]] == [1, 2, 3, 4]
    assert [f["properties"]["class"] for f in fc["features"]] == ["wheat", "maize", "wheat", "maize"]
    assert fc["features"][3]["geometry"]["type"] == "MultiPolygon"
    back = rasterize([(shape(f["geometry"]), f["properties"]["instance_id"]) for f in fc["features"]],
                     out_shape=ids.shape, transform=t, fill=0, dtype="int32")
    assert (back == ids).all()
