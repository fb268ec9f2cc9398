"""DINOv3 fidelity: the official code (carried as data, tests/fixtures/make_dinov3_fixture.py)
is the reference; timm's layouts must load with their biases intact."""
import contextlib
import io
import os
import sys

import pytest
import timm
import torch

from helpers import rel_err
from d2geo.encoders import CheckpointError, build_encoder, get_encoder_config
from d2geo.encoders.adapt import BAND_RECORD

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures"))
from make_dinov3_fixture import formula_input, formula_weights  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "dinov3_official_tiny.pt")
VARIANTS = {"vits16": "dinov3_vits16", "vitb16": "dinov3_vitb16", "vitl16": "dinov3_vitl16",
            "vitl16_sat": "dinov3_vitl16_sat"}
#: what each official variant holds that the backbone does not use
PRETRAINING_ONLY = {"mask_token"}
SAT_ONLY = {"local_cls_norm.weight", "local_cls_norm.bias"}


@pytest.fixture(scope="module")
def official():
    return torch.load(DATA, weights_only=True)


def _hub(official, variant, tmp_path):
    entry = official["variants"][variant]
    path = tmp_path / f"dinov3_{variant}.pth"
    torch.save(entry["state_dict"], path)
    return entry, path


def _check_cases(enc, official, entry):
    depth = entry["config"]["depth"]
    for i, ((h, w), case) in enumerate(zip(official["sizes"], entry["cases"])):
        x = formula_input((1, 3, h, w), i)
        with torch.no_grad():
            for norm, ref in ((True, case["norm"]), (False, case["prenorm"])):
                ours = enc.forward_features(x, layers=list(range(depth)), norm=norm)
                for layer, (o, r) in enumerate(zip(ours, ref)):
                    assert rel_err(o, r) <= 1e-4, ((h, w), norm, layer, rel_err(o, r))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_matches_official_dinov3(official, variant, tmp_path):
    """Official hub layout (q, k and v biases non-zero, k masked; bf16 rope periods) gives the
    official features of every block, with and without the norm, at 224 px and non-square."""
    entry, path = _hub(official, variant, tmp_path)
    assert entry["hub_kwargs"]["qkv_bias"] and entry["hub_kwargs"]["mask_k_bias"]
    enc = build_encoder(VARIANTS[variant], weights=path, **entry["config"]).eval()
    _check_cases(enc, official, entry)


def test_bias_free_architecture_differs_from_official(official, capsys):
    """Guards the reason for the fixture: timm's bias-free model (what d2geo built before),
    loaded through timm's own filter, is far from the official features."""
    from timm.models.eva import checkpoint_filter_fn

    entry = official["variants"]["vitl16_sat"]
    old = timm.create_model("vit_large_patch16_dinov3", pretrained=False, num_classes=0,
                            global_pool="", dynamic_img_size=True, **entry["config"]).eval()
    with contextlib.redirect_stdout(io.StringIO()):  # timm's filter prints what it drops
        old.load_state_dict(checkpoint_filter_fn(dict(entry["state_dict"]), old))
    x = formula_input((1, 3, *official["sizes"][1]), 1)
    with torch.no_grad():
        feats = old.forward_intermediates(x, indices=[2], norm=True, intermediates_only=True)
    assert rel_err(feats[0], entry["cases"][1]["norm"][2]) > 0.05


def test_loading_prints_nothing_and_names_what_it_leaves_out(official, tmp_path, capfd, caplog):
    entry, path = _hub(official, "vitl16_sat", tmp_path)
    caplog.set_level("INFO", logger="d2geo")
    from d2geo.encoders import load_encoder_weights
    enc = build_encoder("dinov3_vitl16_sat", **entry["config"])
    report = load_encoder_weights(enc, path)
    assert capfd.readouterr().out == ""
    assert set(report.ignored) == PRETRAINING_ONLY | SAT_ONLY
    assert "local_cls_norm.weight" in caplog.text and "mask_token" in caplog.text
    # the rope periods are the checkpoint's (bfloat16-rounded), not timm's float32 ones
    stored = entry["state_dict"]["rope_embed.periods"].float()
    assert torch.equal(enc.vit.rope.periods, stored)
    assert not torch.equal(enc.vit.rope._compute_periods(), stored)


