"""Self-describing model files (d2geo.inference.model_file) and the torch-free --model path."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
S2_NAMES = "B01,B02,B03,B04,B05,B06,B07,B08,B8A,B09,B11,B12"
TINY = ["model.backbone.net.encoder_kwargs.depth=2", "model.backbone.net.encoder_kwargs.embed_dim=48"]
#: makes importing torch and detectron2 (and what needs them) fail in a subprocess
BLOCK = ("import sys\nfor _n in ('torch', 'detectron2', 'torchvision', 'timm', 'detrex'):\n"
         "    sys.modules[_n] = None\n")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The quickstart semantic FPN (tiny encoder, random weights): checkpoint and model file."""
    pytest.importorskip("detectron2")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import torch
    from detectron2.config import LazyConfig, instantiate

    from d2geo.inference.export_file import export_model_file

    d = tmp_path_factory.mktemp("model_file")
    cfg = LazyConfig.apply_overrides(LazyConfig.load(os.path.join(ROOT, "configs/quickstart/semantic_fpn_tiny.py")),
                                     TINY)
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    ckpt = str(d / "model.pth")
    torch.save({"model": model.state_dict()}, ckpt)
    path = str(d / "model.onnx")
    meta = export_model_file(model, path, cfg, sensor="sentinel-2-l2a", dn_scale=1e-4, gsd_m=10.0, window=128,
                             overlap=32)
    return {"path": path, "ckpt": ckpt, "meta": meta, "model": model, "cfg": cfg}


def test_inference_imports_without_torch_or_detectron2():
    """The layers an inference-only install uses import with torch and detectron2 blocked."""
    code = BLOCK + ("import d2geo, d2geo.data, d2geo.data.geotiff, d2geo.data.units, d2geo.encoders.bands\n"
                    "import d2geo.inference, d2geo.inference.region, d2geo.inference.model_file\n"
                    "import d2geo.cli.predict_scene, d2geo.cli.predict_region\n"
                    "from d2geo.inference import load_model, BlendBuffer, predict_scene\n"
                    "try:\n    d2geo.encoders.build_encoder\nexcept ImportError as e:\n    print('HINT', e)\n"
                    "print('IMPORTED', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'detectron2', "
                    "'timm') and sys.modules[m] is not None))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "IMPORTED []" in r.stdout
    assert "pip install 'd2geo[train]'" in r.stdout  # the encoders say what to install


def _props(path):
    import onnx

    m = onnx.load(path)
    return m, {p.key: p.value for p in m.metadata_props}


def _rewrite(src, dst, change):
    """A copy of the model file with its metadata changed by ``change(props) -> props``."""
    import onnx

    m, props = _props(src)
    props = change(dict(props))
    del m.metadata_props[:]
    for k, v in props.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(m, dst)
    return dst


def test_model_file_carries_every_field(exported):
    from d2geo.inference.model_file import FIELDS, FORMAT_VERSION, graph_sha256, load_model

    _, props = _props(exported["path"])
    assert {f"d2geo.{k}" for k in FIELDS} <= set(props)
    rt = load_model(exported["path"])
    m = rt.meta
    assert m.format_version == FORMAT_VERSION and m.task == "semantic"
    assert m.bands == ["blue", "green", "red", "nir_narrow", "swir_1", "swir_2"] and m.sensor == "sentinel-2-l2a"
    assert m.pixel_mean == pytest.approx([0.104, 0.1243, 0.1189, 0.2412, 0.2238, 0.1556], abs=1e-6)
    assert m.dn_scale == 1e-4 and m.gsd_m == 10.0 and (m.window, m.overlap, m.patch_size, m.frames) == (128, 32, 8, 1)
    assert m.class_names == ["background", "water", "field", "building"] and len(m.class_colors) == 4
    assert m.graph_sha256 == graph_sha256(exported["path"]) and len(m.config_sha256) == 64
    # the graph in onnxruntime gives the eager model's logits
    import torch

    x = np.random.default_rng(0).normal(0.15, 0.1, (6, 96, 128)).astype(np.float32)
    ours = rt([{"image": x}])[0]["sem_seg"]
    with torch.no_grad():
        ref = exported["model"]([{"image": torch.as_tensor(x)}])[0]["sem_seg"].numpy()
    assert ours.shape == (4, 96, 128) and np.abs(ours - ref).max() < 1e-4


@pytest.mark.parametrize("field", ["bands", "pixel_std", "dn_scale", "gsd_m", "window", "class_names",
                                   "weights", "config_sha256", "graph_sha256", "format_version"])
def test_a_dropped_field_is_an_error_naming_it(exported, tmp_path, field):
    from d2geo.inference.model_file import ModelFileError, load_model

    bad = _rewrite(exported["path"], str(tmp_path / "m.onnx"), lambda p: {k: v for k, v in p.items()
                                                                          if k != f"d2geo.{field}"})
    with pytest.raises(ModelFileError, match=rf"lacks the field\(s\) {field}\b"):
        load_model(bad)


def test_a_mistyped_or_inconsistent_field_is_an_error_naming_it(exported, tmp_path):
    from d2geo.inference.model_file import ModelFileError, read_metadata

    bad = _rewrite(exported["path"], str(tmp_path / "a.onnx"), lambda p: {**p, "d2geo.window": json.dumps("128")})
    with pytest.raises(ModelFileError, match="field window is '128'"):
        read_metadata(bad)
    bad = _rewrite(exported["path"], str(tmp_path / "b.onnx"),
                   lambda p: {**p, "d2geo.pixel_mean": json.dumps([0.1, 0.2])})
    with pytest.raises(ModelFileError, match="field pixel_mean has 2 values for 6 bands"):
        read_metadata(bad)


def test_another_major_format_version_is_refused(exported, tmp_path):
    from d2geo.inference.model_file import ModelFileError, load_model

    bad = _rewrite(exported["path"], str(tmp_path / "v2.onnx"), lambda p: {**p, "d2geo.format_version": '"2.0"'})
    with pytest.raises(ModelFileError, match=r"format_version '2.0', this d2geo reads format 1.x"):
        load_model(bad)
    minor = _rewrite(exported["path"], str(tmp_path / "v1_9.onnx"), lambda p: {**p, "d2geo.format_version": '"1.9"'})
    assert load_model(minor).meta.format_version == "1.9"


def test_a_corrupted_file_is_refused_by_its_hash(exported, tmp_path):
    from d2geo.inference.model_file import ModelFileError, load_model

    data = bytearray(open(exported["path"], "rb").read())
    # one bit of a weight: the protobuf still parses, the graph's hash does not match
    data[len(data) // 2] ^= 0x01
    bad = tmp_path / "flipped.onnx"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="corrupted"):
        load_model(str(bad))
    (tmp_path / "cut.onnx").write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(ModelFileError, match="corrupted|truncated"):
        load_model(str(tmp_path / "cut.onnx"))


def _labels(path):
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1)


