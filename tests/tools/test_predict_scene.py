"""Sliding-window scene inference: blending without seams, instances deduplicated across windows."""
from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import textwrap

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")
rasterio = pytest.importorskip("rasterio")
import cv2  # noqa: E402

from d2geo.data.geotiff import GeoTiffError, apply_affine, read_geotiff  # noqa: E402
from d2geo.inference import (  # noqa: E402
    SceneInstance, blend_weights, merge_instances, predict_scene, tile_windows,
)
from d2geo.data.synthetic.generator import Building, write_scene  # noqa: E402


# A tiny "trained" model: nearest spectral centroid on a context-blurred input whose zero
# padding darkens window edges (like a CNN's), then buildings = connected components.
MODEL_SOURCE = textwrap.dedent('''
    import cv2
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from detectron2.structures import Boxes, Instances


    class TinySceneModel(nn.Module):
        def __init__(self, num_classes=4, bands=6, building_class=3):
            super().__init__()
            self.centroids = nn.Parameter(torch.zeros(num_classes, bands))
            self.building_class = building_class

        def forward(self, batched_inputs):
            x = torch.stack([d["image"] for d in batched_inputs]).float()
            ctx = 0.2 * x + 0.8 * F.avg_pool2d(x, 9, 1, 4, count_include_pad=True)
            d2 = ((ctx[:, None] - self.centroids[None, :, :, None, None]) ** 2).sum(2)
            logits = -d2 / 0.002
            outs = []
            for b in range(len(batched_inputs)):
                lab = logits[b].argmax(0).numpy()
                n, cc, stats, _ = cv2.connectedComponentsWithStats(
                    (lab == self.building_class).astype(np.uint8), connectivity=4)
                keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= 6]
                h, w = lab.shape
                inst = Instances((h, w))
                masks = np.stack([cc == i for i in keep]) if keep else np.zeros((0, h, w), bool)
                inst.pred_masks = torch.as_tensor(masks)
                boxes = [[stats[i, 0], stats[i, 1], stats[i, 0] + stats[i, 2], stats[i, 1] + stats[i, 3]]
                         for i in keep]
                inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
                inst.scores = torch.tensor([0.5 + 0.001 * stats[i, cv2.CC_STAT_AREA] for i in keep])
                inst.pred_classes = torch.zeros(len(keep), dtype=torch.int64)
                outs.append({"sem_seg": logits[b], "instances": inst})
            return outs
''')

TILE, OVERLAP = 96, 32
H, W = 200, 232
# buildings straddling interior window edges: x=96 (end of window col 0), x=64 (start of col 64),
# y=96 (end of row 0), a corner shared by four windows, and one well inside a window
BUILDINGS = [Building(96, 30, 9, 7, 10), Building(64, 150, 7, 9, 0), Building(180, 96, 8, 8, 30),
             Building(96, 96, 9, 9, 45), Building(30, 180, 7, 7, 0), Building(200, 170, 6, 10, 0)]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("scene")
    path = str(d / "HLS.S30.T10SEG.2020245.tif")
    labels, blds, transform = write_scene(path, height=H, width=W, seed=11, buildings=BUILDINGS)
    return path, labels, blds, transform


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    (d / "d2geo_tiny_scene_model.py").write_text(MODEL_SOURCE)
    sys.path.insert(0, str(d))
    try:
        mod = importlib.import_module("d2geo_tiny_scene_model")
    finally:
        sys.path.remove(str(d))
    from d2geo.data.synthetic.generator import SEMSEG_CLASSES, SIGNATURES

    m = mod.TinySceneModel()
    with torch.no_grad():
        m.centroids.copy_(torch.tensor(np.stack([SIGNATURES[c] for c in SEMSEG_CLASSES]), dtype=torch.float32))
    m.eval()
    return m, d


def _full_scene_labels(model, path):
    s = read_geotiff(path)
    out = model([{"image": torch.as_tensor(s.image), "height": H, "width": W}])[0]
    return out["sem_seg"].argmax(0).numpy()


