"""tools/export_model.py, detectron2's own export tool on d2geo yaml configs, and GeoTrainer."""
import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DETECTRON2_TOOL = os.path.join(os.path.dirname(importlib.util.find_spec("detectron2").origin), "..",
                               "tools", "deploy", "export_model.py")
# tiny and fast; random init
TINY_ENCODER = ["model.backbone.net.encoder_kwargs.depth=2", "model.backbone.net.encoder_kwargs.embed_dim=48"]


@pytest.fixture(scope="module")
def tool():
    from d2geo.cli import export

    return export


@pytest.fixture(autouse=True)
def synthetic_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("D2GEO_DATASETS", str(tmp_path_factory.getbasetemp() / "d2geo_datasets"))


def _printed_difference(text):
    m = re.search(r"max abs difference between the export and the eager model: (\S+)", text)
    assert m, text
    return float(m.group(1))


def test_quickstart_segmentor_to_onnx_runs_in_onnxruntime(tool, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "seg"
    tool.main(["--config-file", os.path.join(ROOT, "configs/quickstart/semantic_fpn_tiny.py"),
               "--format", "onnx", "--output", str(out), "--sample-size", "64", *TINY_ENCODER])
    assert _printed_difference(capsys.readouterr().out) < 1e-4
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).normal(0.15, 0.1, (6, 80, 96)).astype(np.float32)  # another size
    (logits,) = sess.run(None, {sess.get_inputs()[0].name: image})
    assert logits.shape == (4, 80, 96) and np.isfinite(logits).all()


def test_quickstart_mask_rcnn_to_torchscript_runs(tool, tmp_path, capsys):
    out = tmp_path / "rcnn"
    tool.main(["--config-file", os.path.join(ROOT, "configs/quickstart/mask_rcnn_tiny.py"),
               "--format", "torchscript", "--output", str(out), "--sample-size", "64", *TINY_ENCODER,
               # a random model scores low: keep every box so the comparison is not over empty outputs
               "model.roi_heads.box_predictor.test_score_thresh=0.0"])
    assert _printed_difference(capsys.readouterr().out) < 1e-4
    ts = torch.jit.load(str(out / "model.ts"))
    image = torch.randn(6, 96, 80) * 0.1 + 0.15
    boxes, classes, masks, scores, *_ = ts(image)
    assert boxes.shape[0] > 0, "the traced model returned no detection to compare"
    assert boxes.shape[1] == 4 and masks.shape[0] == scores.shape[0] == classes.shape[0]


