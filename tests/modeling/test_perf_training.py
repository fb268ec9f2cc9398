"""Training-speed fixes keep the maths: fused AdamW from the config, the fused channel
LayerNorm of the pyramids, and bfloat16 autocast + activation checkpointing end to end
on the CPU through d2geo.engine.amp (detectron2's AMPTrainer needs CUDA)."""
import itertools
import math

import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")

from detectron2.config import LazyCall as L  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.engine import SimpleTrainer  # noqa: E402
from detectron2.layers.batch_norm import LayerNorm as D2LayerNorm  # noqa: E402
from detectron2.structures import BitMasks, Boxes, Instances  # noqa: E402

from helpers import tiny_mask_rcnn  # noqa: E402
from d2geo.engine.amp import AutocastTrainer, build_trainer, resolve_precision  # noqa: E402
from d2geo.modeling import GeoBackbone, MultiLayerPyramid, SimpleFeaturePyramid  # noqa: E402
from d2geo.modeling.pyramid import ChannelLayerNorm  # noqa: E402

BANDS4 = ("blue", "green", "red", "nir")
#: how the tests use dinov2_test: three blocks, 16 px patches, 64 px native, four bands
TINY = dict(depth=3, patch_size=16, img_size=64, bands=BANDS4)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_rcnn(grad_checkpointing=False, box_conv_dims=()):
    net = L(GeoBackbone)(encoder="dinov2_test", encoder_kwargs=TINY, grad_checkpointing=grad_checkpointing)
    return tiny_mask_rcnn(net, num_bands=4, pixel_mean=0.3, pixel_std=0.2, box_conv_dims=box_conv_dims)


def batch_of(n=2, size=64):
    g = torch.Generator().manual_seed(3)
    out = []
    for i in range(n):
        img = torch.rand(4, size, size, generator=g) * 0.1 + 0.25
        boxes = torch.tensor([[4.0, 6, 30, 28], [34, 30, 60, 60]])
        masks = torch.zeros(2, size, size, dtype=torch.bool)
        for k, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
            img[:, y0:y1, x0:x1] += 0.3 * (k + 1)  # objects brighter than the background
            masks[k, y0:y1, x0:x1] = True
        inst = Instances((size, size))
        inst.gt_boxes, inst.gt_classes, inst.gt_masks = Boxes(boxes), torch.tensor([0, 1]), BitMasks(masks)
        out.append({"image": img, "height": size, "width": size, "instances": inst})
    return out


# -- fused AdamW from configs/common/optim.py ------------------------------------------------------
def test_config_adamw_is_fused_and_matches_the_unfused_update():
    import os

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = LazyConfig.load(os.path.join(repo, "configs", "common", "optim.py"))
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"backbone": GeoBackbone("dinov2_test", encoder_kwargs=TINY)})
    twin = torch.nn.ModuleDict({"backbone": GeoBackbone("dinov2_test", encoder_kwargs=TINY)})
    twin.load_state_dict(model.state_dict())
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg.AdamW.params.model = model
    fused = instantiate(cfg.AdamW)
    assert fused.defaults["fused"] is True
    lrs = {g["lr"] for g in fused.param_groups}
    assert len(lrs) > 1  # layer-wise decay: several groups, each updated by the fused kernel
    cfg.AdamW.params.model = twin
    cfg.AdamW.fused = False
    plain = instantiate(cfg.AdamW)
    x = torch.randn(2, 4, 64, 64)
    for _ in range(3):
        for m, opt in ((model, fused), (twin, plain)):
            opt.zero_grad()
            m["backbone"](x)["layer2"].square().mean().backward()
            opt.step()
    # Adam divides by sqrt(v): where a gradient is near zero, the fused and the unfused kernels'
    # rounding differs by a few 1e-6 after three steps. Updates are ~lr (1e-4) a step, so
    # 5e-6 is 5% of one step: a wrong update (lr, decay or group) is far outside it.
    for (n, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=5e-6, msg=n)
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, start[n])]
    assert "backbone.encoder.vit.blocks.0.attn.qkv.weight" in moved and "backbone.encoder.vit.pos_embed" in moved