def _interior_edges(size):
    starts = sorted({c for _, c in tile_windows(size, size, TILE, OVERLAP)})
    edges = {s for s in starts if s > 0} | {s + TILE - 1 for s in starts if s + TILE < size}
    return sorted(edges)


def test_windows_cover_and_weights_partition():
    wins = tile_windows(H, W, TILE, OVERLAP)
    assert sorted({r for r, _ in wins}) == [0, 64, 104] and sorted({c for _, c in wins}) == [0, 64, 128, 136]
    cover = np.zeros((H, W))
    wsum = np.zeros((H, W))
    wt = blend_weights(TILE, OVERLAP)
    for r, c in wins:
        cover[r:r + TILE, c:c + TILE] += 1
        wsum[r:r + TILE, c:c + TILE] += wt[: H - r, : W - c]
    assert (cover >= 1).all() and (wsum > 0).all()
    assert wt.max() == 1.0 and wt[0, 0] < 0.001 and wt[TILE // 2, 0] < 0.02
    assert tile_windows(50, 40, 96, 32) == [(0, 0)]
    with pytest.raises(ValueError, match="overlap must be in"):
        tile_windows(10, 10, 8, 8)


def test_semantic_blending_has_no_seams(scene, model, tmp_path):
    path, gt, _, transform = scene
    m, _ = model
    ref = _full_scene_labels(m, path)
    out_blend, out_naive = str(tmp_path / "blend.tif"), str(tmp_path / "naive.tif")
    predict_scene(m, path, tile=TILE, overlap=OVERLAP, semseg_path=out_blend, progress=False)
    # naive tiling: no overlap, every window pasted as is
    predict_scene(m, path, tile=TILE, overlap=0, semseg_path=out_naive, progress=False)
    with rasterio.open(out_blend) as src:
        blend = src.read(1)
        assert src.crs.to_epsg() == 32610 and src.transform.almost_equals(transform)
        assert (src.height, src.width) == (H, W) and src.nodata == 255
    with rasterio.open(out_naive) as src:
        naive = src.read(1)
    # pixels on window borders of the naive tiling (rows/cols 96, 192 and the ones before them)
    border = np.zeros((H, W), bool)
    for e in (95, 96, 191, 192):
        if e < W:
            border[:, max(e - 1, 0):e + 2] = True
        if e < H:
            border[max(e - 1, 0):e + 2, :] = True
    naive_err = (naive != ref)[border].mean()
    blend_err_border = (blend != ref)[border].mean()
    blend_err = (blend != ref).mean()
    assert naive_err > 0.02, "the naive tiling should show seams for this test to mean anything"
    assert blend_err_border < 0.002 and blend_err < 0.002
    # and the classes are right where the blended map and the ground truth can be compared
    assert (blend == gt)[gt != 255].mean() > 0.9


def _gt_masks(blds):
    out = []
    for b in blds:
        m = np.zeros((H, W), np.uint8)
        cv2.fillPoly(m, [np.round(b.polygon()).astype(np.int32)], 1)
        out.append(m.astype(bool))
    return out


def _paste(inst):
    full = np.zeros((H, W), bool)
    full[inst.y0:inst.y0 + inst.mask.shape[0], inst.x0:inst.x0 + inst.mask.shape[1]] = inst.mask
    return full


def test_instances_on_window_borders_appear_once(scene, model, tmp_path):
    path, _, blds, transform = scene
    m, _ = model
    gj_path = str(tmp_path / "b.geojson")
    res = predict_scene(m, path, tile=TILE, overlap=OVERLAP, instances_path=gj_path, progress=False)
    kept = res["instances"]
    assert res["detections"] > len(kept)  # border objects were seen by several windows
    gts = _gt_masks(blds)
    matches = np.zeros((len(gts), len(kept)), int)
    for i, g in enumerate(gts):
        for j, k in enumerate(kept):
            p = _paste(k)
            matches[i, j] = (g & p).sum() / (g | p).sum() > 0.5
    assert (matches.sum(1) == 1).all(), f"each building once: {matches.sum(1)}"
    assert (matches.sum(0) == 1).all(), f"no duplicates or strays: {matches.sum(0)}"
    # without the duplicate removal the border buildings would come out several times
    assert len(merge_instances(_redetect(m, path), dedup_threshold=1.0)) > len(blds)
    # GeoJSON in the scene CRS: polygon centres land on the building centres
    gj = json.load(open(gj_path))
    assert len(gj["features"]) == len(blds) and gj["crs"]["properties"]["name"] == "EPSG:32610"
    inv = ~transform
    centres = []
    for f in gj["features"]:
        ring = np.array(f["geometry"]["coordinates"][0])
        px, py = apply_affine(inv, ring[:, 0], ring[:, 1])
        cross = px[:-1] * py[1:] - px[1:] * py[:-1]  # shoelace centroid of the pixel polygon
        cx = ((px[:-1] + px[1:]) * cross).sum() / (3 * cross.sum())
        cy = ((py[:-1] + py[1:]) * cross).sum() / (3 * cross.sum())
        centres.append((float(cx), float(cy)))
    for b in blds:
        d = min(np.hypot(cx - (b.cx + 0.5), cy - (b.cy + 0.5)) for cx, cy in centres)
        assert d < 1.0


def _redetect(m, path):
    """All window detections before merging (same windows as predict_scene)."""
    from d2geo.inference.instances import window_instances
    from rasterio.windows import Window

    dets = []
    for r, c in tile_windows(H, W, TILE, OVERLAP):
        s = read_geotiff(path, window=Window(c, r, TILE, TILE))
        out = m([{"image": torch.as_tensor(s.image), "height": TILE, "width": TILE}])[0]
        dets += window_instances(out["instances"], r, c, TILE, H, W, s.valid, 0.5, 2)
    return dets


def test_merge_prefers_the_untruncated_copy():
    whole = np.ones((6, 6), bool)
    cut = np.ones((6, 3), bool)
    a = SceneInstance(0, 0.9, np.array([10, 10, 13, 16.0]), 10, 10, cut, truncated=True)
    b = SceneInstance(0, 0.6, np.array([10, 10, 16, 16.0]), 10, 10, whole, truncated=False)
    c = SceneInstance(1, 0.6, np.array([10, 10, 16, 16.0]), 10, 10, whole, truncated=False)  # other class
    kept = merge_instances([a, b, c])
    assert len(kept) == 2 and kept[0] is b and c in kept


def test_geojson_in_epsg4326_and_cli_with_lazyconfig(scene, model, tmp_path):
    path, _, blds, _ = scene
    m, model_dir = model
    weights = str(tmp_path / "model.pth")
    torch.save({"model": m.state_dict()}, weights)
    cfg = tmp_path / "tiny_cfg.py"
    cfg.write_text(textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(model_dir)!r})
        from detectron2.config import LazyCall as L
        from d2geo_tiny_scene_model import TinySceneModel

        model = L(TinySceneModel)(num_classes=4)
    '''))
    tool = _tool()
    out_tif, out_gj = str(tmp_path / "cli.tif"), str(tmp_path / "cli.geojson")
    summary = tool.main(["--config-file", str(cfg), "--weights", weights, "--scene", path,
                         "--out-semseg", out_tif, "--out-geojson", out_gj, "--to-crs", "EPSG:4326",
                         "--tile", str(TILE), "--overlap", str(OVERLAP), "--object-names", "building",
                         "--no-progress"])
    assert len(summary["instances"]) == len(blds)
    direct = str(tmp_path / "direct.tif")
    predict_scene(m, path, tile=TILE, overlap=OVERLAP, semseg_path=direct, progress=False)
    with rasterio.open(out_tif) as a, rasterio.open(direct) as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))  # the checkpoint was loaded
    gj = json.load(open(out_gj))
    assert gj["crs"]["properties"]["name"] == "EPSG:4326"
    pts = np.array([p for f in gj["features"] for p in f["geometry"]["coordinates"][0]])
    assert np.all((-123.01 < pts[:, 0]) & (pts[:, 0] < -122.97)) and np.all((37.9 < pts[:, 1]) & (pts[:, 1] < 38.0))
    assert {f["properties"]["class"] for f in gj["features"]} == {"building"}


def test_nodata_in_scene_is_nodata_in_output(tmp_path, model):
    m, _ = model
    path = str(tmp_path / "nd.tif")
    write_scene(path, height=120, width=150, seed=2, buildings=[], nodata_prob=1.0)
    valid = read_geotiff(path).valid
    assert not valid.all()
    out = str(tmp_path / "nd_pred.tif")
    predict_scene(m, path, tile=64, overlap=16, semseg_path=out, progress=False)
    with rasterio.open(out) as src:
        pred = src.read(1)
    assert (pred[~valid] == 255).all() and (pred[valid] != 255).all()
    with pytest.raises(ValueError, match="nothing to write"):
        predict_scene(m, path)


def test_time_series_scene(tmp_path, model):
    """A scene given as one file per date reaches the model as (C, T, h, w) with T timestamps."""
    m, _ = model
    paths = []
    import datetime as dt

    for k, day in enumerate(("2020245", "2020275")):
        p = str(tmp_path / f"T10SEG.{day}.tif")
        when = dt.datetime(2020, 9, 1) + dt.timedelta(days=30 * k)
        write_scene(p, height=100, width=120, seed=5, buildings=[Building(60, 50, 8, 8)], when=when)
        paths.append(p)
    seen = []

    class MeanOverTime(torch.nn.Module):
        def forward(self, batched_inputs):
            seen.append((tuple(batched_inputs[0]["image"].shape), batched_inputs[0]["metadata"]["timestamps"]))
            return m([{**d, "image": d["image"].mean(1)} for d in batched_inputs])

    out = str(tmp_path / "ts.tif")
    res = predict_scene(MeanOverTime(), paths, tile=64, overlap=16, semseg_path=out,
                        instances_path=str(tmp_path / "ts.geojson"), progress=False, batch_size=3)
    assert seen[0][0] == (6, 2, 64, 64)
    assert torch.diff(seen[0][1]).item() == 30 * 86400
    assert len(res["instances"]) == 1
    single = str(tmp_path / "single.tif")
    predict_scene(m, paths[0], tile=64, overlap=16, semseg_path=single, progress=False)
    with rasterio.open(out) as a, rasterio.open(single) as b:
        assert (a.read(1) == b.read(1)).mean() > 0.99  # same scene content on both dates


from hypothesis import given, settings  # noqa: E402  (a test dependency: setup.py extras 'test')
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None, database=None)
@given(h=st.integers(1, 300), w=st.integers(1, 300), tile=st.integers(8, 128), frac=st.floats(0, 0.9))
def test_fuzz_windows_cover_every_pixel_with_positive_weight(h, w, tile, frac):
    overlap = min(int(tile * frac), tile - 1)
    wins = tile_windows(h, w, tile, overlap)
    wt = blend_weights(tile, overlap)
    wsum = np.zeros((h, w))
    for r, c in wins:
        assert 0 <= r and 0 <= c and (r + tile <= h or r == 0) and (c + tile <= w or c == 0)
        wsum[r:r + tile, c:c + tile] += wt[: h - r, : w - c]
    assert (wsum > 0).all()
    assert len(wins) == len(set(wins))


# -- the request is checked before any work; outputs are atomic and self-describing ------------
class _SemanticOnly(torch.nn.Module):
    """Looks like a detectron2 semantic segmentor (it has a sem_seg_head); counts its calls."""

    def __init__(self, inner, bands=6):
        super().__init__()
        self.inner = inner
        self.sem_seg_head = torch.nn.Identity()
        self.register_buffer("pixel_mean", torch.zeros(bands, 1, 1), persistent=False)
        self.calls = 0

    def forward(self, batched_inputs):
        self.calls += 1
        return [{"sem_seg": o["sem_seg"]} for o in self.inner(batched_inputs)]


def _files(folder):
    return sorted(os.listdir(folder))


def test_mismatched_request_is_refused_before_any_window_and_leaves_no_file(scene, model, tmp_path, caplog):
    from d2geo.inference import SceneRequestError

    path = scene[0]
    m, model_dir = model
    sem = _SemanticOnly(m)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SceneRequestError, match=r"predicts a class map \(--out-semseg\), not instances"):
        predict_scene(sem, path, tile=TILE, overlap=OVERLAP, semseg_path=str(out / "pred.tif"),
                      instances_path=str(out / "pred.geojson"), progress=False)
    # a band list of another length than the model's input
    with pytest.raises(SceneRequestError, match="the model takes 6 bands but the scene gives 3"):
        predict_scene(sem, path, tile=TILE, overlap=OVERLAP, semseg_path=str(out / "pred.tif"),
                      bands=["red", "green", "blue"], progress=False)
    with pytest.raises(GeoTiffError, match="band 'B99' is not in"):
        predict_scene(sem, path, semseg_path=str(out / "pred.tif"), bands=["B99"] * 6, progress=False)
    with pytest.raises(SceneRequestError, match="is the scene itself"):
        predict_scene(sem, path, semseg_path=path, progress=False)
    with pytest.raises(SceneRequestError, match="does not exist: create it first"):
        predict_scene(sem, path, semseg_path=str(out / "missing" / "pred.tif"), progress=False)
    assert sem.calls == 0 and _files(out) == []
    # the command line says the same, without a traceback and without a file
    weights = str(tmp_path / "sem.pth")
    torch.save({"model": sem.state_dict()}, weights)
    cfg = tmp_path / "sem_cfg.py"
    cfg.write_text(textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(model_dir)!r})
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        from detectron2.config import LazyCall as L
        from d2geo_tiny_scene_model import TinySceneModel
        from test_predict_scene import _SemanticOnly

        model = L(_SemanticOnly)(inner=L(TinySceneModel)())
    '''))
    tool = _tool()
    with pytest.raises(SystemExit, match="the class-map polygons output .* should end with .geojson"):
        tool.main(["--config-file", str(cfg), "--weights", weights, "--scene", path, "--out-semseg",
                   str(out / "pred.tif"), "--out-geojson", path, "--no-progress"])
    with pytest.raises(SystemExit, match="'lake' is not a class name"):
        tool.main(["--config-file", str(cfg), "--weights", weights, "--scene", path, "--out-geojson",
                   str(out / "pred.geojson"), "--polygon-classes", "lake", "--no-progress"])
    assert _files(out) == []
    # a missing checkpoint: one error line, no traceback, no file
    with pytest.raises(SystemExit, match=r"^predict_scene: error: weights not found: .*nope.pth"):
        tool.main(["--config-file", str(cfg), "--weights", str(tmp_path / "nope.pth"), "--scene", path,
                   "--out-semseg", str(out / "pred.tif"), "--no-progress"])
    assert _files(out) == []
    # a semantic model's --out-geojson: the class map's regions, pixel for pixel
    from rasterio.features import rasterize

    caplog.clear()
    with caplog.at_level(logging.INFO):
        summary = tool.main(["--config-file", str(cfg), "--weights", weights, "--scene", path, "--out-semseg",
                             str(out / "pred.tif"), "--out-geojson", str(out / "pred.geojson"), "--no-progress",
                             "--tile", str(TILE), "--overlap", str(OVERLAP), "--polygon-strip-rows", "17",
                             "--no-quicklook"])
    assert "instances" not in caplog.text and "detections" not in caplog.text  # a semantic model has none
    assert _files(out) == ["pred.geojson", "pred.tif", "pred.tif.aux.xml"]
    with rasterio.open(out / "pred.tif") as src:
        cm, t = src.read(1), src.transform
        names = json.loads(src.tags(1)["class_names"])
    gj = json.load(open(out / "pred.geojson"))
    assert summary["regions"] == len(gj["features"]) > 1
    back = np.full(cm.shape, 255, np.uint8)
    for f in gj["features"]:
        m = rasterize([f["geometry"]], out_shape=cm.shape, transform=t).astype(bool)
        assert (back[m] == 255).all()
        back[m] = f["properties"]["class_id"]
        assert f["properties"]["class"] == names[f["properties"]["class_id"]]
    assert np.array_equal(back, cm)
    assert max(np.ptp([y for _, y in f["geometry"]["coordinates"][0]]) for f in gj["features"]) > 17 * abs(t.e)
    # without --out-semseg the class map is a temporary file; specks and background dropped
    os.unlink(out / "pred.geojson")
    tool.main(["--config-file", str(cfg), "--weights", weights, "--scene", path, "--out-geojson",
               str(out / "regions.geojson"), "--no-progress", "--tile", str(TILE), "--overlap", str(OVERLAP),
               "--polygon-exclude", "0", "--min-area-m2", "500", "--no-quicklook"])
    assert _files(out) == ["pred.tif", "pred.tif.aux.xml", "regions.geojson"]
    kept = json.load(open(out / "regions.geojson"))["features"]
    assert kept and all(f["properties"]["class_id"] != 0 and f["properties"]["area_m2"] >= 500 for f in kept)


