"""Satlas ResNet-50 / ResNet-152 fidelity against torchgeo's ``resnet50`` / ``resnet152``
(torchgeo/models/resnet.py, loaded from the torchgeo 0.8.1 wheel with its sibling swin.py,
whose band lists and scaling it imports), the published key layout, and the hierarchical path
into detectron2's FPN.

torchgeo's ``resnet50(weights)`` builds ``timm.create_model("resnet50", in_chans=...)`` and
loads the published state dict (``strict=False``, asserting only ``fc`` may be missing or
unexpected). The test runs that function itself with a weights object holding a random
state dict in the published layout (batch-norm statistics and affine parameters well away from
their init). The stage taps are the outputs of ``layer1..layer4``.
"""
import sys
import types
import zipfile

import pytest
import timm
import torch

from helpers import load_upstream_module, or_skip, rel_err
from testkit import upstream
from d2geo.encoders import CheckpointError, EncoderInputError, build_encoder, load_encoder_weights
from d2geo.encoders.adapt import BAND_RECORD
from d2geo.encoders.satlas import SATLAS_STATS
from d2geo.encoders.satlas_resnet import SATLAS_RESNET_PRETRAINED

TOL = 1e-4
ROOT = "_ref_torchgeo_resnet"


@pytest.fixture(scope="module")
def tg():
    for name in (ROOT, f"{ROOT}.models"):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = []
            sys.modules[name] = pkg
    swin = load_upstream_module("torchgeo", "torchgeo/models/swin.py", f"{ROOT}.models.swin")
    mod = load_upstream_module("torchgeo", "torchgeo/models/resnet.py", f"{ROOT}.models.resnet")
    # our band and scaling table is torchgeo's
    assert swin._satlas_sentinel2_bands == SATLAS_STATS["sentinel2_ms"].bands
    assert swin._satlas_bands == SATLAS_STATS["sentinel2_rgb"].bands
    norm = swin._satlas_sentinel2_transforms[1]
    assert list(norm.std) == list(SATLAS_STATS["sentinel2_ms"].std) and list(norm.mean) == [0.0] * 9
    return mod


class _Weights:
    """What torchgeo's resnet50 / resnet152 read of a weights enum member."""

    def __init__(self, sd, in_chans):
        self.meta = {"in_chans": in_chans}
        self._sd = sd

    def get_state_dict(self, progress=True):
        return dict(self._sd)


def _published(arch, in_chans, seed=0):
    torch.manual_seed(seed)
    model = timm.create_model(arch, in_chans=in_chans)  # with its 1000-class fc, as published files may be
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith("running_var"):
            v = 0.5 + torch.rand_like(v)
        elif k.endswith(("running_mean", "bn1.bias", "bn2.bias", "bn3.bias", "downsample.1.bias")):
            v = 0.1 * torch.randn_like(v)
        elif k.endswith(("bn1.weight", "bn2.weight", "bn3.weight", "downsample.1.weight")):
            v = 0.6 + 0.3 * torch.rand_like(v)  # timm zero-inits the last bn of each block
        sd[k] = v
    assert "fc.weight" in sd and "layer4.0.downsample.1.running_var" in sd
    return sd


def _taps(model, x):
    with torch.no_grad():
        h = model.maxpool(model.act1(model.bn1(model.conv1(x))))
        outs = []
        for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
            h = stage(h)
            outs.append(h)
    return outs


def test_published_names_are_torchgeos():
    """Our table is torchgeo 0.8.1's ResNet50/152 SENTINEL2_*_SATLAS entries, URL for URL."""
    def read():
        with zipfile.ZipFile(upstream.upstream_wheel("torchgeo")) as zf:
            return zf.read("torchgeo/models/resnet.py").decode()
    text = or_skip(read)
    from d2geo.encoders import get_pretrained_cfg
    for name, (file, arch, _) in SATLAS_RESNET_PRETRAINED.items():
        url = f"https://hf.co/torchgeo/satlas/resolve/081d6607431bf36bdb59c223777cbb267131b8f2/{file}"
        assert url in text, name
        cfg = get_pretrained_cfg(name)
        assert cfg.pinned and cfg.revision == "081d6607431bf36bdb59c223777cbb267131b8f2"
        assert cfg.source.endswith(file) and cfg.license == "Apache-2.0"
    assert text.count("_SATLAS = Weights(\n        url='https://hf.co/torchgeo/satlas/resolve/081d6607431bf36bdb59c223777"
                      "cbb267131b8f2/sentinel2_resnet") == len(SATLAS_RESNET_PRETRAINED)