# -- ChannelLayerNorm --------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 32, 9, 11), (5, 16, 7, 7)])
def test_channel_layernorm_matches_detectron2_forward_and_backward(shape):
    torch.manual_seed(0)
    ref, ours = D2LayerNorm(shape[1]), ChannelLayerNorm(shape[1])
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    ours.load_state_dict(ref.state_dict())
    x = (torch.randn(shape) * 3 + 1).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    g = torch.randn(shape)
    y_ref, y = ref(x), ours(x2)
    assert y.is_contiguous()
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    (y_ref * g).sum().backward()
    (y * g).sum().backward()
    torch.testing.assert_close(x2.grad, x.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ours(torch.randn(2, shape[1], 4))


def test_pyramids_use_the_fused_layernorm_with_unchanged_state_dict_keys():
    torch.manual_seed(0)
    sfp = SimpleFeaturePyramid(GeoBackbone("dinov2_test", encoder_kwargs=TINY), out_channels=32, norm="LN")
    mlp = MultiLayerPyramid(GeoBackbone("dinov2_test", encoder_kwargs=dict(TINY, depth=4), layers=(0, 1, 2, 3)),
                            out_channels=32, norm="LN")
    for pyr in (sfp, mlp):
        norms = [m for n, m in pyr.named_modules() if isinstance(m, D2LayerNorm)]
        assert norms and all(type(m) is ChannelLayerNorm for m in norms)
    # same keys as detectron2's own pyramid, so checkpoints move between the two
    from detectron2.modeling.backbone.vit import SimpleFeaturePyramid as D2SFP

    d2 = D2SFP(GeoBackbone("dinov2_test", encoder_kwargs=TINY), "layer2", 32, (4.0, 2.0, 1.0, 0.5), norm="LN")
    assert set(d2.state_dict()) == set(sfp.state_dict())
    sfp.load_state_dict(d2.state_dict())
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        a, b = sfp(x), d2(x)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-4)
    # no norm: convs keep their bias, as in detectron2
    plain = SimpleFeaturePyramid(GeoBackbone("dinov2_test", encoder_kwargs=TINY), out_channels=32, norm="")
    assert not any(isinstance(m, D2LayerNorm) for m in plain.modules())
    assert plain.simfp_3[0].bias is not None


def test_georcnn_heads_run_the_fused_layernorm_with_the_same_losses():
    import copy

    from detectron2.utils.events import EventStorage

    torch.manual_seed(0)
    model = tiny_rcnn(box_conv_dims=[32])  # a conv box head with detectron2's "LN"
    head_norms = [m for n, m in model.roi_heads.named_modules() if isinstance(m, D2LayerNorm)]
    assert len(head_norms) == 2 and all(type(m) is ChannelLayerNorm for m in head_norms)  # box + mask conv
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if type(m) is ChannelLayerNorm:
            m.__class__ = D2LayerNorm
    assert not any(type(m) is ChannelLayerNorm for m in ref.modules())
    data = batch_of()
    with EventStorage(0):
        torch.manual_seed(1)
        ours = model(data)
        torch.manual_seed(1)
        theirs = ref(data)
    for k in theirs:
        torch.testing.assert_close(ours[k], theirs[k], rtol=1e-4, atol=1e-5, msg=k)
    ours_total, theirs_total = sum(ours.values()), sum(theirs.values())
    ours_total.backward()
    theirs_total.backward()
    g1 = model.roi_heads.box_head.conv1.weight.grad
    g2 = ref.roi_heads.box_head.conv1.weight.grad
    torch.testing.assert_close(g1, g2, rtol=1e-3, atol=1e-5)