def _tool():
    from d2geo.cli import tool_module as load_tool

    return load_tool("predict_scene")


class _Interrupted(torch.nn.Module):
    def __init__(self, inner, after):
        super().__init__()
        self.inner, self.after, self.calls = inner, after, 0

    def forward(self, batched_inputs):
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt
        return self.inner(batched_inputs)


def test_interrupted_run_leaves_no_file_and_keeps_the_old_one(scene, model, tmp_path):
    path = scene[0]
    m, _ = model
    tif, gj = tmp_path / "pred.tif", tmp_path / "pred.geojson"
    with pytest.raises(KeyboardInterrupt):
        predict_scene(_Interrupted(m, after=3), path, tile=TILE, overlap=OVERLAP, semseg_path=str(tif),
                      instances_path=str(gj), progress=False)
    assert _files(tmp_path) == []  # neither the outputs nor their temporary files
    # an output that exists already stays as it was
    tif.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        predict_scene(_Interrupted(m, after=5), path, tile=TILE, overlap=OVERLAP, semseg_path=str(tif),
                      progress=False)
    assert _files(tmp_path) == ["pred.tif"] and tif.read_bytes() == b"old"
    # and a complete run replaces it
    predict_scene(m, path, tile=TILE, overlap=OVERLAP, semseg_path=str(tif), progress=False, quicklook=False)
    with rasterio.open(tif) as src:
        assert src.read(1).shape == (H, W)