@pytest.mark.parametrize("name,arch,in_chans,shapes", [
    ("satlas_resnet50_sentinel2_si_ms", "resnet50", 9, ((1, 9, 256, 256), (1, 9, 96, 160), (2, 9, 64, 32))),
    ("satlas_resnet152_sentinel2_mi_rgb", "resnet152", 3, ((1, 3, 64, 96), (1, 3, 32, 64))),
])
def test_stage_taps_match_torchgeo_native_and_non_square(tg, name, arch, in_chans, shapes, tmp_path):
    """The real architectures with the published layout (fc included), every stage, at the
    native 256 px and non-square sizes."""
    sd = _published(arch, in_chans)
    path = tmp_path / f"{name}.pth"
    torch.save(sd, path)
    ref = getattr(tg, arch)(_Weights(sd, in_chans)).eval()
    enc = build_encoder(name, weights=path).eval()
    assert enc.out_strides == (4, 8, 16, 32) and enc.out_channels == (256, 512, 1024, 2048)
    for shape in shapes:
        x = torch.randn(shape)
        with torch.no_grad():
            got = enc.forward_features(x, layers=[0, 1, 2, 3])
        for i, (a, b) in enumerate(zip(got, _taps(ref, x))):
            assert a.shape == (shape[0], 256 * 2**i, shape[2] // 4 // 2**i, shape[3] // 4 // 2**i)
            assert rel_err(a, b) <= TOL, (shape, i, rel_err(a, b))


def test_published_layout_key_mapping():
    """Every tensor of a published file is loaded or named: fc left out, the batch-norm step
    counters left out with frozen batch norms and loaded without; under a wrapper prefix too."""
    sd = _published("resnet50", 9)
    enc = build_encoder("satlas_resnet50_sentinel2_si_ms")
    report = load_encoder_weights(enc, {"state_dict": {f"backbone.{k}": v for k, v in sd.items()}})
    counters = {f"backbone.{k}" for k in sd if k.endswith("num_batches_tracked")}
    assert counters and set(report.ignored) == {"backbone.fc.weight", "backbone.fc.bias"} | counters
    assert set(report.loaded) == set(enc.state_dict()) - {BAND_RECORD}
    assert torch.equal(enc.layer3[2].bn2.running_var, sd["layer3.2.bn2.running_var"])
    trainable = build_encoder("satlas_resnet50_sentinel2_si_ms", freeze_bn=False)
    report = load_encoder_weights(trainable, sd)
    assert set(report.ignored) == {"fc.weight", "fc.bias"}
    assert isinstance(trainable.bn1, torch.nn.BatchNorm2d) and trainable.bn1.weight.requires_grad


def test_frozen_batch_norm_keeps_statistics_in_training():
    sd = _published("resnet50", 3, seed=1)
    enc = build_encoder("satlas_resnet50_sentinel2_si_rgb", weights=sd).train()
    before = enc.layer1[0].bn1.running_mean.clone()
    enc.forward_features(torch.randn(2, 3, 64, 64), layers=[3])[0].sum().backward()
    assert torch.equal(enc.layer1[0].bn1.running_mean, before)
    assert not any("bn" in n for n, p in enc.named_parameters())


def test_band_selection_through_the_vocabulary(tg):
    sd = _published("resnet50", 9)
    ref = tg.resnet50(_Weights(sd, 9)).eval()
    enc = build_encoder("satlas_resnet50_sentinel2_si_ms", weights=sd, bands=("red", "green", "blue", "B11")).eval()
    x = torch.randn(1, 4, 64, 64)
    full = torch.zeros(1, 9, 64, 64)
    for j, b in enumerate(("B04", "B03", "B02", "B11")):
        full[:, SATLAS_STATS["sentinel2_ms"].bands.index(b)] = x[:, j]
    with torch.no_grad():
        got = enc.forward_features(x, layers=[1, 3])
    want = _taps(ref, full)
    assert rel_err(got[0], want[1]) <= TOL and rel_err(got[1], want[3]) <= TOL


@pytest.mark.parametrize("change,match", [
    (lambda sd: sd.pop("layer2.1.conv2.weight"), "missing"),
    (lambda sd: sd.__setitem__("conv1.weight", torch.zeros(64, 9, 4, 4)), "not a \\(64, bands, 7, 7\\)"),
    (lambda sd: sd.__setitem__("conv1.weight", torch.zeros(64, 5, 7, 7)), "pretrained_bands"),
])
def test_incomplete_or_foreign_checkpoints_are_refused(change, match):
    sd = _published("resnet50", 9)
    change(sd)
    with pytest.raises(CheckpointError, match=match):
        build_encoder("satlas_resnet50_sentinel2_si_ms", weights=sd)


def test_size_not_a_multiple_of_32_is_refused():
    enc = build_encoder("satlas_resnet50_sentinel2_si_rgb", timm_name="resnet18")
    with pytest.raises(EncoderInputError, match="not a multiple of 32"):
        enc.forward_features(torch.randn(1, 3, 64, 40))


def test_geobackbone_gives_res2_to_res5_for_detectron2_fpn():
    pytest.importorskip("detectron2")
    from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool

    from d2geo.modeling import GeoBackbone

    bb = GeoBackbone("satlas_resnet50_sentinel2_si_rgb", layers=(0, 1, 2, 3), freeze=1,
                     encoder_kwargs=dict(timm_name="resnet18"))
    shapes = bb.output_shape()
    assert {n: (s.channels, s.stride) for n, s in shapes.items()} == {
        "res2": (64, 4), "res3": (128, 8), "res4": (256, 16), "res5": (512, 32)}
    fpn = FPN(bottom_up=bb, in_features=list(shapes), out_channels=8, top_block=LastLevelMaxPool())
    feats = fpn(torch.randn(1, 3, 64, 96))
    assert {k: tuple(v.shape[-2:]) for k, v in feats.items()} == {
        "p2": (16, 24), "p3": (8, 12), "p4": (4, 6), "p5": (2, 3), "p6": (1, 2)}
    frozen = {n for n, p in bb.encoder.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("conv1.", "layer1.")) for n in frozen)
    ids = bb.encoder.param_layer_ids()
    assert ids["conv1.weight"] == 0 and ids["layer1.0.conv1.weight"] == 1 and ids["layer4.1.conv2.weight"] == 4