def _run_blocked(args, tmp_path):
    """The predict_scene CLI in a subprocess where importing torch or detectron2 raises."""
    code = BLOCK + ("from d2geo.cli.predict_scene import main\nmain(sys.argv[1:])\n"
                    "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'detectron2', 'timm') "
                    "and sys.modules[m] is not None)\nprint('IMPORTED', bad)\n")
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          cwd=str(tmp_path), timeout=300)


def test_cli_model_file_without_torch_matches_the_config_run(exported, terramind_examples, tmp_path):
    """--model on the real tiles, torch and detectron2 blocked, against --config-file + --weights."""
    from d2geo.cli.predict_scene import main

    agree = total = 0
    for name in sorted(os.listdir(os.path.join(terramind_examples, "S2L2A")))[:2]:
        scene = os.path.join(terramind_examples, "S2L2A", name)
        ours, ref = str(tmp_path / f"onnx_{name}"), str(tmp_path / f"torch_{name}")
        r = _run_blocked(["--model", exported["path"], "--scene", scene, "--band-names", S2_NAMES,
                          "--out-semseg", ours, "--no-progress", "--no-quicklook"], tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "IMPORTED []" in r.stdout
        main(["--config-file", os.path.join(ROOT, "configs/quickstart/semantic_fpn_tiny.py"), "--weights",
              exported["ckpt"], "--scene", scene, "--band-names", S2_NAMES, "--sensor", "sentinel-2-l2a",
              "--bands", "blue,green,red,nir_narrow,swir_1,swir_2", "--dn-scale", "0.0001", "--tile", "128",
              "--overlap", "32", "--out-semseg", ref, "--no-progress", "--no-quicklook", *TINY])
        a, b = _labels(ours), _labels(ref)
        assert a.shape == b.shape == (224, 224)
        agree += int((a == b).sum())
        total += a.size
        assert len(np.unique(b)) > 1, "a constant class map compares nothing"
    assert agree / total >= 0.995, agree / total


@pytest.mark.parametrize("runtime", ["onnxruntime", pytest.param("compile", marks=pytest.mark.slow)])  # ~90 s
def test_runtime_option_matches_eager(exported, terramind_examples, tmp_path, runtime):
    from d2geo.cli.predict_scene import main

    if runtime == "compile":
        pytest.importorskip("torch._inductor")
    scene = os.path.join(terramind_examples, "S2L2A", sorted(os.listdir(os.path.join(terramind_examples, "S2L2A")))[0])
    base = ["--config-file", os.path.join(ROOT, "configs/quickstart/semantic_fpn_tiny.py"), "--weights",
            exported["ckpt"], "--scene", scene, "--band-names", S2_NAMES, "--sensor", "sentinel-2-l2a",
            "--bands", "blue,green,red,nir_narrow,swir_1,swir_2", "--dn-scale", "0.0001", "--tile", "128",
            "--overlap", "32", "--no-progress", "--no-quicklook"]
    main([*base, "--out-semseg", str(tmp_path / "eager.tif"), *TINY])
    main([*base, "--out-semseg", str(tmp_path / "rt.tif"), "--runtime", runtime, *TINY])
    a, b = _labels(str(tmp_path / "rt.tif")), _labels(str(tmp_path / "eager.tif"))
    assert (a == b).mean() >= 0.995


def _files(folder):
    return sorted(os.listdir(folder))


def test_scene_at_another_gsd_is_refused_before_anything_is_written(exported, terramind_examples, tmp_path):
    import rasterio
    from rasterio.transform import Affine

    src_path = os.path.join(terramind_examples, "S2L2A", sorted(os.listdir(os.path.join(terramind_examples,
                                                                                        "S2L2A")))[0])
    with rasterio.open(src_path) as src:
        prof, data = src.profile, src.read()
    t = prof["transform"]
    prof.update(transform=Affine(t.a * 3, t.b, t.c, t.d, t.e * 3, t.f))  # 30 m pixels
    coarse = tmp_path / "in" / "coarse.tif"
    coarse.parent.mkdir()
    with rasterio.open(coarse, "w", **prof) as dst:
        dst.write(data)
    out = tmp_path / "out"
    out.mkdir()
    r = _run_blocked(["--model", exported["path"], "--scene", str(coarse), "--band-names", S2_NAMES,
                      "--out-semseg", str(out / "pred.tif"), "--no-progress"], tmp_path)
    assert r.returncode != 0
    assert "GSD of 30 m, the model was trained at 10 m" in r.stderr and "gdalwarp -tr 10 10" in r.stderr
    assert _files(out) == []


def test_scene_without_the_model_bands_is_refused_before_anything_is_written(exported, terramind_examples,
                                                                             tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    s1 = os.path.join(terramind_examples, "S1RTC", sorted(os.listdir(os.path.join(terramind_examples, "S1RTC")))[0])
    r = _run_blocked(["--model", exported["path"], "--scene", s1, "--band-names", "VV,VH", "--out-semseg",
                      str(out / "pred.tif"), "--no-progress"], tmp_path)
    assert r.returncode != 0 and "predict_scene: error:" in r.stderr
    assert "blue" in r.stderr  # names the band the file lacks
    assert _files(out) == []
    # a model file that is not one: a clear error too
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(b"\x08\x07")  # ir_version only
    r = _run_blocked(["--model", str(bare), "--scene", s1, "--out-semseg", str(out / "p.tif")], tmp_path)
    assert r.returncode != 0 and "holds no ONNX graph" in r.stderr
    assert _files(out) == []


def test_region_cli_model_file_without_torch(exported, terramind_examples, tmp_path):
    code = BLOCK + ("from d2geo.cli.predict_region import main\nmain(sys.argv[1:])\n"
                    "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'detectron2', 'timm') "
                    "and sys.modules[m] is not None)\nprint('IMPORTED', bad)\n")
    s2 = os.path.join(terramind_examples, "S2L2A")
    scenes = [os.path.join(s2, n) for n in sorted(os.listdir(s2))[:2]]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code, "--model", exported["path"], "--scenes", *scenes,
                        "--band-names", S2_NAMES, "--output-dir", str(tmp_path / "region"), "--no-progress",
                        "--mosaic-crs", "EPSG:4326"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "IMPORTED []" in r.stdout
    for p in scenes:
        labels = _labels(str(tmp_path / "region" / os.path.basename(p)))
        assert labels.shape == (224, 224) and set(np.unique(labels)) <= {0, 1, 2, 3}


def test_export_tool_writes_a_model_file(tmp_path):
    """tools/export_model.py --format onnx stamps the file; --describe gives what the config does not."""
    pytest.importorskip("detectron2")
    pytest.importorskip("onnx")

    from d2geo.inference.model_file import load_model

    from d2geo.cli import export as tool
    out = tmp_path / "seg"
    tool.main(["--config-file", os.path.join(ROOT, "configs/quickstart/semantic_fpn_tiny.py"), "--format", "onnx",
               "--output", str(out), "--sample-size", "64", "--describe", "gsd_m=30", "--describe", "window=96",
               "--describe", "sensor=hls", *TINY])
    m = load_model(str(out / "model.onnx")).meta
    assert (m.gsd_m, m.window, m.overlap, m.sensor, m.inputs) == (30.0, 96, 24, "hls", ["image"])
    assert m.class_names == ["background", "water", "field", "building"]


@pytest.mark.slow  # a fresh venv and pip install -e .[infer]: ~45 s with a warm pip cache (needs PyPI)
def test_inference_only_install_runs_the_model_file(exported, terramind_examples, tmp_path):
    """.ci/infer_only.sh: a venv with d2geo[infer] (no torch, no detectron2) reproduces the config run."""
    from d2geo.cli.predict_scene import main

    scene = os.path.join(terramind_examples, "S2L2A", sorted(os.listdir(os.path.join(terramind_examples, "S2L2A")))[0])
    out = tmp_path / "ci"
    r = subprocess.run(["bash", os.path.join(ROOT, ".ci", "infer_only.sh"), exported["path"], scene, str(out),
                        "--band-names", S2_NAMES, "--no-quicklook"], capture_output=True, text=True, timeout=900,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "imports without torch" in r.stdout
    ref = str(tmp_path / "torch.tif")
    main(["--config-file", os.path.join(ROOT, "configs/quickstart/semantic_fpn_tiny.py"), "--weights",
          exported["ckpt"], "--scene", scene, "--band-names", S2_NAMES, "--sensor", "sentinel-2-l2a",
          "--bands", "blue,green,red,nir_narrow,swir_1,swir_2", "--dn-scale", "0.0001", "--tile", "128",
          "--overlap", "32", "--out-semseg", ref, "--no-progress", "--no-quicklook", *TINY])
    assert (_labels(str(out / "pred.tif")) == _labels(ref)).mean() >= 0.995


def test_region_runtime_onnxruntime_matches_eager(exported, terramind_examples, tmp_path):
    from d2geo.cli.predict_region import main

    s2 = os.path.join(terramind_examples, "S2L2A")
    scene = os.path.join(s2, sorted(os.listdir(s2))[0])
    base = ["--config-file", os.path.join(ROOT, "configs/quickstart/semantic_fpn_tiny.py"), "--weights",
            exported["ckpt"], "--scenes", scene, "--band-names", S2_NAMES, "--sensor", "sentinel-2-l2a",
            "--bands", "blue,green,red,nir_narrow,swir_1,swir_2", "--dn-scale", "0.0001", "--tile", "128",
            "--overlap", "32", "--no-progress", "--num-workers", "0", "--amp", "off", "--device", "cpu"]
    main([*base, "--output-dir", str(tmp_path / "eager"), *TINY])
    main([*base, "--output-dir", str(tmp_path / "ort"), "--runtime", "onnxruntime", *TINY])
    a = _labels(str(tmp_path / "ort" / os.path.basename(scene)))
    b = _labels(str(tmp_path / "eager" / os.path.basename(scene)))
    assert (a == b).mean() >= 0.995 and len(np.unique(b)) > 1


def test_model_file_run_checks_units_before_any_window(exported, terramind_examples, tmp_path):
    """The file's statistics drive the units check: DN read as reflectance (--dn-scale 1) is refused."""
    out = tmp_path / "out"
    out.mkdir()
    s2 = os.path.join(terramind_examples, "S2L2A")
    r = _run_blocked(["--model", exported["path"], "--scene", os.path.join(s2, sorted(os.listdir(s2))[0]),
                      "--band-names", S2_NAMES, "--dn-scale", "1", "--out-semseg", str(out / "pred.tif"),
                      "--no-progress"], tmp_path)
    assert r.returncode != 0 and "dn_scale=0.0001" in r.stderr, r.stderr[-2000:]
    assert _files(out) == []
