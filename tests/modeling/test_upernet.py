"""UperNetHead: equal to terratorch's UperNetDecoder (PPM + FPN fusion), registered for yacs
configs, and usable in the packaged upernet configs of every family."""
from __future__ import annotations

import sys
import types

import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")

from detectron2.config import get_cfg  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY, build_sem_seg_head  # noqa: E402

from helpers import load_upstream_module  # noqa: E402
from d2geo.modeling import GeoBackbone  # noqa: E402
from d2geo.modeling.heads import UperNetHead  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def terratorch_upernet():
    """terratorch's decoder file, with its two package imports (registry, ConvModule) served
    from a stub registry and terratorch's own decoders/utils.py."""
    utils = load_upstream_module("terratorch", "terratorch/models/decoders/utils.py", "_ref_tt_decoder_utils")
    registry = types.ModuleType("terratorch.registry")
    registry.TERRATORCH_DECODER_REGISTRY = types.SimpleNamespace(register=lambda cls: cls)
    stubs = {"terratorch": types.ModuleType("terratorch"), "terratorch.registry": registry,
             "terratorch.models": types.ModuleType("terratorch.models"),
             "terratorch.models.decoders": types.ModuleType("terratorch.models.decoders"),
             "terratorch.models.decoders.utils": utils}
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        import importlib.util
        import zipfile

        from helpers import or_skip as _or_skip

        from testkit import upstream
        with zipfile.ZipFile(_or_skip(upstream.upstream_wheel, "terratorch")) as zf:
            source = zf.read("terratorch/models/decoders/upernet_decoder.py").decode()
        module = importlib.util.module_from_spec(importlib.util.spec_from_loader("_ref_tt_upernet", loader=None))
        module.__package__ = "terratorch.models.decoders"
        exec(compile(source, "<terratorch wheel>/upernet_decoder.py", "exec"), module.__dict__)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return module


LEVELS = {"p2": ShapeSpec(channels=16, stride=4), "p3": ShapeSpec(channels=24, stride=8),
          "p4": ShapeSpec(channels=32, stride=16), "p5": ShapeSpec(channels=40, stride=32)}


