"""Region-scale inference: COG outputs, mosaic, STAC and list inputs, overlaps across scenes
and CRSs, one vs two processes, kill and resume (tools/predict_region.py, d2geo.inference.region)."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")
rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402
from rasterio.warp import transform as warp  # noqa: E402

from d2geo.inference import RegionOptions, SceneRequestError, predict_scene  # noqa: E402
from d2geo.inference.region import (  # noqa: E402
    STATE_DIR, RegionRequestError, collect_scenes, predict_region, shard_scenes,
)
from d2geo.data.synthetic.generator import HLS_BANDS, render_tile, write_geotiff  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEG = os.path.join(ROOT, "configs", "quickstart", "semantic_fpn_tiny.py")
DET = os.path.join(ROOT, "configs", "quickstart", "mask_rcnn_tiny.py")
TOOL = os.path.join(ROOT, "tools", "predict_region.py")
TILE, OVERLAP, BLOCK = 96, 32, 128
WHEN = dt.datetime(2020, 9, 1, 18, 30)
# common flags of every run of the tool in these tests
FLAGS = ["--tile", str(TILE), "--overlap", str(OVERLAP), "--cog-blocksize", str(BLOCK), "--no-progress",
         "--num-workers", "0"]


def _canvas(seed: int, rows: int, cols: int, tile: int = 64) -> np.ndarray:
    """A mosaic of the generator's tiles, (6, rows*tile, cols*tile) reflectance."""
    rng = np.random.default_rng(seed)
    grid = [[render_tile(rng, tile, tile, cloud_prob=0.0, nodata_prob=0.0)[0][0] for _ in range(cols)]
            for _ in range(rows)]
    return np.concatenate([np.concatenate(r, axis=2) for r in grid], axis=1)


def write_region(folder) -> dict:
    """Three scenes: a and b (UTM 10N) show the same ground and overlap by 80 px; c (UTM 11N)
    lies east of b, across the zone border, overlapping b's east end by ~30 px."""
    os.makedirs(folder, exist_ok=True)
    canvas = _canvas(0, 3, 5)  # 192 x 320
    ta = from_origin(700000, 4200000, 10, 10)
    tb = from_origin(701200, 4200000, 10, 10)
    paths = {"a": os.path.join(folder, "a_zone10.tif"), "b": os.path.join(folder, "b_zone10.tif"),
             "c": os.path.join(folder, "c_zone11.tif")}
    write_geotiff(paths["a"], canvas[:, :, :200], transform=ta, when=WHEN)
    write_geotiff(paths["b"], canvas[:, :, 120:], transform=tb, when=WHEN)
    # c's top-left: 300 m west of b's east edge, 200 m south of its top, in zone 11
    (x,), (y,) = warp("EPSG:32610", "EPSG:32611", [701200 + 2000 - 300], [4200000 - 200])
    tc = from_origin(round(x), round(y), 10, 10)
    write_geotiff(paths["c"], _canvas(1, 3, 3)[:, :150, :170], transform=tc, crs="EPSG:32611", when=WHEN)
    return paths


@pytest.fixture(scope="module")
def region(tmp_path_factory):
    return write_region(str(tmp_path_factory.mktemp("region") / "scenes"))


def _weights(cfg_path, path):
    from detectron2.config import LazyConfig, instantiate

    torch.manual_seed(0)
    model = instantiate(LazyConfig.load(cfg_path).model)  # random weights
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def seg_weights(tmp_path_factory):
    return _weights(SEG, str(tmp_path_factory.mktemp("w") / "seg.pth"))


@pytest.fixture(scope="module")
def seg_model(seg_weights):
    from d2geo.tools_support import load_model

    return load_model(SEG, seg_weights)[0]


def _tool():
    from d2geo.cli import tool_module as load_tool

    return load_tool("predict_region")


def _run_cli(args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, TOOL, *args], env=env, capture_output=True, text=True, **kw)


def _manifest_outputs(out_dir) -> dict:
    with open(os.path.join(out_dir, "manifest.json")) as f:
        m = json.load(f)
    assert not m["missing"]
    return {sid: e["outputs"] for sid, e in m["scenes"].items()}