def _gdal_category_names(path):
    """Category names as GDAL itself reads them (through rasterio's own libgdal)."""
    import ctypes
    import glob

    libs = glob.glob(os.path.join(os.path.dirname(os.path.dirname(rasterio.__file__)), "rasterio.libs", "libgdal*"))
    if not libs:
        pytest.skip("rasterio's libgdal is not where a wheel puts it")
    gdal = ctypes.CDLL(libs[0])
    gdal.GDALOpen.restype = ctypes.c_void_p
    gdal.GDALOpen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    gdal.GDALGetRasterBand.restype = ctypes.c_void_p
    gdal.GDALGetRasterBand.argtypes = [ctypes.c_void_p, ctypes.c_int]
    gdal.GDALGetRasterCategoryNames.restype = ctypes.POINTER(ctypes.c_char_p)
    gdal.GDALGetRasterCategoryNames.argtypes = [ctypes.c_void_p]
    gdal.GDALClose.argtypes = [ctypes.c_void_p]
    gdal.GDALGetProjectionRef.restype = ctypes.c_char_p
    gdal.GDALGetProjectionRef.argtypes = [ctypes.c_void_p]
    gdal.GDALAllRegister()
    ds = gdal.GDALOpen(str(path).encode(), 0)
    assert ds
    try:
        # a GIS reads the georeferencing first; GTiff loads the .aux.xml sidecar with it
        assert b"UTM zone 10N" in gdal.GDALGetProjectionRef(ds)
        names = gdal.GDALGetRasterCategoryNames(gdal.GDALGetRasterBand(ds, 1))
        out = []
        while names and names[len(out)] is not None:
            out.append(names[len(out)].decode())
        return out
    finally:
        gdal.GDALClose(ds)


