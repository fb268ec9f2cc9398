"""CUDA paths of the models: every encoder family and its GeoBackbone (and pyramid) on the GPU
equal to the CPU in float32; bfloat16 and float16 autocast training of a Mask R-CNN and a
semantic FPN config with falling loss; the ViT-Adapter's deformable attention through
detrex's CUDA kernel equal to the pure-torch path.

Run by ``benchmarks/gpu_check.sh`` (``pytest -m gpu``); without CUDA they skip, and the
dry run (``D2GEO_GPU_TEST_DEVICE=cpu``) runs them on the CPU where that means something.
"""
from __future__ import annotations

import itertools

import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")

from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from helpers import rel_err, tiny_rcnn_heads  # noqa: E402
from gpu_common import FP32_REL, _no_tf32, device, needs_cuda  # noqa: E402,F401  (fixtures)
from heads_tiny import falling, synthetic_geotiffs, tiny_config, tiny_encoder  # noqa: E402
from d2geo import model_zoo  # noqa: E402
from d2geo.modeling import find_geo_backbones  # noqa: E402

pytestmark = pytest.mark.gpu

#: one packaged semantic FPN config per encoder family (SSL4EO's data2vec is a family of its own)
FAMILY_CONFIGS = {
    "dinov2": "dinov2/semantic_fpn_vitb14.py",
    "dinov3": "dinov3/semantic_fpn_vitl16_sat.py",
    "prithvi": "prithvi/semantic_fpn_eo_v2_300_tl.py",
    "clay": "clay/semantic_fpn_v1_5_large.py",
    "terramind": "terramind/semantic_fpn_v1_base.py",
    "copernicusfm": "copernicusfm/semantic_fpn_vitb16.py",
    "ssl4eo": "ssl4eo/semantic_fpn_vits16.py",
    "ssl4eo_data2vec": "ssl4eo/semantic_fpn_vits16_data2vec.py",
    "scale_mae": "scale_mae/semantic_fpn_vitl16.py",
    "dofa": "dofa/semantic_fpn_vitb16.py",
    "croma": "croma/semantic_fpn_base.py",
    "satlas": "satlas/semantic_fpn_swinb.py",
    "panopticon": "panopticon/semantic_fpn_vitb14.py",
    "galileo": "galileo/semantic_fpn_base.py",
    "anysat": "anysat/semantic_fpn_base.py",
    "olmoearth": "olmoearth/semantic_fpn_v1_base.py",
}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return synthetic_geotiffs(tmp_path_factory, "gpu", num_train=2)


def _to(batch, device):
    return [{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in d.items()} for d in batch]


def _outputs(model, batch):
    """The GeoBackbone's maps, the pyramid's maps and the class logits of one inference pass."""
    taken = {}
    (geo,) = find_geo_backbones(model)
    hooks = [geo.register_forward_hook(lambda m, i, o: taken.__setitem__("geo", o)),
             model.backbone.register_forward_hook(lambda m, i, o: taken.__setitem__("pyramid", o))]
    try:
        with torch.no_grad():
            out = model(batch)
    finally:
        for h in hooks:
            h.remove()
    flat = {f"GeoBackbone {k}": v for k, v in taken["geo"].items()}
    flat.update({f"pyramid {k}": v for k, v in taken["pyramid"].items()})
    flat["sem_seg"] = torch.stack([o["sem_seg"] for o in out])
    return flat


@pytest.mark.parametrize("family", list(FAMILY_CONFIGS))
def test_encoder_and_backbone_on_the_device_equal_the_cpu(family, synthetic, tmp_path, device):
    """The family's GeoBackbone (encoder and metadata path), its pyramid and the whole segmentor
    on ``device`` give the CPU's float32 result (TF32 off) on a real mapped batch."""
    torch.manual_seed(0)
    cfg = tiny_config(FAMILY_CONFIGS[family], synthetic, tmp_path)
    batch = next(iter(instantiate(cfg.dataloader.train)))
    assert batch[0]["metadata"], "the mapped batch carries acquisition metadata"
    model = instantiate(cfg.model).eval()
    ref = _outputs(model, batch)
    model.to(device)
    assert next(model.parameters()).device.type == device.type
    got = _outputs(model, _to(batch, device))
    assert set(got) == set(ref)
    for name, r in ref.items():
        g = got[name]
        assert g.device.type == device.type, name
        err = rel_err(g.cpu(), r)
        assert err < FP32_REL, f"{family} {name}: {device} vs cpu relative error {err:.2e}"


