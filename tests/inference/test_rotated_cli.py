"""The rotated quickstart's model through the predict tools: ``predict_scene`` with
``configs/quickstart/rotated_tiny.py`` and a checkpoint writes valid GeoJSON and GeoParquet
of rotated polygons (lon/lat with ``--to-crs``) inside the scene, and the bad requests of a
rotated model are refused with the fix."""
import json
import os

import numpy as np
import pytest

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")
pytest.importorskip("rasterio")
pytest.importorskip("geopandas")
pytest.importorskip("pyarrow")
shapely = pytest.importorskip("shapely")

import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "quickstart", "rotated_tiny.py")
MASK_RCNN = os.path.join(ROOT, "configs", "quickstart", "mask_rcnn_tiny.py")


@pytest.fixture(scope="module")
def rotated_run(tmp_path_factory):
    """A random-weight checkpoint of the rotated quickstart's model and a synthetic scene of
    ships and vehicles (160 px: four windows of 96 px)."""
    from detectron2.config import LazyConfig, instantiate

    from d2geo.data.synthetic.rotated import write_rotated_scene

    root = tmp_path_factory.mktemp("rotcli")
    cfg = LazyConfig.load(CONFIG)
    torch.manual_seed(0)
    weights = str(root / "model.pth")
    torch.save({"model": instantiate(cfg.model).state_dict()}, weights)
    scene = str(root / "scene.tif")
    write_rotated_scene(scene, size=160, max_objects=8, seed=5)
    return weights, scene, root


def _tool():
    from d2geo.cli import tool_module

    return tool_module("predict_scene")


def test_predict_scene_cli_with_the_rotated_quickstart_writes_geojson_and_geoparquet(rotated_run, tmp_path):
    import geopandas as gpd
    import rasterio
    from rasterio.warp import transform_bounds

    weights, scene, _ = rotated_run
    gj, pq = str(tmp_path / "objects.geojson"), str(tmp_path / "objects.parquet")
    summary = _tool().main(["--config-file", CONFIG, "--weights", weights, "--scene", scene, "--out-geojson", gj,
                            "--out-geoparquet", pq, "--to-crs", "EPSG:4326", "--rotated-boxes", "--tile", "96",
                            "--overlap", "32", "--score-threshold", "0.05", "--no-progress"])
    assert summary["windows"] == 4
    fc = json.load(open(gj))
    assert fc["type"] == "FeatureCollection" and fc["crs"]["properties"]["name"] == "EPSG:4326"
    feats = fc["features"]
    assert len(feats) == len(summary["instances"]) > 0  # random weights still give boxes over 0.05
    with rasterio.open(scene) as src:
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        pad = 40 * abs(src.transform.a) / 111_000  # a box may reach past the scene edge by half its length
    for f in feats:
        ring = f["geometry"]["coordinates"][0]
        assert f["geometry"]["type"] == "Polygon" and len(ring) == 5 and ring[0] == ring[-1]
        poly = shapely.geometry.shape(f["geometry"])
        assert poly.is_valid and poly.area > 0 and poly.exterior.is_ccw
        x0, y0, x1, y1 = poly.bounds
        assert west - pad < x0 and x1 < east + pad and south - pad < y0 and y1 < north + pad
        p = f["properties"]
        assert p["class"] in ("ship", "vehicle") and p["class"] == ("ship", "vehicle")[p["category_id"]]
        assert 0.05 <= p["score"] <= 1 and p["w"] > 0 and p["h"] > 0
    df = gpd.read_parquet(pq)
    assert df.crs.to_epsg() == 4326 and len(df) == len(feats)
    assert sorted(df["score"].round(5)) == sorted(f["properties"]["score"] for f in feats)
    got = shapely.union_all(df.geometry.values)
    want = shapely.union_all([shapely.geometry.shape(f["geometry"]) for f in feats])
    assert got.symmetric_difference(want).area < 1e-9 * max(want.area, 1e-12)


def test_a_rotated_model_asked_for_a_class_map_is_refused_by_the_cli(rotated_run, tmp_path):
    weights, scene, _ = rotated_run
    with pytest.raises(SystemExit, match="rotated detector .*no class map; drop --out-semseg"):
        _tool().main(["--config-file", CONFIG, "--weights", weights, "--scene", scene,
                      "--out-semseg", str(tmp_path / "classes.tif"), "--no-progress"])
    assert not list(tmp_path.iterdir())