def test_class_map_carries_class_names_and_a_colour_table(scene, model, tmp_path):
    from PIL import Image

    from d2geo.data.render import class_colours
    from d2geo.data.synthetic.generator import SEMSEG_CLASSES

    path = scene[0]
    m, _ = model
    tif = tmp_path / "pred.tif"
    res = predict_scene(m, path, tile=TILE, overlap=OVERLAP, semseg_path=str(tif), progress=False,
                        class_names=list(SEMSEG_CLASSES))
    names = list(SEMSEG_CLASSES)
    with rasterio.open(tif) as src:
        cmap = src.colormap(1)
        assert [cmap[i][:3] for i in range(4)] == [tuple(c) for c in class_colours(names)]
        assert cmap[255][3] == 0  # no data is transparent
        assert json.loads(src.tags(1)["class_names"]) == names
        assert src.colorinterp[0] == rasterio.enums.ColorInterp.palette
    assert _gdal_category_names(tif) == names
    assert set(_files(tmp_path)) == {"pred.tif", "pred.tif.aux.xml", "pred.tif.png"}
    # the quick-look: scene and class map side by side, the class colours present
    assert res["quicklooks"] == [str(tif) + ".png"]
    png = np.asarray(Image.open(str(tif) + ".png").convert("RGB"))
    assert png.shape[1] > 2 * W
    for c in class_colours(names)[1:3]:  # water and field are drawn at full colour in the legend
        assert (np.abs(png.astype(int) - np.array(c)).sum(-1) == 0).any()


