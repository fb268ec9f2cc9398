"""DINOv3 ConvNeXt fidelity: the official code (outputs stored by
tests/fixtures/make_dinov3_convnext_fixture.py from facebookresearch/dinov3's convnext.py) is
the reference; the Hugging Face transformers layout is checked against transformers' own
DINOv3ConvNextModel, timm's layout against timm; the stages reach detectron2's FPN as
res2..res5."""
import os
import sys

import pytest
import timm
import torch

from helpers import rel_err
from d2geo.encoders import CheckpointError, EncoderInputError, build_encoder, load_encoder_weights
from d2geo.encoders.adapt import BAND_RECORD
from d2geo.encoders.dinov3_convnext import DINOV3_CONVNEXT_SIZES

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
sys.path.insert(0, FIXTURES)
from make_dinov3_convnext_fixture import convnext_formula_weights  # noqa: E402
from make_dinov3_fixture import formula_input  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="module")
def official():
    return torch.load(os.path.join(FIXTURES, "dinov3_convnext_official_tiny.pt"), weights_only=True)["convnext"]


def _tiny(official):
    t = official["tiny"]
    return t, dict(depths=t["config"]["depths"], dims=t["config"]["dims"])


def test_stages_match_official_native_and_non_square(official, tmp_path):
    """Meta's .pth layout: every stage, with and without the final norm (official
    ``get_intermediate_layers(norm=...)``), at 224 px and two non-square sizes."""
    t, kw = _tiny(official)
    path = tmp_path / "dinov3_convnext_tiny_pretrain_lvd1689m.pth"
    torch.save(t["state_dict"], path)
    enc = build_encoder("dinov3_convnext_tiny", weights=path, **kw).eval()
    assert enc.out_strides == (4, 8, 16, 32) and enc.out_channels == tuple(kw["dims"])
    for i, ((h, w), case) in enumerate(zip(official["sizes"], t["cases"])):
        x = formula_input((1, 3, h, w), i)
        with torch.no_grad():
            for norm, ref in ((True, case["norm"]), (False, case["prenorm"])):
                ours = enc.forward_features(x, layers=[0, 1, 2, 3], norm=norm)
                for s, (o, r) in enumerate(zip(ours, ref)):
                    assert o.shape == (1, kw["dims"][s], h // 4 // 2**s, w // 4 // 2**s)
                    assert rel_err(o, r) <= TOL, ((h, w), norm, s, rel_err(o, r))
    # only the last stage has a norm, as in the official code
    assert torch.equal(t["cases"][0]["norm"][2], t["cases"][0]["prenorm"][2])
    assert not torch.equal(t["cases"][0]["norm"][3], t["cases"][0]["prenorm"][3])


def test_duplicate_final_norm_is_named_and_checked(official):
    t, kw = _tiny(official)
    enc = build_encoder("dinov3_convnext_tiny", **kw)
    report = load_encoder_weights(enc, t["state_dict"])
    assert set(report.ignored) == {"norms.3.weight", "norms.3.bias"}
    sd = dict(t["state_dict"])
    sd["norms.3.weight"] = sd["norms.3.weight"] + 1
    with pytest.raises(CheckpointError, match="not the same tensor as norm.weight"):
        build_encoder("dinov3_convnext_tiny", weights=sd, **kw)


@pytest.mark.parametrize("size", ["tiny", pytest.param("small", marks=pytest.mark.slow),
                                  pytest.param("base", marks=pytest.mark.slow),
                                  pytest.param("large", marks=pytest.mark.slow)])
def test_real_size_structure_matches_official(official, size):
    """Every tensor of the real-size official model (names and shapes stored from the official
    code) loads into the registered variant, and the variant has nothing else."""
    real_keys = official["variants"][size]["real_keys"]
    enc = build_encoder(f"dinov3_convnext_{size}")
    assert enc.out_channels == tuple(DINOV3_CONVNEXT_SIZES[size]["dims"])
    sd = {k: torch.zeros(s) for k, s in real_keys}
    report = load_encoder_weights(enc, sd)
    assert set(report.ignored) == {"norms.3.weight", "norms.3.bias"}
    assert set(report.loaded) == set(enc.state_dict()) - {BAND_RECORD}


def test_real_size_tiny_matches_official(official):
    """The real ConvNeXt-Tiny (depths 3, 3, 9, 3; dims 96..768) with weights from a deterministic
    formula against the stored official run: every stage, with and without the norm."""
    real = official["real_formula"]
    enc = build_encoder("dinov3_convnext_tiny").eval()
    load_encoder_weights(enc, convnext_formula_weights(official["variants"]["tiny"]["real_keys"]))
    for i, ((h, w), case) in enumerate(zip(real["sizes"], real["cases"])):
        x = formula_input((1, 3, h, w), 300 + i)
        with torch.no_grad():
            for norm in (True, False):
                ours = enc.forward_features(x, layers=[0, 1, 2, 3], norm=norm)
                for s, (o, r) in enumerate(zip(ours, case[norm])):
                    assert o.shape == r.shape == (1, 96 * 2**s, h // 4 // 2**s, w // 4 // 2**s)
                    assert rel_err(o, r) <= TOL, (norm, s, rel_err(o, r))


def _transformers_model(kw):
    transformers = pytest.importorskip("transformers")
    from transformers.models.dinov3_convnext import DINOv3ConvNextConfig, DINOv3ConvNextModel

    cfg = DINOv3ConvNextConfig(hidden_sizes=list(kw["dims"]), depths=list(kw["depths"]))
    torch.manual_seed(4)
    model = DINOv3ConvNextModel(cfg).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.add_(0.3 * torch.randn_like(p)) if "gamma" not in n else p.uniform_(0.1, 0.6)
    return transformers, model


@pytest.mark.parametrize("prefix", ["", "model."])
def test_transformers_layout_matches_transformers(official, prefix):
    """The Hub's transformers files (``stages.i.layers.j.depthwise_conv``, ``layer_norm``;
    transformers 5 writes ``model.stages``) give transformers' own stage maps and final norm."""
    _, kw = _tiny(official)
    _, model = _transformers_model(kw)
    sd = model.state_dict()
    assert any(k.startswith("model.stages.") for k in sd) and "layer_norm.weight" in sd
    sd = {(k if prefix else k.removeprefix("model.")): v for k, v in sd.items()}
    enc = build_encoder("dinov3_convnext_tiny", weights=sd, **kw).eval()
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
        ours = enc.forward_features(x, layers=[0, 1, 2, 3], norm=False)
        last = enc.forward_features(x, layers=[3], norm=True)[0]
    stages = out.hidden_states[-4:]
    for o, r in zip(ours, stages):
        assert rel_err(o, r) <= TOL
    # transformers normalises [pooled, patch tokens]; the patch tokens are our normed last stage
    patches = out.last_hidden_state[:, 1:].transpose(1, 2).reshape(last.shape)
    assert rel_err(last, patches) <= TOL


def test_timm_layout_matches_timm(official):
    _, kw = _tiny(official)
    ref = timm.create_model("convnext_tiny", pretrained=False, num_classes=0, **kw).eval()
    with torch.no_grad():
        for n, p in ref.named_parameters():
            p.add_(0.2 * torch.randn_like(p))
    enc = build_encoder("dinov3_convnext_tiny", weights=ref.state_dict(), **kw).eval()
    x = torch.randn(2, 3, 64, 128)
    with torch.no_grad():
        want = ref.forward_intermediates(x, indices=[0, 1, 2, 3], intermediates_only=True)
        got = enc.forward_features(x, layers=[0, 1, 2, 3], norm=False)
    for o, r in zip(got, want):
        assert rel_err(o, r) <= TOL


@pytest.mark.parametrize("change,match", [
    (lambda sd: sd.pop("stages.2.1.gamma"), "missing"),
    (lambda sd: sd.__setitem__("stages.0.0.grn.gamma", torch.ones(16)), "has no place for"),
    (lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("downsample_layers.0.")], "none of"),
])
def test_incomplete_or_foreign_checkpoints_are_refused(official, change, match):
    t, kw = _tiny(official)
    sd = dict(t["state_dict"])
    change(sd)
    with pytest.raises(CheckpointError, match=match):
        build_encoder("dinov3_convnext_tiny", weights=sd, **kw)


def test_extra_band_starts_at_zero_and_rgb_matches(official):
    """Bands by name: red, green, blue from the RGB stem, a NIR band starting at zero."""
    t, kw = _tiny(official)
    rgb = build_encoder("dinov3_convnext_tiny", weights=t["state_dict"], **kw).eval()
    four = build_encoder("dinov3_convnext_tiny", weights=t["state_dict"], bands=("red", "green", "blue", "nir"),
                         **kw).eval()
    assert torch.count_nonzero(four.stem[0].weight[:, 3]) == 0
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a = rgb.forward_features(x, layers=[3])[0]
        b = four.forward_features(torch.cat([x, torch.randn(1, 1, 64, 64)], 1), layers=[3])[0]
    assert rel_err(b, a) <= 1e-6


def test_size_not_a_multiple_of_32_is_refused(official):
    _, kw = _tiny(official)
    enc = build_encoder("dinov3_convnext_tiny", **kw)
    with pytest.raises(EncoderInputError, match="not a multiple of 32"):
        enc.forward_features(torch.randn(1, 3, 64, 48))


def test_geobackbone_gives_res2_to_res5_and_stages_are_the_blocks(official):
    pytest.importorskip("detectron2")
    from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool

    from d2geo.modeling import GeoBackbone

    t, kw = _tiny(official)
    bb = GeoBackbone("dinov3_convnext_tiny", weights=t["state_dict"], layers=(0, 1, 2, 3), norm=False,
                     freeze=1, encoder_kwargs=kw)
    shapes = bb.output_shape()
    assert {n: (s.channels, s.stride) for n, s in shapes.items()} == {
        "res2": (16, 4), "res3": (24, 8), "res4": (32, 16), "res5": (40, 32)}
    fpn = FPN(bottom_up=bb, in_features=list(shapes), out_channels=8, top_block=LastLevelMaxPool())
    feats = fpn(torch.randn(1, 3, 64, 96))
    assert {k: tuple(v.shape[-2:]) for k, v in feats.items()} == {
        "p2": (16, 24), "p3": (8, 12), "p4": (4, 6), "p5": (2, 3), "p6": (1, 2)}
    enc = bb.encoder
    frozen = {n for n, p in enc.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("stem.", "stages.0.")) for n in frozen)
    ids = enc.param_layer_ids()
    assert ids["stem.0.weight"] == 0 and ids["stages.0.blocks.0.conv_dw.weight"] == 1
    assert ids["stages.3.downsample.1.weight"] == 4 and ids["norm.weight"] == 5