def test_rope_periods_from_the_checkpoint_matter(official):
    """timm's float32 periods instead of the checkpoint's bfloat16 ones are off by more than
    the tolerance: the periods must come from the checkpoint."""
    entry = official["variants"]["vits16"]
    enc = build_encoder("dinov3_vits16", weights=entry["state_dict"], **entry["config"]).eval()
    with torch.no_grad():
        enc.vit.rope.periods.copy_(enc.vit.rope._compute_periods())
        x = formula_input((1, 3, *official["sizes"][1]), 1)
        out = enc.forward_features(x, layers=[2])[0]
    assert rel_err(out, entry["cases"][1]["norm"][2]) > 1e-4


def test_bias_mask_is_applied(official, tmp_path):
    """The official model multiplies the qkv bias by its mask: a mask that zeroes the q
    part too gives zero q biases."""
    entry = official["variants"]["vits16"]
    sd = dict(entry["state_dict"])
    sd["blocks.0.attn.qkv.bias_mask"] = torch.zeros_like(sd["blocks.0.attn.qkv.bias_mask"])
    enc = build_encoder("dinov3_vits16", weights=sd, **entry["config"])
    assert torch.count_nonzero(enc.vit.blocks[0].attn.q_bias) == 0
    assert torch.count_nonzero(enc.vit.blocks[1].attn.q_bias) > 0


@pytest.mark.parametrize("change,match", [
    (lambda sd: sd.pop("blocks.1.attn.qkv.bias_mask"), "no blocks.1.attn.qkv.bias_mask"),
    (lambda sd: sd.__setitem__("blocks.1.attn.qkv.bias_mask", torch.ones_like(sd["blocks.1.attn.qkv.bias"])),
     "non-zero k bias"),
    (lambda sd: sd.pop("rope_embed.periods"), "no rope_embed.periods"),
    (lambda sd: sd.__setitem__("blocks.0.attn.qkv.scale", torch.ones(3)), "has no place for"),
    (lambda sd: sd.pop("blocks.2.ls1.gamma"), "missing"),
])
def test_incomplete_or_foreign_official_checkpoints_are_refused(official, change, match):
    entry = official["variants"]["vits16"]
    sd = dict(entry["state_dict"])
    change(sd)
    with pytest.raises(CheckpointError, match=match):
        build_encoder("dinov3_vits16", weights=sd, **entry["config"])


def _timm_model(timm_name, **kw):
    ref = timm.create_model(timm_name, pretrained=False, num_classes=0, global_pool="",
                            dynamic_img_size=True, **kw).eval()
    with torch.no_grad():  # non-trivial layer scales, tokens and q/v biases
        for n, p in ref.named_parameters():
            if "gamma" in n or "token" in n or n.endswith(("q_bias", "v_bias")):
                p.normal_(0, 0.5)
    return ref


@pytest.mark.parametrize("timm_name", ["vit_small_patch16_dinov3_qkvb", "vit_small_patch16_dinov3"])
def test_timm_layouts_match_timm(timm_name, tmp_path, capfd):
    """timm's qkvb layout keeps its q/v biases; timm's bias-free layout is zero biases."""
    kw = dict(embed_dim=32, depth=3, num_heads=2)
    ref = _timm_model(timm_name, **kw)
    path = tmp_path / "timm.pth"
    torch.save(ref.state_dict(), path)
    ours = build_encoder("dinov3_vits16", weights=path, **kw).eval()
    assert capfd.readouterr().out == ""
    x = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        for norm in (True, False):
            r = ref.forward_intermediates(x, indices=[0, 1, 2], norm=norm, intermediates_only=True)
            o = ours.forward_features(x, layers=[0, 1, 2], norm=norm)
            for a, b in zip(o, r):
                assert rel_err(a, b) <= 1e-4
    if timm_name.endswith("qkvb"):  # a checkpoint with some biases removed is incomplete
        sd = ref.state_dict()
        del sd["blocks.1.attn.v_bias"]
        with pytest.raises(CheckpointError, match="missing"):
            build_encoder("dinov3_vits16", weights=sd, **kw)


def test_teacher_checkpoint_and_negative_layers(official, caplog):
    """A DINOv3 training checkpoint keeps the weights under teacher.backbone; the student,
    the heads and the iteration counter are named as not loaded."""
    entry = official["variants"]["vitb16"]
    sd = entry["state_dict"]
    ckpt = {"teacher": {**{f"backbone.{k}": v for k, v in sd.items()},
                        "dino_head.mlp.0.weight": torch.zeros(4, 4)},
            "student": {f"backbone.{k}": torch.zeros_like(v) for k, v in sd.items()},
            "iteration": torch.tensor(5)}
    caplog.set_level("INFO", logger="d2geo")
    ours = build_encoder("dinov3_vitb16", weights=ckpt, **entry["config"]).eval()
    ref = build_encoder("dinov3_vitb16", weights=sd, **entry["config"]).eval()
    x = formula_input((2, 3, 64, 48), 7)
    with torch.no_grad():
        for a, b in zip(ours.forward_features(x, layers=[-2, -1]), ref.forward_features(x, layers=[0, 1])):
            assert torch.equal(a, b)
    assert "student.backbone" in caplog.text and "dino_head" in caplog.text and "iteration" in caplog.text