# -- bfloat16 autocast + activation checkpointing ----------------------------------------------------
def test_bf16_autocast_and_grad_checkpointing_train_end_to_end_on_cpu():
    torch.manual_seed(0)
    model = tiny_rcnn(grad_checkpointing=True)
    enc = model.backbone.net.encoder
    assert enc.grad_checkpointing
    init = {n: p.detach().clone() for n, p in enc.named_parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-3, fused=True)
    data = batch_of()
    trainer = build_trainer(model, itertools.repeat(data), opt, amp=dict(enabled=True, precision="bfloat16"))
    assert isinstance(trainer, AutocastTrainer) and trainer.grad_scaler is None
    assert trainer.device_type == "cpu" and trainer.precision == torch.bfloat16

    seen = {"dtypes": [], "calls": 0}
    block = enc.vit.blocks[0]
    h1 = block.attn.qkv.register_forward_hook(lambda m, i, o: seen["dtypes"].append(o.dtype))
    h2 = block.register_forward_pre_hook(lambda m, i: seen.__setitem__("calls", seen["calls"] + 1))
    iters = 8
    trainer.train(0, iters)
    h1.remove()
    h2.remove()

    assert set(seen["dtypes"]) == {torch.bfloat16}  # the encoder's matmuls ran in bfloat16
    assert seen["calls"] == 2 * iters  # forward + recomputation in backward: checkpointing is on
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == iters and all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:2]) / 2, losses
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert enc.vit.blocks[0].attn.qkv.weight.grad.abs().sum() > 0  # gradients reach the first block
    assert enc.vit.patch_embed.proj.weight.grad.abs().sum() > 0
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    moved = [n for n, p in enc.named_parameters() if not torch.equal(p, init[n])]
    assert "vit.blocks.0.attn.qkv.weight" in moved and "vit.patch_embed.proj.weight" in moved


def test_autocast_matches_float32_closely_on_the_first_step():
    """bf16 changes the numbers only by rounding: first-step losses agree with float32."""
    torch.manual_seed(0)
    model = tiny_rcnn().train()
    data = batch_of()
    from detectron2.utils.events import EventStorage

    with EventStorage(0):
        torch.manual_seed(1)
        fp32 = model(data)
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(data)
    for k in ("loss_rpn_cls", "loss_cls", "loss_mask"):
        assert abs(bf16[k].float().item() - fp32[k].item()) < 0.05 * abs(fp32[k].item()) + 1e-3, k


def test_build_trainer_options_and_errors():
    model = tiny_rcnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = itertools.repeat(batch_of(1))
    assert type(build_trainer(model, loader, opt, amp=dict(enabled=False))) is SimpleTrainer
    assert type(build_trainer(model, loader, opt, amp=None)) is SimpleTrainer
    fp16 = build_trainer(model, loader, opt, amp=dict(enabled=True, precision="float16"))
    assert isinstance(fp16.grad_scaler, torch.amp.GradScaler)
    state = fp16.state_dict()
    assert "grad_scaler" in state
    fp16.load_state_dict(state)
    bf16 = build_trainer(model, loader, opt, amp=dict(enabled=True))
    assert bf16.precision == torch.bfloat16 and "grad_scaler" not in bf16.state_dict()
    bf16.load_state_dict(state)  # a float16 run's checkpoint resumes in bfloat16 (scaler state ignored)
    assert resolve_precision("bf16") is torch.bfloat16 and resolve_precision(torch.float16) is torch.float16
    assert resolve_precision("auto", "cpu") is torch.bfloat16
    assert build_trainer(model, loader, opt, amp=dict(enabled=True, precision="auto")).precision == torch.bfloat16
    with pytest.raises(ValueError, match="bfloat16"):
        build_trainer(model, loader, opt, amp=dict(enabled=True, precision="float32"))
    with pytest.raises(ValueError, match="unknown train.amp keys"):
        build_trainer(model, loader, opt, amp=dict(enabled=True, dtype="bf16"))
    model.eval()
    with pytest.raises(RuntimeError, match="eval mode"):
        bf16.run_step()
