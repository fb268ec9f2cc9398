"""Instance model files: the tiny Mask R-CNN quickstart's model as ONNX (boxes, classes, mask
probabilities, scores), masks pasted with numpy, against the eager model and the config run."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BLOCK = ("import sys\nfor _n in ('torch', 'detectron2', 'torchvision', 'timm', 'detrex'):\n"
         "    sys.modules[_n] = None\n")
CONFIG = os.path.join(ROOT, "configs/quickstart/mask_rcnn_tiny.py")


@pytest.fixture(scope="module")
def rcnn(tmp_path_factory):
    pytest.importorskip("detectron2")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import torch
    from detectron2.config import LazyConfig, instantiate

    from d2geo.inference.export_file import export_model_file

    d = tmp_path_factory.mktemp("rcnn_file")
    cfg = LazyConfig.load(CONFIG)
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    ckpt = str(d / "model.pth")
    torch.save({"model": model.state_dict()}, ckpt)
    path = str(d / "model.onnx")
    meta = export_model_file(model, path, cfg, window=96, overlap=24, gsd_m=30.0)
    return {"path": path, "ckpt": ckpt, "meta": meta, "model": model}


def _image(seed, h, w):
    """Reflectance around the quickstart's statistics, with bright 'roofs'."""
    rng = np.random.default_rng(seed)
    mean = np.array([0.104, 0.1243, 0.1189, 0.2412, 0.2238, 0.1556], np.float32)[:, None, None]
    x = (mean + rng.normal(0, 0.03, (6, h, w))).astype(np.float32)
    for _ in range(h * w // 600):
        r, c, s = rng.integers(0, h - 12), rng.integers(0, w - 12), rng.integers(6, 12)
        x[:, r:r + s, c:c + s] = mean[:, :, 0][:, :, None] * 1.8
    return x


def _iou(a, b):
    return np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1)


def test_instance_model_file_matches_the_eager_model(rcnn):
    import torch

    from d2geo.inference.model_file import load_model

    rt = load_model(rcnn["path"])
    m = rt.meta
    assert (m.task, m.class_names, m.window, m.score_threshold) == ("instances", ["building"], 96, 0.05)
    n = 0
    for seed, (h, w) in enumerate([(96, 96), (80, 112)]):
        x = _image(seed, h, w)
        ours = rt([{"image": x, "height": h, "width": w}])[0]["instances"]
        with torch.no_grad():
            ref = rcnn["model"]([{"image": torch.as_tensor(x), "height": h, "width": w}])[0]["instances"]
        assert len(ours) == len(ref) > 0
        n += len(ref)
        rb = ref.pred_boxes.tensor.numpy()
        assert np.abs(ours.pred_boxes - rb).max() <= 1.0
        assert np.abs(ours.scores - ref.scores.numpy()).max() <= 1e-4
        assert (ours.pred_classes == ref.pred_classes.numpy()).all()
        rm = ref.pred_masks.numpy()
        assert ours.pred_masks.shape == rm.shape == (len(ref), h, w)
        ious = [_iou(a, b) for a, b in zip(ours.pred_masks, rm) if a.any() or b.any()]
        assert ious and min(ious) >= 0.95, min(ious)
    assert n >= 10


