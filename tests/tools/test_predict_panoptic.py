"""End to end: predict_scene and predict_region with the panoptic quickstart config
(configs/quickstart/panoptic_tiny.py, random weights) on a synthetic crop-field scene write the
panoptic class map, the instance-id COG and parcels that rasterize back to it."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")
torch = pytest.importorskip("torch")
rasterio = pytest.importorskip("rasterio")
pytest.importorskip("geopandas")
pytest.importorskip("pyarrow")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs/quickstart/panoptic_tiny.py")
# random weights score every box about alike: keep them all so that the run has objects
OVERRIDES = ["model.combine_instances_score_thresh=0.0", "model.combine_stuff_area_thresh=16"]


def write_field_scene(path, size=160, seed=1, x0=600_000.0):
    """A synthetic crop-field scene (the quickstart's generator, one bigger tile) as float32
    reflectance with HLS band names; returns ``(path, classes, ids)`` of the truth."""
    from rasterio.transform import from_origin

    from d2geo.data.synthetic import SYNTH_BANDS
    from d2geo.data.synthetic.panoptic import render_panoptic_tile

    img, classes, ids = render_panoptic_tile(np.random.default_rng(seed), size, max_fields=12)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=6, dtype="float32",
                       crs="EPSG:32610", transform=from_origin(x0, 4_100_000, 10, 10)) as dst:
        dst.write(img[0])
        for i, b in enumerate(SYNTH_BANDS):
            dst.set_band_description(i + 1, b)
    return str(path), classes, ids


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from detectron2.config import LazyConfig, instantiate

    d = tmp_path_factory.mktemp("pan_ckpt")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("D2GEO_DATASETS", str(d / "datasets"))
        cfg = LazyConfig.load(CONFIG)
        torch.manual_seed(0)
        model = instantiate(cfg.model)
    path = str(d / "model.pth")
    torch.save({"model": model.state_dict()}, path)
    return path


def _check_outputs(classes_tif, ids_tif, parcels, parquet, n_stuff=4):
    import geopandas as gpd
    from rasterio.features import rasterize
    from shapely.geometry import shape

    with rasterio.open(classes_tif) as src:
        cls = src.read(1)
        names = json.loads(src.tags(1)["class_names"])
    assert names == ["grassland", "forest", "water", "urban", "wheat", "maize", "rapeseed"]
    with rasterio.open(ids_tif) as src:
        assert src.dtypes[0] == "uint32"
        ids, t = src.read(1), src.transform
    assert ids.any(), "no objects: the test needs some (see OVERRIDES)"
    assert (cls[ids > 0] >= n_stuff).all() and (cls[ids > 0] != 255).all()
    assert ((cls >= n_stuff) & (cls != 255) & (ids == 0)).sum() == 0  # every thing pixel has an id
    fc = json.load(open(parcels))
    back = rasterize([(shape(f["geometry"]), f["properties"]["instance_id"]) for f in fc["features"]],
                     out_shape=ids.shape, transform=t, fill=0, dtype="uint32")
    assert (back == ids).mean() >= 0.99
    gdf = gpd.read_parquet(parquet)
    assert {"instance_id", "class", "score"} <= set(gdf.columns) and len(gdf) == len(fc["features"])
    assert set(gdf["class"]) <= {"wheat", "maize", "rapeseed"}
    return ids


def test_predict_scene_cli_writes_panoptic_outputs(tmp_path, tiny_ckpt, monkeypatch, one_thread):
    from d2geo.cli.predict_scene import main

    monkeypatch.setenv("D2GEO_DATASETS", str(tmp_path / "datasets"))
    scene, _, _ = write_field_scene(tmp_path / "scene.tif")
    o = {n: str(tmp_path / n) for n in ("classes.tif", "ids.tif", "parcels.geojson", "parcels.parquet")}
    s = main(["--config-file", CONFIG, "--weights", tiny_ckpt, "--scene", scene, "--tile", "96", "--overlap", "32",
              "--out-semseg", o["classes.tif"], "--out-instance-ids", o["ids.tif"], "--out-parcels",
              o["parcels.geojson"], "--out-parcels", o["parcels.parquet"], "--no-progress", *OVERRIDES])
    ids = _check_outputs(o["classes.tif"], o["ids.tif"], o["parcels.geojson"], o["parcels.parquet"])
    assert s["objects"] == len(np.unique(ids[ids > 0]))
    assert os.path.isfile(o["classes.tif"] + ".png")  # quick-look with the panoptic class names


def test_predict_region_cli_writes_panoptic_outputs_with_ids_unique_across_scenes(
        tmp_path, tiny_ckpt, monkeypatch, one_thread):
    from d2geo.cli.predict_region import main

    monkeypatch.setenv("D2GEO_DATASETS", str(tmp_path / "datasets"))
    (tmp_path / "scenes").mkdir()
    write_field_scene(tmp_path / "scenes" / "a.tif", size=128, seed=2)
    write_field_scene(tmp_path / "scenes" / "b.tif", size=128, seed=3, x0=600_000.0 + 1280)
    out = tmp_path / "out"
    main(["--config-file", CONFIG, "--weights", tiny_ckpt, "--scenes", str(tmp_path / "scenes"), "--output-dir",
          str(out), "--tile", "96", "--overlap", "32", "--num-workers", "0", "--amp", "off", "--no-progress",
          "--to-crs", "EPSG:4326", *OVERRIDES])
    got = {}
    for sid in ("a", "b"):
        with rasterio.open(out / f"{sid}.ids.tif") as src:
            got[sid] = set(np.unique(src.read(1))) - {0}
        fc = json.load(open(out / f"{sid}.parcels.geojson"))
        assert fc["crs"]["properties"]["name"] == "EPSG:4326"
        assert all(-125 < f["geometry"]["coordinates"][0][0][0] < -120 for f in fc["features"]
                   if f["geometry"]["type"] == "Polygon")  # UTM 10N in lon/lat
    assert got["a"] and got["b"] and not got["a"] & got["b"]
    assert os.path.isfile(out / "mosaic.vrt")
    manifest = json.load(open(out / "manifest.json"))
    assert "b.ids.tif" in manifest["scenes"]["b"]["outputs"]


def test_panoptic_flags_bad_parcels_format_and_model_file_are_refused(tmp_path):
    from d2geo.cli.predict_scene import main

    scene, _, _ = write_field_scene(tmp_path / "scene.tif", size=32)
    base = ["--scene", scene, "--no-progress"]
    with pytest.raises(SystemExit, match=r"--out-parcels .*p.shp: give a .geojson \(GeoJSON\) or .parquet"):
        main(["--config-file", CONFIG, "--weights", "w.pth", *base, "--out-parcels", str(tmp_path / "p.shp")])
    with pytest.raises(SystemExit, match=r"--out-parcels names two GeoJSON files"):
        main(["--config-file", CONFIG, "--weights", "w.pth", *base, "--out-parcels", str(tmp_path / "a.geojson"),
              "--out-parcels", str(tmp_path / "b.json")])
    with pytest.raises(SystemExit, match=r"need a panoptic model, and model files hold semantic or instance models"):
        main(["--model", str(tmp_path / "m.onnx"), *base, "--out-instance-ids", str(tmp_path / "ids.tif")])
    assert sorted(os.listdir(tmp_path)) == ["scene.tif"]