SLOW_MODEL = textwrap.dedent('''
    import time
    import torch


    class SlowSemantic(torch.nn.Module):
        """Class 0 everywhere, a second a forward: a run that can be killed halfway."""

        def __init__(self):
            super().__init__()
            self.sem_seg_head = torch.nn.Identity()
            self.register_buffer("pixel_mean", torch.zeros(6, 1, 1), persistent=False)

        def forward(self, batched_inputs):
            time.sleep(1.0)
            return [{"sem_seg": torch.zeros(2, d["height"], d["width"])} for d in batched_inputs]
''')


def test_sigterm_removes_the_temporary_files(scene, tmp_path):
    """A predict_scene run killed with SIGTERM (a scheduler's stop) leaves no hidden temporary file."""
    import signal
    import subprocess
    import time

    (tmp_path / "d2geo_slow_model.py").write_text(SLOW_MODEL)
    cfg = tmp_path / "slow_cfg.py"
    cfg.write_text(textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from detectron2.config import LazyCall as L
        from d2geo_slow_model import SlowSemantic

        model = L(SlowSemantic)()
    '''))
    weights = tmp_path / "slow.pth"
    torch.save({"model": {}}, weights)
    out = tmp_path / "out"
    out.mkdir()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=root)
    proc = subprocess.Popen([sys.executable, os.path.join(root, "tools", "predict_scene.py"), "--config-file",
                             str(cfg), "--weights", str(weights), "--scene", scene[0], "--out-semseg",
                             str(out / "pred.tif"), "--tile", "64", "--overlap", "0", "--no-progress"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not any(".d2geo-tmp" in f for f in _files(out)):
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    time.sleep(0.5)  # inside the window loop, the scratch class map open
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 143
    assert _files(out) == []  # neither the output nor a temporary file