# -- autocast training ----------------------------------------------------------------------------
def _mask_rcnn_config(datasets, tmp_path):
    """dinov2/mask_rcnn_vitb14.py with DINOv2's tiny test variant (no weights), tiny heads, the
    synthetic GeoTIFFs' buildings."""
    cfg = LazyConfig.apply_overrides(model_zoo.get_config("dinov2/mask_rcnn_vitb14.py"),
                                     [f"train.output_dir={tmp_path}"])
    net = cfg.model.backbone.net
    bands = tiny_encoder(net)
    cfg.model.pixel_mean, cfg.model.pixel_std = [1000.0] * len(bands), [1000.0] * len(bands)
    tiny_rcnn_heads(cfg.model)
    cfg.model.roi_heads.num_classes = 1
    cfg.dataloader.train.dataset.names = f"{datasets[1]}_det_train"
    cfg.dataloader.train.mapper.bands = bands
    cfg.dataloader.train.total_batch_size = 2
    cfg.dataloader.train.num_workers = 0
    return cfg


def _autocast_steps(cfg, device, precision: str, steps: int = 10, lr: float = 3e-3):
    """``steps`` steps of d2geo's AutocastTrainer (what ``train.amp`` builds) on one fixed batch;
    returns (trainer, total losses)."""
    from d2geo.engine.amp import build_trainer

    torch.manual_seed(0)
    batch = next(iter(instantiate(cfg.dataloader.train)))
    model = instantiate(cfg.model).to(device).train()
    cfg.optimizer.params.model = model
    cfg.optimizer.lr = lr
    trainer = build_trainer(model, itertools.repeat(batch), instantiate(cfg.optimizer),
                            amp=dict(enabled=True, precision=precision))
    totals = []
    with EventStorage(0) as storage:
        for i in range(steps):
            storage.iter = i
            torch.manual_seed(1)  # the same proposal/ROI sampling draws every step
            trainer.run_step()
            totals.append(storage.history("total_loss").latest())
    return trainer, totals


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
@pytest.mark.parametrize("arch", ["mask_rcnn", "semantic_fpn"])
def test_autocast_training_steps_run_and_the_loss_falls(arch, precision, synthetic, tmp_path, device):
    if arch == "mask_rcnn":
        cfg = _mask_rcnn_config(synthetic, tmp_path)
    else:
        cfg = tiny_config("dinov2/semantic_fpn_vitb14.py", synthetic, tmp_path)
    trainer, totals = _autocast_steps(cfg, device, precision)
    assert trainer.device_type == device.type
    assert trainer.precision == getattr(torch, precision)
    assert (trainer.grad_scaler is not None) == (precision == "float16")  # float16 scales its gradients
    assert all(torch.isfinite(torch.tensor(totals))), totals
    assert falling(totals), f"{arch} {precision} on {device}: loss did not fall: {totals}"


# -- deformable attention: detrex's CUDA kernel vs pure torch --------------------------------------
def _pure_torch(monkeypatch):
    import d2geo.modeling.vit_adapter as va

    monkeypatch.setattr(va, "_detrex_function", lambda: None)


