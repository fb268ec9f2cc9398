"""torch.export ``.pt2`` model files (d2geo.inference.pt2_file): the eager logits, the same class
map through predict_scene --model, refusals as for ONNX model files."""
import json
import os
import zipfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
S2_NAMES = "B01,B02,B03,B04,B05,B06,B07,B08,B8A,B09,B11,B12"
TINY = ["model.backbone.net.encoder_kwargs.depth=2", "model.backbone.net.encoder_kwargs.embed_dim=48"]


@pytest.fixture(scope="module")
def pt2(tmp_path_factory):
    """The quickstart semantic FPN (tiny encoder, random weights): checkpoint and .pt2 model file."""
    pytest.importorskip("detectron2")
    import torch
    from detectron2.config import LazyConfig, instantiate

    from d2geo.inference.pt2_file import export_pt2_file

    d = tmp_path_factory.mktemp("pt2")
    cfg = LazyConfig.apply_overrides(LazyConfig.load(os.path.join(ROOT, "configs/quickstart/semantic_fpn_tiny.py")),
                                     TINY)
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    ckpt = str(d / "model.pth")
    torch.save({"model": model.state_dict()}, ckpt)
    path = str(d / "model.pt2")
    meta = export_pt2_file(model, path, cfg, sensor="sentinel-2-l2a", dn_scale=1e-4, gsd_m=10.0, window=128,
                           overlap=32)
    return {"path": path, "ckpt": ckpt, "meta": meta, "model": model}


def test_pt2_gives_the_eager_logits_at_any_window_size(pt2):
    import torch

    from d2geo.inference import load_model
    from d2geo.inference.pt2_file import Pt2SceneModel

    rt = load_model(pt2["path"])
    assert isinstance(rt, Pt2SceneModel)
    m = rt.meta
    assert (m.task, m.sensor, m.dn_scale, m.gsd_m, m.window, m.overlap) == ("semantic", "sentinel-2-l2a", 1e-4, 10.0,
                                                                            128, 32)
    assert m.bands == ["blue", "green", "red", "nir_narrow", "swir_1", "swir_2"]
    assert m.class_names == ["background", "water", "field", "building"]
    rng = np.random.default_rng(0)
    for h, w in [(128, 128), (96, 160), (100, 77), (224, 224)]:  # 100x77: padded inside the runtime
        x = torch.as_tensor(rng.normal(0.15, 0.1, (6, h, w)).astype(np.float32))
        ours = rt([{"image": x}])[0]["sem_seg"]
        with torch.no_grad():
            ref = pt2["model"]([{"image": x}])[0]["sem_seg"]
        assert tuple(ours.shape) == (4, h, w)
        assert float((ours - ref).abs().max()) < 1e-5, (h, w)


def _labels(path):
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1)


def test_predict_scene_with_a_pt2_file_matches_the_config_run(pt2, terramind_examples, tmp_path):
    from d2geo.cli.predict_scene import main

    s2 = os.path.join(terramind_examples, "S2L2A")
    scene = os.path.join(s2, sorted(os.listdir(s2))[0])
    common = ["--scene", scene, "--band-names", S2_NAMES, "--no-progress", "--no-quicklook"]
    main(["--model", pt2["path"], "--out-semseg", str(tmp_path / "pt2.tif"), *common])
    main(["--config-file", os.path.join(ROOT, "configs/quickstart/semantic_fpn_tiny.py"), "--weights", pt2["ckpt"],
          "--sensor", "sentinel-2-l2a", "--bands", "blue,green,red,nir_narrow,swir_1,swir_2", "--dn-scale", "0.0001",
          "--tile", "128", "--overlap", "32", "--out-semseg", str(tmp_path / "ref.tif"), *common, *TINY])
    a, b = _labels(str(tmp_path / "pt2.tif")), _labels(str(tmp_path / "ref.tif"))
    assert a.shape == (224, 224) and len(np.unique(b)) > 1
    assert (a == b).all()