@pytest.mark.parametrize("name", ["satlas/semantic_fpn_resnet50.py", "satlas/mask_rcnn_resnet50.py"])
def test_packaged_config_trains_tiny(name, tmp_path_factory, tmp_path):
    """The packaged semantic FPN and Mask R-CNN configs with a tiny ResNet (timm's resnet18
    through the same module, frozen batch norms) on the synthetic GeoTIFFs' HLS bands."""
    pytest.importorskip("detectron2")
    from heads_tiny import HLS, train_hierarchical_config

    train_hierarchical_config(name,
                              dict(timm_name="resnet18"), HLS,
                              tmp_path_factory, tmp_path)


def test_torch_export_with_dynamic_hw_matches_eager():
    """One ``torch.export`` of the GeoBackbone (frozen batch norms) serves other sizes."""
    pytest.importorskip("detectron2")
    from d2geo.modeling import GeoBackbone

    sd = _published("resnet18", 3, seed=2)
    bb = GeoBackbone("satlas_resnet50_sentinel2_si_rgb", weights=sd, layers=(0, 1, 2, 3),
                     encoder_kwargs=dict(timm_name="resnet18")).eval()
    x = torch.randn(1, 3, 64, 96)
    ep = torch.export.export(bb, (x,), dynamic_shapes=({2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO},))
    for y in (torch.randn(1, 3, 128, 64), torch.randn(1, 3, 96, 96)):
        with torch.no_grad():
            ref, got = bb(y), ep.module()(y)
        for k in ref:
            assert got[k].shape == ref[k].shape and rel_err(got[k], ref[k]) <= 1e-5, (k, tuple(y.shape))