@pytest.mark.parametrize("name", ["dinov3/semantic_fpn_convnext_base.py", "dinov3/mask_rcnn_convnext_base.py"])
def test_packaged_config_trains_tiny(name, tmp_path_factory, tmp_path):
    """The packaged semantic FPN and Mask R-CNN configs with a tiny ConvNeXt on the synthetic
    GeoTIFFs: the encoder gets gradients, the loss falls."""
    pytest.importorskip("detectron2")
    from heads_tiny import train_hierarchical_config

    train_hierarchical_config(name, dict(depths=(1, 1, 1, 1), dims=(16, 24, 32, 40)), ["red", "green", "blue"],
                              tmp_path_factory, tmp_path)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The Hub stand-in of tests/http_stub.py, with the caches in tmp_path (as test_hub.py's)."""
    from http_stub import HubStandIn, serve

    stand_in = HubStandIn()
    with serve(stand_in.handler()) as url:
        stand_in.url = url
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        monkeypatch.setenv("D2GEO_CACHE", str(tmp_path / "d2geo"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
        yield stand_in


def test_pretrained_fetches_timms_hub_copy(official, hub, tmp_path):
    """``pretrained=True`` reads timm's copy (``timm/convnext_tiny.dinov3_lvd1689m``) and loads
    its layout (here a tiny file at the published repository and name)."""
    from safetensors.torch import save_file

    from d2geo.encoders import describe

    _, kw = _tiny(official)
    ref = timm.create_model("convnext_tiny", pretrained=False, num_classes=0, **kw).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "model.safetensors"))
    repo = "timm/convnext_tiny.dinov3_lvd1689m"
    hub.publish(repo, "model.safetensors", (tmp_path / "model.safetensors").read_bytes())
    enc = build_encoder("dinov3_convnext_tiny", pretrained=True, **kw).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert rel_err(enc.forward_features(x, layers=[3], norm=False)[0], ref.forward_features(x)) <= TOL
    card = describe("dinov3_convnext_tiny")
    assert card.license == "DINOv3 License" and card.source == f"hf://{repo}/model.safetensors"
    assert "dinov3/models/convnext.py" in card.fidelity_reference and not card.pinned and card.unpinned_reason


def test_torch_export_with_dynamic_hw_matches_eager(official):
    """One ``torch.export`` of the GeoBackbone serves other sizes (square and not)."""
    pytest.importorskip("detectron2")
    from d2geo.modeling import GeoBackbone

    t, kw = _tiny(official)
    bb = GeoBackbone("dinov3_convnext_tiny", weights=t["state_dict"], layers=(0, 1, 2, 3), norm=True,
                     encoder_kwargs=kw).eval()
    x = torch.randn(1, 3, 64, 96)
    ep = torch.export.export(bb, (x,), dynamic_shapes=({2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO},))
    for y in (torch.randn(1, 3, 128, 64), torch.randn(1, 3, 96, 96)):
        with torch.no_grad():
            ref, got = bb(y), ep.module()(y)
        assert set(got) == set(ref) == {"res2", "res3", "res4", "res5"}
        for k in ref:
            assert got[k].shape == ref[k].shape and rel_err(got[k], ref[k]) <= 1e-5, (k, tuple(y.shape))