def test_deformable_attention_cuda_kernel_equals_the_pure_torch_path(device, monkeypatch):
    needs_cuda("detrex's MultiScaleDeformableAttention CUDA kernel")
    from d2geo.modeling.vit_adapter import MSDeformAttn, _detrex_function

    assert _detrex_function() is not None, "detrex's compiled _C is missing: the gpu_check build of detrex failed"
    torch.manual_seed(0)
    shapes = [(16, 20), (8, 10), (4, 5)]
    S = sum(h * w for h, w in shapes)
    attn = MSDeformAttn(64, num_heads=8, num_levels=3, num_points=4).to(device)
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.2)  # sampling points off the reference, some outside the maps
    query = torch.randn(2, 50, 64, device=device, requires_grad=True)
    inputs = torch.randn(2, S, 64, device=device, requires_grad=True)
    refp = torch.rand(2, 50, 2, device=device)

    def run():
        out = attn(query, refp, inputs, shapes)
        grads = torch.autograd.grad(out.square().sum(), [query, inputs, *attn.parameters()])
        return out, grads

    kernel_out, kernel_grads = run()
    with monkeypatch.context() as m:
        _pure_torch(m)
        torch_out, torch_grads = run()
    assert rel_err(kernel_out, torch_out) < FP32_REL
    for k, t in zip(kernel_grads, torch_grads):
        assert rel_err(k, t) < 1e-3  # the kernel's backward accumulates with atomics


def test_vit_adapter_through_the_cuda_kernel_equals_the_pure_torch_path(device, monkeypatch):
    needs_cuda("detrex's MultiScaleDeformableAttention CUDA kernel")
    from d2geo.modeling import GeoBackbone, ViTAdapter

    torch.manual_seed(0)
    tiny = dict(embed_dim=64, depth=4, num_heads=4, patch_size=16, img_size=64, bands=["red", "green", "blue"])
    net = GeoBackbone("dinov2_vits14_reg", encoder_kwargs=tiny)
    adapter = ViTAdapter(net, deform_heads=4).to(device).eval()
    x = torch.randn(2, 3, 96, 128, device=device)
    with torch.no_grad():
        kernel = adapter(x)
        with monkeypatch.context() as m:
            _pure_torch(m)
            pure = adapter(x)
    assert set(kernel) == set(pure)
    for k in kernel:
        assert rel_err(kernel[k], pure[k]) < FP32_REL, k


def test_detrex_dino_runs_on_the_device_through_detrexs_kernel(device, monkeypatch):
    """The packaged DINO config (tiny encoder, one encoder/decoder layer) predicts on the device;
    on CUDA its deformable attention goes through detrex's compiled kernel."""
    pytest.importorskip("detrex", reason="detrex is not installed")
    import os

    from d2geo.modeling.detrex import detrex_projects_root

    if detrex_projects_root() is None:
        pytest.skip("detrex is installed but not from a checkout with projects/dino")
    from detrex.layers import multi_scale_deform_attn as msda

    calls = []
    real_apply = msda.MultiScaleDeformableAttnFunction.apply
    monkeypatch.setattr(msda.MultiScaleDeformableAttnFunction, "apply",
                        lambda *a: calls.append(1) or real_apply(*a))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = LazyConfig.load(os.path.join(root, "configs/detrex_dino/dino_dinov2_vitb14.py"))
    cfg = LazyConfig.apply_overrides(cfg, [
        "model.backbone.net.encoder_kwargs.depth=1", "model.backbone.net.encoder_kwargs.embed_dim=48",
        "model.backbone.net.encoder_kwargs.num_heads=3", "model.transformer.encoder.num_layers=1",
        "model.transformer.decoder.num_layers=1", f"model.device={device.type}", "model.num_queries=300",
        "model.select_box_nums_for_evaluation=100"])
    cfg.model.backbone.net.weights = None
    cfg.model.backbone.net.pretrained = False
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(device).eval()
    image = torch.rand(3, 128, 128) * 255
    with torch.no_grad():
        (out,) = model([{"image": image.to(device), "height": 128, "width": 128}])
    boxes = out["instances"].pred_boxes.tensor
    assert len(out["instances"]) == 100 and boxes.device.type == device.type and torch.isfinite(boxes).all()
    assert bool(calls) == (device.type == "cuda"), f"detrex's kernel ran {len(calls)} times on {device}"