def test_rotated_boxes_asked_of_the_axis_aligned_quickstart_are_refused_by_the_cli(rotated_run, tmp_path):
    _, scene, root = rotated_run
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.load(MASK_RCNN)
    weights = str(root / "mask_rcnn.pth")
    torch.save({"model": instantiate(cfg.model).state_dict()}, weights)
    with pytest.raises(SystemExit, match="axis-aligned boxes .*drop --rotated-boxes, or use a rotated R-CNN config"):
        _tool().main(["--config-file", MASK_RCNN, "--weights", weights, "--scene",
                      scene, "--out-geojson", str(tmp_path / "o.geojson"), "--rotated-boxes", "--no-progress"])
    assert not list(tmp_path.iterdir())


def test_the_written_polygons_drawn_back_over_the_scene_land_on_the_detected_boxes(rotated_run, tmp_path):
    import rasterio

    from d2geo.data.visualize import vector_outlines
    from d2geo.inference.rotated import rotated_corners

    weights, scene, _ = rotated_run
    gj = str(tmp_path / "objects.geojson")
    summary = _tool().main(["--config-file", CONFIG, "--weights", weights, "--scene", scene, "--out-geojson", gj,
                            "--to-crs", "EPSG:4326", "--tile", "96", "--overlap", "32", "--score-threshold", "0.05",
                            "--no-progress", "--no-quicklook"])
    dets = summary["instances"]
    with rasterio.open(scene) as src:
        outlines, names = vector_outlines(gj, src.transform, src.crs)
    assert len(outlines) == len(dets) > 0 and set(names.values()) <= {"ship", "vehicle"}
    # lon/lat back into the scene's pixels: the detections' corners, to 1e-4 px
    for o, corners, cls in zip(outlines, rotated_corners(dets.boxes), dets.classes):
        assert o.category_id == cls
        got = {tuple(np.round(p, 4)) for p in o.corners}
        assert got == {tuple(np.round(p, 4)) for p in corners}
    # and through the tool: the scene | the prediction panel, as a PNG
    from d2geo.cli import tool_module

    vis = tool_module("visualize")
    written = vis.main(["--image", scene, "--predictions", gj, "--out", str(tmp_path / "vis")])
    assert len(written) == 1 and os.path.getsize(written[0]) > 0
    with pytest.raises(SystemExit, match="give the scene with --image"):
        vis.main(["--dataset", "d2geo_synth_rot_val", "--predictions", gj, "--out", str(tmp_path / "vis2")])


def test_predict_region_runs_the_rotated_quickstart_in_float32_and_refuses_half_precision(rotated_run, tmp_path):
    from d2geo.cli import tool_module

    weights, scene, _ = rotated_run
    tool = tool_module("predict_region")
    out = tmp_path / "region"
    common = ["--config-file", CONFIG, "--weights", weights, "--scenes", scene, "--tile", "96", "--overlap", "32",
              "--rotated-boxes", "--num-workers", "0", "--score-threshold", "0.05", "--no-progress"]
    tool.main(common + ["--output-dir", str(out)])  # --amp auto, the default: float32 for a rotated detector
    fc = json.load(open(out / "scene.geojson"))
    assert fc["features"] and {f["properties"]["class"] for f in fc["features"]} <= {"ship", "vehicle"}
    import geopandas as gpd

    assert len(gpd.read_parquet(out / "scene.parquet")) == len(fc["features"])
    # half precision: detectron2's rotated NMS takes one dtype; refused before any window
    with pytest.raises(SystemExit, match="rotated detector, and detectron2's rotated NMS .*use --amp off"):
        tool.main(common + ["--output-dir", str(tmp_path / "bf16"), "--amp", "bf16"])
    assert not (tmp_path / "bf16" / "scene.geojson").exists()
    from d2geo.inference import SceneRequestError, predict_scene
    from d2geo.inference.config_model import load_model

    model, _ = load_model(CONFIG, weights)
    with pytest.raises(SceneRequestError, match="no mixed-precision kernel"):
        predict_scene(model, scene, instances_path=str(tmp_path / "o.geojson"), tile=96, overlap=32, amp="fp16",
                      progress=False)