def _rewrite(src, dst, change):
    """A copy of the .pt2 archive with its d2geo metadata changed by ``change(values) -> values``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("extra/d2geo_model.json"):
                data = json.dumps(change(json.loads(data))).encode()
            zout.writestr(info, data)
    return dst


def test_pt2_refusals_as_for_onnx(pt2, tmp_path):
    from d2geo.inference import ModelFileError, load_model

    bad = _rewrite(pt2["path"], str(tmp_path / "v2.pt2"), lambda v: {**v, "format_version": "2.0"})
    with pytest.raises(ModelFileError, match=r"format_version '2.0', this d2geo reads format 1.x"):
        load_model(bad)
    bad = _rewrite(pt2["path"], str(tmp_path / "nogsd.pt2"), lambda v: {k: x for k, x in v.items() if k != "gsd_m"})
    with pytest.raises(ModelFileError, match=r"lacks the field\(s\) gsd_m\b"):
        load_model(bad)
    # a weight changed (the zip stays readable): refused by the program's hash
    with zipfile.ZipFile(pt2["path"]) as z:
        weights = max((i for i in z.infolist() if "/data/weights/" in i.filename), key=lambda i: i.file_size)

    def flip(src, dst):
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
            for info in zin.infolist():
                data = bytearray(zin.read(info.filename))
                if info.filename == weights.filename:
                    data[len(data) // 2] ^= 0x01
                zout.writestr(info, bytes(data))
        return dst

    with pytest.raises(ModelFileError, match="corrupted or was edited"):
        load_model(flip(pt2["path"], str(tmp_path / "edited.pt2")))
    # bytes flipped in place (zip CRC) and a truncated file: refused as corrupted
    data = bytearray(open(pt2["path"], "rb").read())
    o = weights.header_offset  # the member's bytes start after its local header, name and (alignment) extra
    start = o + 30 + int.from_bytes(data[o + 26:o + 28], "little") + int.from_bytes(data[o + 28:o + 30], "little")
    data[start + weights.file_size // 2] ^= 0x01
    (tmp_path / "flipped.pt2").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="corrupted"):
        load_model(str(tmp_path / "flipped.pt2"))
    (tmp_path / "cut.pt2").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ModelFileError, match="corrupted|truncated"):
        load_model(str(tmp_path / "cut.pt2"))


@pytest.mark.slow  # ~20 s: a second torch.export (the module fixture's export covers the default pass)
def test_export_tool_writes_a_pt2_model_file(tmp_path, capsys):
    """tools/export_model.py --format pt2 (the config's classes, --describe for the rest)."""
    pytest.importorskip("detectron2")
    from d2geo.cli import export as tool
    from d2geo.inference import load_model

    out = tmp_path / "seg"
    diff = tool.main(["--config-file", os.path.join(ROOT, "configs/quickstart/semantic_fpn_tiny.py"), "--format",
                      "pt2", "--output", str(out), "--sample-size", "64", "--describe", "gsd_m=30", "--describe",
                      "window=96", *TINY])
    assert diff < 1e-5 and "max abs difference" in capsys.readouterr().out
    m = load_model(str(out / "model.pt2")).meta
    assert (m.gsd_m, m.window, m.overlap, m.inputs) == (30.0, 96, 24, ["image"])
    assert m.class_names == ["background", "water", "field", "building"]


def test_pt2_refuses_windows_under_two_strides_and_instance_models(pt2, tmp_path):
    import torch

    from d2geo.inference import ModelFileError, load_model
    from d2geo.inference.pt2_file import export_pt2_file

    rt = load_model(pt2["path"])
    with pytest.raises(ModelFileError, match=r"runs windows of at least 32 px, got 16x64: .*use the ONNX model file"):
        rt([{"image": torch.zeros(6, 16, 64)}])
    with pytest.raises(ModelFileError, match=r"takes \(6, H, W\) windows, got \(4, 64, 64\)"):
        rt([{"image": torch.zeros(4, 64, 64)}])

    class Rcnn(torch.nn.Module):  # what model_fields reads of an instance model
        pixel_mean, pixel_std = torch.zeros(6), torch.ones(6)
        roi_heads = proposal_generator = None

    with pytest.raises(ModelFileError, match="predicts instances: .pt2 model files hold semantic models"):
        export_pt2_file(Rcnn(), str(tmp_path / "r.pt2"), class_names=["building"])
    assert not os.path.exists(tmp_path / "r.pt2")


def test_pt2_runs_in_float32_inside_the_loops_autocast(pt2):
    """predict_region's default --amp auto opens a bfloat16 autocast on the CPU: the float32
    program must not see it (it failed with a dtype mismatch)."""
    import torch

    from d2geo.inference import load_model

    rt = load_model(pt2["path"])
    x = torch.as_tensor(np.random.default_rng(2).normal(0.15, 0.1, (6, 64, 96)).astype(np.float32))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ours = rt([{"image": x}])[0]["sem_seg"]
    with torch.no_grad():
        ref = pt2["model"]([{"image": x}])[0]["sem_seg"]
    assert ours.dtype == torch.float32 and float((ours - ref).abs().max()) < 1e-5