def test_dinov2_checkpoint_is_refused(tmp_path):
    dinov2 = timm.create_model("vit_small_patch14_dinov2", pretrained=False, embed_dim=64,
                               depth=3, num_heads=4, num_classes=0)
    path = tmp_path / "dinov2.pth"
    torch.save(dinov2.state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit"):
        build_encoder("dinov3_vits16", weights=path, embed_dim=64, depth=3, num_heads=4)


def test_variants_are_the_biased_timm_architectures():
    for name in VARIANTS.values():
        assert get_encoder_config(name)["timm_name"].endswith("_dinov3_qkvb")


def _zeros_official(real_keys):
    """An official-layout state dict of the real-size model (values do not matter here)."""
    sd = formula_weights([(k, s) for k, s in real_keys if k.endswith(("bias_mask", "periods"))])
    for k, s in real_keys:
        sd.setdefault(k, torch.zeros(s))
    return sd


@pytest.mark.parametrize("variant", ["vits16", pytest.param("vitb16", marks=pytest.mark.slow),
                                     pytest.param("vitl16", marks=pytest.mark.slow)])
def test_real_size_structure_matches_official(official, variant):
    """Every tensor of the real-size official model's state dict (names and shapes stored
    from the official code) loads into ours or is named as pretraining-only, and ours has
    nothing else."""
    from d2geo.encoders import load_encoder_weights
    real_keys = official["variants"][variant]["real_keys"]
    enc = build_encoder(VARIANTS[variant])
    report = load_encoder_weights(enc, _zeros_official(real_keys))
    assert set(report.ignored) == PRETRAINING_ONLY
    assert set(report.loaded) == set(enc.state_dict()) - {BAND_RECORD}


@pytest.mark.slow
def test_real_size_sat_large_matches_official(official):
    """The real-size ViT-L/16 SAT-493M architecture against the official code, with weights
    from a deterministic formula (the official run is stored; the weights are rebuilt)."""
    from d2geo.encoders import load_encoder_weights
    real = official["real_formula"]
    real_keys = official["variants"]["vitl16_sat"]["real_keys"]
    enc = build_encoder("dinov3_vitl16_sat").eval()
    assert enc.num_prefix_tokens == 5 and enc.embed_dim == 1024 and enc.depth == 24
    report = load_encoder_weights(enc, formula_weights(real_keys))
    assert set(report.ignored) == PRETRAINING_ONLY | SAT_ONLY
    for i, ((h, w), case) in enumerate(zip(real["sizes"], real["cases"])):
        x = formula_input((1, 3, h, w), 100 + i)
        with torch.no_grad():
            for norm, ref in ((True, case["norm"]), (False, case["prenorm"])):
                ours = enc.forward_features(x, layers=real["layers"], norm=norm)
                for o, r in zip(ours, ref):
                    assert o.shape == (1, 1024, h // 16, w // 16)
                    assert rel_err(o, r) <= 1e-4, (norm, rel_err(o, r))


@pytest.mark.slow
@pytest.mark.parametrize("size", [(224, 224), (160, 288)])
def test_real_size_large_matches_timm_qkvb(size, tmp_path):
    """Real ViT-L/16 in timm's qkvb layout, random weights and biases, several layers."""
    ref = _timm_model("vit_large_patch16_dinov3_qkvb")
    path = tmp_path / "timm.pth"
    torch.save(ref.state_dict(), path)
    ours = build_encoder("dinov3_vitl16_sat", weights=path).eval()
    x = torch.randn(1, 3, *size)
    layers = [5, 11, 23]
    with torch.no_grad():
        for norm in (True, False):
            r = ref.forward_intermediates(x, indices=layers, norm=norm, intermediates_only=True)
            o = ours.forward_features(x, layers=layers, norm=norm)
            for a, b in zip(o, r):
                assert a.shape == (1, 1024, size[0] // 16, size[1] // 16)
                assert rel_err(a, b) <= 1e-4