def test_quickstart_mask_rcnn_onnx_is_backbone_and_pyramid(tool, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "rcnn_onnx"
    tool.main(["--config-file", os.path.join(ROOT, "configs/quickstart/mask_rcnn_tiny.py"),
               "--format", "onnx", "--output", str(out), "--sample-size", "64", *TINY_ENCODER])
    assert _printed_difference(capsys.readouterr().out) < 1e-4
    sess = ort.InferenceSession(str(out / "backbone.onnx"), providers=["CPUExecutionProvider"])
    feats = sess.run(None, {"image": np.zeros((1, 6, 96, 64), np.float32)})
    assert [f.shape[-2:] for f in feats] == [(24, 16), (12, 8), (6, 4)]  # p2..p4 at another size


def test_export_method_export_writes_the_backbone_with_dynamic_size(tool, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "seg_export"
    tool.main(["--config-file", os.path.join(ROOT, "configs/quickstart/semantic_fpn_tiny.py"),
               "--format", "onnx", "--export-method", "export", "--output", str(out), "--sample-size", "64",
               *TINY_ENCODER])
    assert _printed_difference(capsys.readouterr().out) < 1e-4
    sess = ort.InferenceSession(str(out / "backbone.onnx"), providers=["CPUExecutionProvider"])
    feats = sess.run(None, {"image": np.zeros((1, 6, 96, 64), np.float32)})
    assert [f.shape[-2:] for f in feats] == [(24, 16), (12, 8), (6, 4)]


@pytest.mark.slow  # ~1 min: torch.export of the Swin windows
def test_export_method_export_takes_the_satlas_swin_backbone(tool, tmp_path, capsys):
    """Swin's stages through detectron2's FPN, exported with dynamic size: sizes whose stages
    have one window, several, and padded windows give every pyramid level."""
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "satlas_export"
    net = "model.backbone.bottom_up"
    tool.main(["--config-file", os.path.join(ROOT, "configs/satlas/semantic_fpn_swinb.py"),
               "--format", "onnx", "--export-method", "export", "--output", str(out), "--sample-size", "64",
               f"{net}.pretrained=False", f"{net}.encoder_kwargs.embed_dim=16", f"{net}.encoder_kwargs.depths=[1,1,2,1]",
               f"{net}.encoder_kwargs.num_heads=[2,2,4,4]", "model.backbone.out_channels=32",
               "model.sem_seg_head.conv_dims=32"])
    assert _printed_difference(capsys.readouterr().out) < 1e-4
    sess = ort.InferenceSession(str(out / "backbone.onnx"), providers=["CPUExecutionProvider"])
    for h, w in [(96, 64), (256, 256), (128, 320)]:
        feats = sess.run(None, {"image": np.zeros((1, 9, h, w), np.float32)})
        assert [f.shape[-2:] for f in feats] == [(h // s, w // s) for s in (4, 8, 16, 32)]


def test_export_tool_refuses_what_does_not_apply(tool, tmp_path):
    cfg = os.path.join(ROOT, "configs/quickstart/semantic_fpn_tiny.py")
    with pytest.raises(tool.ExportError, match="use --export-method tracing"):
        tool.main(["--config-file", cfg, "--export-method", "scripting", "--output", str(tmp_path), *TINY_ENCODER])
    with pytest.raises(tool.ExportError, match="use --format onnx"):
        tool.main(["--config-file", cfg, "--export-method", "export", "--output", str(tmp_path), *TINY_ENCODER])


def _write_yaml(path, bands, arch="GeoSemanticSegmentor"):
    n = len(bands)
    path.write_text(f"""
MODEL:
  META_ARCHITECTURE: {arch}
  DEVICE: cpu
  PIXEL_MEAN: {[0.15] * n}
  PIXEL_STD: {[0.1] * n}
  BACKBONE: {{NAME: build_geo_vit_sfp_backbone}}
  FPN: {{OUT_CHANNELS: 32}}
  D2GEO:
    ENCODER: dinov2_vits14
    ENCODER_KWARGS: {{embed_dim: 48, depth: 2, num_heads: 3, patch_size: 8, img_size: 96, bands: {list(bands)}}}
    SCALE_FACTORS: [2.0, 1.0, 0.5]
    TOP_BLOCK: False
  SEM_SEG_HEAD:
    NAME: SemSegFPNHead
    IN_FEATURES: [p2, p3, p4]
    NUM_CLASSES: 4
    CONVS_DIM: 32
    COMMON_STRIDE: 4
    NORM: GN
INPUT:
  MIN_SIZE_TRAIN: [96]
  MAX_SIZE_TRAIN: 96
  MIN_SIZE_TEST: 96
  MAX_SIZE_TEST: 96
  RANDOM_FLIP: horizontal
DATASETS: {{TRAIN: [d2geo_synth_seg_train], TEST: [d2geo_synth_seg_val]}}
DATALOADER: {{NUM_WORKERS: 0}}
SOLVER: {{IMS_PER_BATCH: 2, BASE_LR: 0.001, MAX_ITER: 2, CHECKPOINT_PERIOD: 1000, WARMUP_ITERS: 0, STEPS: []}}
TEST: {{EVAL_PERIOD: 0}}
""")
    return str(path)


HLS = ["blue", "green", "red", "nir_narrow", "swir_1", "swir_2"]


def test_export_tool_takes_yacs_configs_and_geotiffs(tool, tmp_path, capsys):
    import d2geo.data.synthetic  # noqa: F401
    from detectron2.data import DatasetCatalog

    cfg = _write_yaml(tmp_path / "seg.yaml", HLS)
    tif = DatasetCatalog.get("d2geo_synth_seg_val")[0]["file_name"]
    tool.main(["--config-file", cfg, "--format", "torchscript", "--sample-image", tif,
               "--output", str(tmp_path / "out"), "SOLVER.BASE_LR", "0.01"])
    assert _printed_difference(capsys.readouterr().out) < 1e-4


def test_detectron2_export_tool_loads_d2geo_yaml_through_run_tool(tmp_path):
    """Plain detectron2 fails on MODEL.D2GEO; `python -m d2geo.engine.run_tool` makes it work."""
    import cv2

    cfg = _write_yaml(tmp_path / "rgb.yaml", ["red", "green", "blue"])
    png = str(tmp_path / "sample.png")
    cv2.imwrite(png, np.random.default_rng(0).integers(0, 255, (96, 64, 3), dtype=np.uint8))
    args = [DETECTRON2_TOOL, "--config-file", cfg, "--format", "torchscript", "--export-method", "tracing",
            "--sample-image", png, "--output", str(tmp_path / "out"), "MODEL.DEVICE", "cpu"]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    plain = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=600)
    assert plain.returncode != 0 and "MODEL.D2GEO" in plain.stderr
    ours = subprocess.run([sys.executable, "-m", "d2geo.engine.run_tool", *args], capture_output=True,
                          text=True, env=env, timeout=600)
    assert ours.returncode == 0, ours.stderr[-3000:]
    assert os.path.isfile(tmp_path / "out" / "model.ts")


def test_geo_trainer_trains_two_iterations_on_synthetic_geotiffs(tmp_path, monkeypatch):
    from detectron2.config import get_cfg

    from d2geo.data.mapper import GeoDatasetMapper
    from d2geo.engine import GeoTrainer
    from d2geo.modeling import add_d2geo_config
    import d2geo.data.synthetic  # noqa: F401  (registers d2geo_synth_*)

    cfg = get_cfg()
    add_d2geo_config(cfg)
    cfg.merge_from_file(_write_yaml(tmp_path / "seg.yaml", HLS))
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    mapped = []
    call = GeoDatasetMapper.__call__
    monkeypatch.setattr(GeoDatasetMapper, "__call__", lambda self, d: mapped.append(d) or call(self, d))
    trainer = GeoTrainer(cfg)
    trainer.resume_or_load(resume=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    assert trainer.iter == 2  # iterations 0 and 1 ran
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) == 2 and all(np.isfinite(v) for v, _ in losses)
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("backbone.net.encoder") for k in changed)
    assert len(mapped) >= 4  # two batches of two, read by GeoDatasetMapper
    assert "mIoU" in trainer._last_eval_results["sem_seg"]  # the test loader reads GeoTIFFs too