def test_paste_masks_is_detectron2s_paste():
    torch = pytest.importorskip("torch")
    pytest.importorskip("detectron2")
    from detectron2.layers.mask_ops import paste_masks_in_image

    from d2geo.inference.onnx_instances import paste_masks

    rng = np.random.default_rng(1)
    masks = rng.random((20, 28, 28)).astype(np.float32)
    xy = rng.uniform(-5, 60, (20, 2))
    wh = rng.uniform(0.5, 40, (20, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    ref = paste_masks_in_image(torch.as_tensor(masks), torch.as_tensor(boxes), (64, 72), threshold=0.5).numpy()
    ours = paste_masks(masks, boxes, 64, 72)
    assert ours.shape == ref.shape
    assert (ours != ref).sum() <= 0.001 * ref.size  # float rounding at exactly 0.5 only


def _features(path):
    with open(path) as f:
        return json.load(f)["features"]


def test_predict_scene_instance_model_file_without_torch_matches_the_config_run(rcnn, tmp_path):
    from shapely.geometry import shape

    from d2geo.cli.predict_scene import main
    from helpers.rasters import write_tif

    scene = write_tif(str(tmp_path / "in" / "scene.tif"), _image(7, 160, 176),
                      names=["blue", "green", "red", "nir_narrow", "swir_1", "swir_2"])
    ours, ref = str(tmp_path / "onnx.geojson"), str(tmp_path / "torch.geojson")
    code = BLOCK + ("from d2geo.cli.predict_scene import main\nmain(sys.argv[1:])\n"
                    "print('IMPORTED', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'detectron2', "
                    "'timm') and sys.modules[m] is not None))\n")
    r = subprocess.run([sys.executable, "-c", code, "--model", rcnn["path"], "--scene", scene, "--out-geojson", ours,
                        "--no-progress", "--no-quicklook"], capture_output=True, text=True, timeout=300,
                       cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "IMPORTED []" in r.stdout
    main(["--config-file", CONFIG, "--weights", rcnn["ckpt"], "--scene", scene, "--tile", "96", "--overlap", "24",
          "--out-geojson", ref, "--no-progress", "--no-quicklook"])
    a, b = _features(ours), _features(ref)
    assert len(a) == len(b) > 0
    a.sort(key=lambda f: -f["properties"]["score"])
    b.sort(key=lambda f: -f["properties"]["score"])
    for fa, fb in zip(a, b):
        assert fa["properties"]["class"] == fb["properties"]["class"] == "building"
        assert abs(fa["properties"]["score"] - fb["properties"]["score"]) <= 1e-4
        ga, gb = shape(fa["geometry"]), shape(fb["geometry"])
        assert np.abs(np.array(ga.bounds) - np.array(gb.bounds)).max() <= 30.0  # 1 px of 30 m
        assert ga.intersection(gb).area / ga.union(gb).area >= 0.95


def test_export_tool_writes_an_instance_model_file_beside_the_backbone(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from d2geo.cli import export as tool
    from d2geo.inference.model_file import load_model

    out = tmp_path / "rcnn"
    tool.main(["--config-file", CONFIG, "--format", "onnx", "--output", str(out), "--sample-size", "64",
               "--describe", "gsd_m=30", "model.backbone.net.encoder_kwargs.depth=1"])
    assert (out / "backbone.onnx").is_file()
    rt = load_model(str(out / "model.onnx"))
    assert (rt.meta.task, rt.meta.class_names, rt.meta.gsd_m) == ("instances", ["building"], 30.0)
    inst = rt([{"image": _image(3, 64, 96)}])[0]["instances"]
    assert inst.pred_masks.shape[1:] == (64, 96) and len(inst) == len(inst.scores)


def test_an_instance_model_file_without_its_outputs_is_refused(rcnn, tmp_path):
    """A semantic graph stamped as an instance model: refused when loaded, naming the outputs."""
    import onnx

    from d2geo.inference.model_file import ModelFileError, load_model, read_metadata, write_metadata

    m = onnx.load(rcnn["path"])
    for o in m.graph.output:
        if o.name == "mask_probs":
            o.name = "masks"
    for node in m.graph.node:
        node.output[:] = ["masks" if x == "mask_probs" else x for x in node.output]
    bad = str(tmp_path / "renamed.onnx")
    onnx.save(m, bad)
    fields = {k: v for k, v in read_metadata(rcnn["path"]).to_dict().items()
              if k not in ("format_version", "d2geo_version", "graph_sha256")}
    write_metadata(bad, fields)
    with pytest.raises(ModelFileError, match="graph has the outputs boxes, classes, mask_probs, scores; this one "
                                             "lacks mask_probs"):
        load_model(bad)


def test_predict_region_instance_model_file_writes_the_config_runs_geoparquet(rcnn, tmp_path):
    gpd = pytest.importorskip("geopandas")
    from d2geo.cli.predict_region import main
    from helpers.rasters import write_tif

    scene = write_tif(str(tmp_path / "in" / "scene.tif"), _image(11, 128, 160),
                      names=["blue", "green", "red", "nir_narrow", "swir_1", "swir_2"])
    main(["--model", rcnn["path"], "--scenes", scene, "--output-dir", str(tmp_path / "file"), "--no-progress"])
    main(["--config-file", CONFIG, "--weights", rcnn["ckpt"], "--scenes", scene, "--tile", "96", "--overlap", "24",
          "--output-dir", str(tmp_path / "cfg"), "--no-progress", "--num-workers", "0", "--device", "cpu",
          "--amp", "off"])
    a = gpd.read_parquet(tmp_path / "file" / "scene.parquet").sort_values("score", ascending=False)
    b = gpd.read_parquet(tmp_path / "cfg" / "scene.parquet").sort_values("score", ascending=False)
    assert len(a) == len(b) > 0 and a.crs == b.crs
    assert np.abs(a["score"].to_numpy() - b["score"].to_numpy()).max() <= 1e-4
    ious = [ga.intersection(gb).area / ga.union(gb).area for ga, gb in zip(a.geometry, b.geometry)]
    assert min(ious) >= 0.95