def _assert_same_outputs(out_dir, ref_dir):
    """Class maps, vectors and their manifest entries equal to the byte; class scores (float32,
    which batch size and thread count move by ~1e-6) equal within 1e-5."""
    got, ref = _manifest_outputs(out_dir), _manifest_outputs(ref_dir)
    assert {s: sorted(o) for s, o in got.items()} == {s: sorted(o) for s, o in ref.items()}
    for sid, outputs in ref.items():
        for name, digest in outputs.items():
            if name.endswith(".scores.tif"):
                with rasterio.open(os.path.join(out_dir, name)) as a, rasterio.open(os.path.join(ref_dir, name)) as b:
                    np.testing.assert_allclose(a.read(), b.read(), rtol=0, atol=1e-5, equal_nan=True)
            else:
                assert got[sid][name] == digest, f"{name} differs"


@pytest.fixture(scope="module")
def seg_run(region, seg_weights, tmp_path_factory):
    """One uninterrupted single-process run with class scores, the reference of the tests."""
    out = str(tmp_path_factory.mktemp("one"))
    summary = _tool().main(["--config-file", SEG, "--weights", seg_weights, "--scenes", os.path.dirname(region["a"]),
                            "--output-dir", out, "--probabilities", *FLAGS])
    return out, summary


def test_outputs_are_valid_cogs_in_each_scenes_crs_with_overviews(region, seg_run):
    out, summary = seg_run
    assert sorted(summary["scenes"]) == ["a_zone10", "b_zone10", "c_zone11"]
    for key, sid in (("a", "a_zone10"), ("b", "b_zone10"), ("c", "c_zone11")):
        with rasterio.open(region[key]) as src:
            crs, transform, shape = src.crs, src.transform, src.shape
        for name, count, dtype in ((f"{sid}.tif", 1, "uint8"), (f"{sid}.scores.tif", 4, "float32")):
            with rasterio.open(os.path.join(out, name)) as dst:
                assert dst.crs == crs and dst.transform == transform and dst.shape == shape
                assert dst.count == count and dst.dtypes[0] == dtype
                # the COG layout: tiled, compressed, overviews, GDAL's own LAYOUT=COG mark
                assert dst.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
                assert dst.profile["tiled"] and dst.block_shapes[0] == (BLOCK, BLOCK)
                assert dst.compression.name.lower() == "deflate"
                assert dst.overviews(1) == [2]  # until the image fits one 128 px tile
                assert len(dst.read(1, out_shape=(shape[0] // 2, shape[1] // 2))) > 0
    with rasterio.open(os.path.join(out, "c_zone11.tif")) as dst:
        assert dst.crs.to_epsg() == 32611
        assert json.loads(dst.tags(1)["class_names"]) == ["background", "water", "field", "building"]
        assert dst.colormap(1)[1][:3] != dst.colormap(1)[2][:3]
    with rasterio.open(os.path.join(out, "a_zone10.scores.tif")) as dst:
        p = dst.read()
    ok = ~np.isnan(p[0])
    np.testing.assert_allclose(p[:, ok].sum(0), 1.0, atol=1e-5)  # softmax per pixel


def test_a_scene_without_neighbours_matches_predict_scene(region, seg_model, tmp_path):
    """Alone (no overlap), a scene's class map is predict_scene's (float32 both)."""
    out = tmp_path / "alone"
    out.mkdir()
    opts = RegionOptions(tile=TILE, overlap=OVERLAP, batch_size=3, num_workers=1, amp="off", cog_blocksize=BLOCK)
    predict_region(seg_model, [region["c"]], str(out), opts, progress=False)
    predict_scene(seg_model, region["c"], tile=TILE, overlap=OVERLAP, semseg_path=str(tmp_path / "ref.tif"),
                  progress=False, quicklook=False)
    with rasterio.open(out / "c_zone11.tif") as a, rasterio.open(tmp_path / "ref.tif") as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
    # column strips (memory bound for wide scenes): same windows inside each strip, so the
    # labels agree wherever the strips' windows see the same context
    out2 = tmp_path / "strips"
    out2.mkdir()
    opts.max_strip_width = 100  # two strips of 85 px
    predict_region(seg_model, [region["c"]], str(out2), opts, progress=False)
    with rasterio.open(out / "c_zone11.tif") as a, rasterio.open(out2 / "c_zone11.tif") as b:
        la, lb = a.read(1), b.read(1)
    assert (lb != 255).all() and (la == lb).mean() > 0.97
    # bfloat16 autocast (forced; "auto" uses it where the CPU or GPU computes bf16 natively)
    from d2geo.precision import autocast

    assert not isinstance(autocast("cpu", "off"), torch.autocast)
    assert isinstance(autocast("cpu", "bf16"), torch.autocast)
    out3 = tmp_path / "bf16"
    out3.mkdir()
    opts.max_strip_width, opts.amp = 4096, "bf16"
    predict_region(seg_model, [region["c"]], str(out3), opts, progress=False)
    with rasterio.open(out3 / "c_zone11.tif") as b:
        assert (b.read(1) == la).mean() > 0.95


def test_overlapping_scenes_predict_each_point_once_and_the_mosaic_shows_all(region, seg_run):
    out, _ = seg_run
    with rasterio.open(os.path.join(out, "a_zone10.tif")) as a, rasterio.open(os.path.join(out, "b_zone10.tif")) as b:
        la, lb = a.read(1), b.read(1)
    # a's columns 120..199 are b's 0..79: in the overlap exactly one of them predicts
    ova, ovb = la[:, 120:] != 255, lb[:, :80] != 255
    assert (ova ^ ovb).all()
    # the owner is the scene the point is farther inside: a keeps its columns < 160
    mid = slice(60, 130)  # rows far from the top and bottom edges (ties go to the first scene)
    assert ova[mid, :40].all() and not ova[mid, 40:].any()
    assert (la[:, :120] != 255).all() and (lb[:, 80:] != 255).sum() > 0
    # c (zone 11) overlaps b's east end: there only one of them predicts, in either CRS
    with rasterio.open(os.path.join(out, "c_zone11.tif")) as c:
        lc = c.read(1)
        assert (lc == 255).any() and (lc != 255).mean() > 0.8
    # mosaic.vrt (zone 10): a and b where they own the ground, c warped into zone 10
    with rasterio.open(os.path.join(out, "mosaic.vrt")) as m:
        assert m.crs.to_epsg() == 32610 and m.transform.a == 10 and m.transform.c == 700000
        mos = m.read(1)
        assert m.colormap(1)[0] is not None
    np.testing.assert_array_equal(mos[:192, :120], la[:, :120])
    both = np.where(la[:, 120:] != 255, la[:, 120:], lb[:, :80])
    np.testing.assert_array_equal(mos[:192, 120:200], both)
    # c, warped to zone 10 (nearest neighbour keeps about its pixel count)
    assert abs((mos != 255).sum() - (la != 255).sum() - (lb != 255).sum() - (lc != 255).sum()) < 0.02 * lc.size
    assert os.path.isfile(os.path.join(out, "c_zone11.warped.vrt"))


def test_two_processes_write_exactly_what_one_process_writes(region, seg_weights, seg_run, tmp_path):
    ref, _ = seg_run
    out = str(tmp_path / "two")
    r = _run_cli(["--config-file", SEG, "--weights", seg_weights, "--scenes", os.path.dirname(region["a"]),
                  "--output-dir", out, "--probabilities", "--num-processes", "2", *FLAGS], timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_same_outputs(out, ref)  # sha256 of every output file but the float scores
    # both ranks worked: the scenes were dealt largest first, round-robin
    scenes = collect_scenes([os.path.dirname(region["a"])])
    assert [s.id for s in shard_scenes(scenes, 1, 2)] == ["b_zone10"]
    with open(os.path.join(out, "mosaic.vrt")) as a, open(os.path.join(ref, "mosaic.vrt")) as b:
        assert a.read() == b.read()


def test_a_run_killed_after_its_first_scene_resumes_to_the_uninterrupted_outputs(region, seg_weights, seg_run,
                                                                                 tmp_path):
    ref, _ = seg_run
    out = str(tmp_path / "killed")
    os.makedirs(out)
    args = ["--config-file", SEG, "--weights", seg_weights, "--scenes", os.path.dirname(region["a"]),
            "--output-dir", out, "--probabilities", *FLAGS[:-2], "--num-workers", "0", "--batch-size", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, TOOL, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    done_dir = os.path.join(out, STATE_DIR, "done")
    deadline = time.time() + 240

    def finished_scenes():  # records renamed into place (not a record's temporary file, being written)
        return [f for f in os.listdir(done_dir) if not f.startswith(".")] if os.path.isdir(done_dir) else []

    while time.time() < deadline and proc.poll() is None:
        if finished_scenes():
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = finished_scenes()
    assert 1 <= len(finished) < 3, "the run should be killed between its first and its last scene"
    assert not os.path.exists(os.path.join(out, "mosaic.vrt"))
    summary = _tool().main(args)
    assert sorted(summary["skipped"]) == sorted(f[:-5] for f in finished)  # not predicted again
    # batch 1 on one thread here, batch 4 on the default threads in seg_run: the same class maps,
    # scores equal within float32 noise (exact hashes failed on another CPU, issue 26)
    _assert_same_outputs(out, ref)
    leftovers = [f for _, _, fs in os.walk(out) for f in fs if ".d2geo-tmp" in f]
    assert leftovers == []
    # a changed input invalidates its scene only
    entry = json.load(open(os.path.join(done_dir, "c_zone11.json")))
    assert set(entry) >= {"inputs", "model", "outputs"} and len(entry["model"]) == 64


def test_stac_items_and_a_text_list_give_the_same_class_map(region, seg_model, tmp_path):
    """STAC items whose assets are one single-band file per band (named by eo:bands) and a
    text list with a comment and a relative path predict as the multi-band file does."""
    with rasterio.open(region["c"]) as src:
        data, prof = src.read(), src.profile
    items = tmp_path / "items"
    items.mkdir()
    assets = {}
    for i, band in enumerate(HLS_BANDS):
        prof.update(count=1)
        with rasterio.open(items / f"c_{band}.tif", "w", **prof) as dst:
            dst.write(data[i:i + 1])
        assets[band] = {"href": f"c_{band}.tif", "type": "image/tiff; application=geotiff", "roles": ["data"],
                        "eo:bands": [{"name": band}], "raster:bands": [{"scale": 1e-4, "offset": 0.0}]}
    assets["thumbnail"] = {"href": "thumb.png", "type": "image/png", "roles": ["thumbnail"]}
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "c_stac", "geometry": None,
            "properties": {"datetime": "2020-09-01T18:30:00Z"}, "assets": assets}
    (items / "c_stac.json").write_text(json.dumps(item))
    (tmp_path / "list.txt").write_text("# one scene a line\nitems/c_stac.json\n")
    out = tmp_path / "out"
    out.mkdir()
    opts = RegionOptions(tile=TILE, overlap=OVERLAP, amp="off", num_workers=0, cog_blocksize=BLOCK,
                         bands=list(HLS_BANDS))
    predict_region(seg_model, [str(tmp_path / "list.txt")], str(out), opts, progress=False)
    ref = tmp_path / "ref"
    ref.mkdir()
    predict_region(seg_model, [region["c"]], str(ref), opts, progress=False)
    with rasterio.open(out / "c_stac.tif") as a, rasterio.open(ref / "c_zone11.tif") as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
        assert a.crs == b.crs and a.transform == b.transform
    vrt = out / STATE_DIR / "stac" / "c_stac.vrt"
    from d2geo.data.geotiff import read_geotiff

    s = read_geotiff(str(vrt))
    assert s.band_names == HLS_BANDS
    assert s.metadata["timestamps"][0] == dt.datetime(2020, 9, 1, 18, 30, tzinfo=dt.timezone.utc).timestamp()


@pytest.mark.filterwarnings('ignore::rasterio.errors.NotGeoreferencedWarning')
def test_bad_region_requests_name_the_fix_and_write_nothing(region, seg_model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    opts = RegionOptions(tile=TILE, overlap=OVERLAP, num_workers=0)
    item = {"type": "Feature", "id": "x", "properties": {}, "assets": {
        "red": {"href": "https://example.com/red.tif", "type": "image/tiff", "roles": ["data"]}}}
    (tmp_path / "remote.json").write_text(json.dumps(item))
    with pytest.raises(RegionRequestError, match="is remote .* download the assets"):
        predict_region(seg_model, [str(tmp_path / "remote.json")], str(out), opts, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegionRequestError, match="holds no raster files"):
        predict_region(seg_model, [str(tmp_path / "empty")], str(out), opts, progress=False)
    with pytest.raises(RegionRequestError, match="write the same outputs"):
        predict_region(seg_model, [region["a"], region["a"]], str(out), opts, progress=False)
    with pytest.raises(RegionRequestError, match="does not exist: create it first"):
        predict_region(seg_model, [region["a"]], str(tmp_path / "missing"), opts, progress=False)
    with pytest.raises(SceneRequestError, match="the model takes 6 bands but the scene gives 3"):
        predict_region(seg_model, [region["a"]], str(out), RegionOptions(bands=["red", "green", "blue"]),
                       progress=False)
    nocrs = tmp_path / "nocrs.tif"
    with rasterio.open(nocrs, "w", driver="GTiff", width=8, height=8, count=6, dtype="int16") as dst:
        dst.write(np.zeros((6, 8, 8), np.int16))
    with pytest.raises(RegionRequestError, match="has no CRS"):
        predict_region(seg_model, [str(nocrs)], str(out), opts, progress=False)
    # scenes on two continents: no projected mosaic CRS holds both
    far = tmp_path / "far.tif"
    write_geotiff(str(far), np.full((6, 16, 16), 0.1), transform=from_origin(500000, 9000000, 10, 10),
                  crs="EPSG:32736", when=WHEN)
    with pytest.raises(RegionRequestError, match="too far apart .* --mosaic-crs EPSG:4326"):
        predict_region(seg_model, [region["a"], str(far)], str(out), opts, progress=False)
    assert sorted(os.listdir(out)) == [STATE_DIR] and os.listdir(out / STATE_DIR / "done") == []


@pytest.mark.filterwarnings('ignore:Geometry is in a geographic CRS:UserWarning')
def test_instance_models_write_geojson_and_geoparquet(region, tmp_path):
    gpd = pytest.importorskip("geopandas", reason="GeoParquet needs d2geo[region] (geopandas, pyarrow)")
    weights = _weights(DET, str(tmp_path / "det.pth"))
    out = str(tmp_path / "det")
    summary = _tool().main(["--config-file", DET, "--weights", weights, "--scenes", region["c"], "--output-dir",
                            out, "--score-threshold", "0.52", "--to-crs", "EPSG:4326", "--batch-size", "4",
                            *FLAGS])
    assert summary["done"] == ["c_zone11"]
    with pytest.raises(SystemExit, match="predicts no sem_seg: drop --polygons"):
        _tool().main(["--config-file", DET, "--weights", weights, "--scenes", region["c"], "--output-dir",
                      str(tmp_path / "poly"), "--polygons", *FLAGS])
    gj = json.load(open(os.path.join(out, "c_zone11.geojson")))
    gdf = gpd.read_parquet(os.path.join(out, "c_zone11.parquet"))
    assert len(gj["features"]) == len(gdf) > 0
    assert gdf.crs.to_epsg() == 4326 and gj["crs"]["properties"]["name"] == "EPSG:4326"
    assert set(gdf["scene"]) == {"c_zone11"} and (gdf["score"] >= 0.52).all()
    lon, lat = gdf.geometry.centroid.x, gdf.geometry.centroid.y
    (x,), (y,) = warp("EPSG:4326", "EPSG:32611", [float(lon.mean())], [float(lat.mean())])
    with rasterio.open(region["c"]) as src:
        b = src.bounds
    assert b.left < x < b.right and b.bottom < y < b.top


def test_benchmark_compares_with_terratorchs_tiled_inference_on_the_same_windows(region, seg_model, seg_run):
    """benchmarks/region.py's reference: terratorch's tiled_inference from the wheel, on the
    same model and windows, labels a lone scene almost as predict_region does (the two blend
    the overlaps with different weights; the model ran under bf16 autocast in seg_run)."""
    from testkit.upstream import UpstreamUnavailable

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import region as bench

        ti = bench.terratorch_tiled_inference()
    except UpstreamUnavailable as e:  # the wheel cannot be had (offline, no cache)
        pytest.skip(str(e))
    finally:
        sys.path.remove(os.path.join(ROOT, "benchmarks"))
    from d2geo.data.geotiff import read_geotiff

    s = read_geotiff(region["c"])

    def forward(x):
        outs = seg_model([{"image": xi, "height": xi.shape[-2], "width": xi.shape[-1]} for xi in x])
        return torch.stack([o["sem_seg"] for o in outs])

    with torch.no_grad():
        logits = ti.tiled_inference(forward, torch.as_tensor(s.image)[None], crop=TILE, stride=TILE - OVERLAP,
                                    delta=0, batch_size=4, padding=False, device="cpu")
    theirs = logits[0].argmax(0).numpy()
    with rasterio.open(os.path.join(seg_run[0], "c_zone11.tif")) as src:
        ours = src.read(1)
    mine = ours != 255
    assert theirs.shape == ours.shape and (theirs[mine] == ours[mine]).mean() > 0.9


def test_semantic_polygons_equal_the_class_maps_regions_once_per_ground_point(region, seg_weights, seg_run,
                                                                              tmp_path, caplog):
    """--polygons on the three scenes (strips of 40 rows: every region taller than that is cut and
    joined): the polygons rasterize back to each scene's class map, and are in the manifest."""
    gpd = pytest.importorskip("geopandas", reason="GeoParquet needs d2geo[region] (geopandas, pyarrow)")
    from rasterio.features import rasterize
    from scipy import ndimage

    out = str(tmp_path / "poly")
    with caplog.at_level(logging.INFO):
        summary = _tool().main(["--config-file", SEG, "--weights", seg_weights, "--scenes",
                                os.path.dirname(region["a"]), "--output-dir", out, "--polygons",
                                "--polygon-strip-rows", "40", "--probabilities", *FLAGS])
    assert sorted(summary["done"]) == ["a_zone10", "b_zone10", "c_zone11"]
    assert "polygonized the class map of a_zone10" in caplog.text
    assert ".d2geo-tmp" not in caplog.text  # the log names scenes, not hidden temporary files
    ref_out, _ = seg_run
    outputs = _manifest_outputs(out)
    for sid in summary["scenes"]:
        assert {f"{sid}.regions.geojson", f"{sid}.regions.parquet"} <= set(outputs[sid])
        with rasterio.open(os.path.join(out, sid + ".tif")) as src:
            cm, t, crs = src.read(1), src.transform, src.crs
            names = json.loads(src.tags(1)["class_names"])
        with rasterio.open(os.path.join(ref_out, sid + ".tif")) as src:  # polygons change no raster
            assert np.array_equal(src.read(1), cm)
        gj = json.load(open(os.path.join(out, sid + ".regions.geojson")))
        back = np.full(cm.shape, 255, np.uint8)
        for f in gj["features"]:
            m = rasterize([f["geometry"]], out_shape=cm.shape, transform=t).astype(bool)
            assert (back[m] == 255).all()
            back[m] = f["properties"]["class_id"]
            assert f["properties"]["class"] == names[f["properties"]["class_id"]]
            assert f["properties"]["scene"] == sid
        assert np.array_equal(back, cm)  # no-data (incl. pixels another scene owns) stays out
        assert len(gj["features"]) == sum(ndimage.label(cm == c)[1] for c in range(len(names)))
        if sid == "a_zone10":  # regions cut by the 40-row strip seams came out whole
            rows = [(lambda ys: (max(ys) - min(ys)) / abs(t.e))([y for _, y in f["geometry"]["coordinates"][0]])
                    for f in gj["features"]]
            assert max(rows) > 40 and (cm == 255).any()  # b owns part of a
        gdf = gpd.read_parquet(os.path.join(out, sid + ".regions.parquet"))
        assert len(gdf) == len(gj["features"]) and gdf.crs == crs
        assert list(gdf["class_id"]) == [f["properties"]["class_id"] for f in gj["features"]]
    # class selection, specks and the output CRS
    sel = str(tmp_path / "sel")
    _tool().main(["--config-file", SEG, "--weights", seg_weights, "--scenes", region["a"], "--output-dir", sel,
                  "--polygons", "--polygon-exclude", "0", "--min-area-m2", "2000", "--to-crs", "EPSG:4326",
                  *FLAGS])
    gdf = gpd.read_parquet(os.path.join(sel, "a_zone10.regions.parquet"))
    assert gdf.crs.to_epsg() == 4326 and len(gdf) > 0
    assert 0 not in set(gdf["class_id"]) and (gdf["area_m2"] >= 2000).all()
    with pytest.raises(SystemExit, match="'lake' is not a class name"):
        _tool().main(["--config-file", SEG, "--weights", seg_weights, "--scenes", region["a"], "--output-dir",
                      str(tmp_path / "bad"), "--polygons", "--polygon-classes", "lake", *FLAGS])
    with pytest.raises(SystemExit, match="min_area_m2=-1.0 is negative"):
        _tool().main(["--config-file", SEG, "--weights", seg_weights, "--scenes", region["a"], "--output-dir",
                      str(tmp_path / "bad"), "--polygons", "--min-area-m2", "-1", *FLAGS])
    assert not os.path.exists(tmp_path / "bad")  # refused before the output folder was made


def test_a_missing_weights_file_is_one_error_line_and_leaves_no_folder(region, tmp_path):
    out = tmp_path / "new"
    with pytest.raises(SystemExit, match=r"^predict_region: error: weights not found: .*missing.pth"):
        _tool().main(["--config-file", SEG, "--weights", str(tmp_path / "missing.pth"), "--scenes", region["c"],
                      "--output-dir", str(out), *FLAGS])
    assert not out.exists()  # a SystemExit with a message: python prints that one line, no traceback