def _features(batch=2, size=64, generator=None):
    return {k: torch.randn(batch, s.channels, size // s.stride, size // s.stride, generator=generator)
            for k, s in LEVELS.items()}


def test_upernet_equals_terratorch_decoder(terratorch_upernet):
    ref = terratorch_upernet.UperNetDecoder([16, 24, 32, 40], pool_scales=(1, 2, 3, 6), channels=32,
                                            align_corners=True)
    ours = UperNetHead(LEVELS, num_classes=3, channels=32, norm="BN", align_corners=True)
    pairs = [(o, r[1]) for o, r in zip(ours.ppm, ref.psp_modules)] + [(ours.ppm_bottleneck, ref.bottleneck)]
    pairs += list(zip(ours.lateral_convs, ref.lateral_convs)) + list(zip(ours.fpn_convs, ref.fpn_convs))
    pairs += [(ours.fpn_bottleneck, ref.fpn_bottleneck)]
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for o, r in pairs:
            r.conv.weight.copy_(torch.randn(r.conv.weight.shape, generator=g) * 0.2)
            r.norm.weight.uniform_(0.5, 1.5)
            r.norm.bias.normal_()
            r.norm.running_mean.normal_()
            r.norm.running_var.uniform_(0.5, 2.0)
            o.weight.copy_(r.conv.weight)
            assert o.bias is None
            o.norm.load_state_dict(r.norm.state_dict())
    ours.eval(), ref.eval()
    feats = _features(generator=g)
    with torch.no_grad():
        want = ref([feats[k] for k in ("p2", "p3", "p4", "p5")])
        got = ours.decode(feats)
    assert got.shape == (2, 32, 16, 16)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_upernet_interface_and_yacs_registry():
    assert SEM_SEG_HEADS_REGISTRY.get("UperNetHead") is UperNetHead
    cfg = get_cfg()
    cfg.MODEL.SEM_SEG_HEAD.NAME = "UperNetHead"
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 5
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 32
    cfg.MODEL.SEM_SEG_HEAD.NORM = "GN"
    head = build_sem_seg_head(cfg, LEVELS)
    assert isinstance(head, UperNetHead) and head.in_features == ["p2", "p3", "p4", "p5"]
    assert head.ignore_value == 255  # detectron2's default IGNORE_VALUE
    feats = _features(size=96)
    head.train()
    target = torch.randint(0, 5, (2, 96, 96))
    target[:, :10] = 255
    none, losses = head(feats, target)
    assert none is None and set(losses) == {"loss_sem_seg"} and torch.isfinite(losses["loss_sem_seg"])
    head.eval()
    logits, empty = head(feats)
    assert logits.shape == (2, 5, 96, 96) and empty == {}
    # three levels (SimpleFeaturePyramid on 8-pixel patches) work too
    three = UperNetHead({k: LEVELS[k] for k in ("p2", "p3", "p4")}, num_classes=2, channels=32)
    assert three.eval()(feats)[0].shape == (2, 2, 96, 96)


def test_upernet_bad_inputs():
    with pytest.raises(ValueError, match="at least two"):
        UperNetHead({"p5": LEVELS["p5"]}, num_classes=2)
    with pytest.raises(ValueError, match="double"):
        UperNetHead({"p2": LEVELS["p2"], "p4": LEVELS["p4"]}, num_classes=2)
    head = UperNetHead(LEVELS, num_classes=2, channels=32)
    with pytest.raises(KeyError, match="missing"):
        head.eval()({"p2": torch.zeros(1, 16, 8, 8)})
    # levels wider or narrower than input_shape says (a Swin-V2-T under Swin-V2-B widths): named, with the fix
    feats = _features(batch=1)
    feats["p3"] = torch.zeros(1, 48, 8, 8)
    with pytest.raises(ValueError, match=r"p3: 48 \(head built for 24\).*input_shape\[<level>\].channels"):
        head(feats)


# -- packaged configs --------------------------------------------------------------------------
UPERNET_CONFIGS = ["dinov2/upernet_vitb14.py", "dinov3/upernet_vitl16_sat.py",
                   "prithvi/upernet_eo_v2_300_tl.py", "clay/upernet_v1_5_large.py", "terramind/upernet_v1_base.py",
                   "copernicusfm/upernet_vitb16.py", "croma/upernet_base.py", "dofa/upernet_vitb16.py",
                   "satlas/upernet_swinb.py", "scale_mae/upernet_vitl16.py", "ssl4eo/upernet_vits16.py",
                   "ssl4eo/upernet_vits16_data2vec.py"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from heads_tiny import synthetic_geotiffs

    return synthetic_geotiffs(tmp_path_factory, "upernet")


def test_upernet_configs_compose_the_family_configs():
    from d2geo import model_zoo

    for name in UPERNET_CONFIGS + ["quickstart/upernet_tiny.py"]:
        assert name in model_zoo.list_configs()
        cfg = model_zoo.get_config(name)
        fpn = model_zoo.get_config(name.replace("upernet", "semantic_fpn"))
        assert cfg.model.sem_seg_head._target_ is UperNetHead
        if name.startswith("satlas/"):  # Swin's stages feed UperNet directly: no FPN in between
            net, fpn_net = cfg.model.backbone, fpn.model.backbone.bottom_up
            assert net._target_ is GeoBackbone and "bottom_up" not in cfg.model.backbone
            assert net.layers == fpn_net.layers == (0, 1, 2, 3) and net.norm is False
            shapes = cfg.model.sem_seg_head.input_shape
            assert sorted(shapes) == ["res2", "res3", "res4", "res5"]
            assert [(shapes[k].stride, shapes[k].channels) for k in sorted(shapes)] == [
                (4, 128), (8, 256), (16, 512), (32, 1024)]  # Swin-V2-B's stage widths
        else:  # everything but the head (and Clay's / Scale-MAE's taps) is the semantic FPN config's
            net, fpn_net = cfg.model.backbone.net, fpn.model.backbone.net
            if name != "quickstart/upernet_tiny.py":
                assert len(net.layers) == 4
                assert sorted(cfg.model.sem_seg_head.input_shape) == ["p2", "p3", "p4", "p5"]
            if name.split("/")[0] not in ("clay", "scale_mae"):
                assert net.layers == fpn_net.layers and net.norm == fpn_net.norm
            if not name.startswith("clay/"):
                assert cfg.model.backbone.get("scale_factors") == fpn.model.backbone.get("scale_factors")
        assert net.encoder == fpn_net.encoder and net.encoder_kwargs == fpn_net.encoder_kwargs
        assert net.weights == fpn_net.weights and net.get("pretrained") == fpn_net.get("pretrained")
        assert list(cfg.model.pixel_mean) == list(fpn.model.pixel_mean)
        assert cfg.optimizer.lr == fpn.optimizer.lr and cfg.train.max_iter == fpn.train.max_iter
        assert cfg.train.output_dir != fpn.train.output_dir
    # the taps PANGAEA's Scale-MAE encoder gives its UperNet
    assert model_zoo.get_config("scale_mae/upernet_vitl16.py").model.backbone.net.layers == (7, 11, 15, 23)


@pytest.mark.parametrize("name", UPERNET_CONFIGS + ["prithvi/upernet_eo_v2_300_tl.py:attention",
                                                   "terramind/upernet_v1_base.py:concat"])
def test_upernet_config_trains(name, synthetic, tmp_path):
    from heads_tiny import falling, family_of, tiny_config, train_steps

    name, _, fold = name.partition(":")
    cfg = tiny_config(name, synthetic, tmp_path)
    if fold == "concat":  # TerraMind's modalities side by side: two modalities, 2 x 64 channels
        kw = cfg.model.backbone.net.encoder_kwargs
        cfg.model.backbone.net.encoder_kwargs = dict(kw, merge="concat", bands=kw["bands"][:4] + [
            "S2L1C:swir_1", "S2L1C:swir_2"])
        model, totals = train_steps(cfg, steps=14, lr=3e-3)
        assert all(s.channels == 128 for s in model.backbone.net.output_shape().values())
        assert model.backbone.net.encoder.feature_dim == 128
        assert falling(totals), totals
        return
    if fold:  # the learned temporal pooling trains with the head
        cfg.model.backbone.net.temporal_fold = fold
        cfg.model.backbone.net.temporal_frames = [0, 2, 3]
    if family_of(name) in ("dinov3", "clay", "copernicusfm"):  # build and one step: the wiring is what differs
        model, totals = train_steps(cfg, steps=1)
        assert isinstance(model.sem_seg_head, UperNetHead)
        return
    model, totals = train_steps(cfg, steps=14, lr=3e-3)
    assert falling(totals), totals
    if name.startswith("satlas/"):  # Swin's stages themselves are the head's levels
        assert isinstance(model.backbone, GeoBackbone) and model.sem_seg_head.in_features == [
            "res2", "res3", "res4", "res5"]
        assert model.sem_seg_head.in_channels == [32, 64, 128, 256]
    if fold:
        pools = model.backbone.net.temporal_pools
        assert all(p.query.abs().sum() > 0 for p in pools)  # the queries left their zero start
