"""DINOv3 ViT-7B/16 (and the official SwiGLU layout it shares with S+/H+) against the official
code: outputs of the 7B's block structure at reduced width and depth, and of one block at the
real width, stored by tests/fixtures/make_dinov3_convnext_fixture.py; the real-size names and
shapes of the official model checked against the registered variant on the meta device."""
import os
import sys

import pytest
import torch

from helpers import rel_err
from d2geo.encoders import build_encoder, describe, load_encoder_weights
from d2geo.encoders.adapt import BAND_RECORD

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
sys.path.insert(0, FIXTURES)
from make_dinov3_fixture import formula_input, formula_weights  # noqa: E402

TOL = 1e-4
PRETRAINING_ONLY = {"mask_token", "local_cls_norm.weight", "local_cls_norm.bias"}


@pytest.fixture(scope="module")
def fixture():
    return torch.load(os.path.join(FIXTURES, "dinov3_convnext_official_tiny.pt"), weights_only=True)


def _check(enc, entry, sizes):
    depth = entry["config"]["depth"]
    for i, ((h, w), case) in enumerate(zip(sizes, entry["cases"])):
        x = formula_input((1, 3, h, w), i)
        with torch.no_grad():
            for norm, ref in ((True, case["norm"]), (False, case["prenorm"])):
                ours = enc.forward_features(x, layers=list(range(depth)), norm=norm)
                for layer, (o, r) in enumerate(zip(ours, ref)):
                    assert o.shape == r.shape == (1, entry["config"]["embed_dim"], h // 16, w // 16)
                    assert rel_err(o, r) <= TOL, ((h, w), norm, layer, rel_err(o, r))


@pytest.mark.parametrize("name", ["dinov3_vit7b16", "dinov3_vit7b16_sat"])
def test_7b_block_structure_matches_official(fixture, name, tmp_path):
    """The official dinov3_vit7b16 (no qkv bias, SwiGLU w1/w2/w3 aligned to 64, LayerNorm eps
    1e-5, untied local class norm, float32 rope periods) at width 64 and depth 2: every block,
    with and without the final norm, at 224 px and non-square sizes."""
    entry = fixture["vit7b"]
    kw = entry["hub_kwargs"]
    assert (kw["embed_dim"], kw["depth"], kw["num_heads"], kw["ffn_layer"], kw["qkv_bias"]) == (
        4096, 40, 32, "swiglu64", False)
    path = tmp_path / "dinov3_vit7b16_pretrain_lvd1689m.pth"
    torch.save(entry["state_dict"], path)
    enc = build_encoder(name, **entry["config"]).eval()
    report = load_encoder_weights(enc, path)
    assert set(report.ignored) == PRETRAINING_ONLY
    _check(enc, entry, fixture["convnext"]["sizes"])


def test_splus_official_swiglu_names_load(fixture):
    """Meta's S+/H+ files name the SwiGLU w1, w2, w3 (timm: fc1_g, fc1_x, fc2): they load and
    give the official features (they were refused before)."""
    entry = fixture["vits16plus"]
    assert any(".mlp.w3." in k for k in entry["state_dict"])
    enc = build_encoder("dinov3_vits16plus", weights=entry["state_dict"], **entry["config"]).eval()
    _check(enc, entry, fixture["convnext"]["sizes"])


def test_real_size_7b_structure_matches_official(fixture):
    """Every tensor of the real 7B's official state dict has its place and shape in the
    registered variant (built on the meta device: 6.7B parameters), and nothing is left over."""
    real_keys = fixture["vit7b"]["real_keys"]
    with torch.device("meta"):
        enc = build_encoder("dinov3_vit7b16")
    vit = enc.vit
    assert (enc.embed_dim, enc.depth, vit.blocks[0].attn.num_heads, enc.num_prefix_tokens) == (4096, 40, 32, 5)
    assert vit.blocks[0].mlp.fc1_g.out_features == 8192 and vit.blocks[0].norm1.eps == 1e-5
    assert vit.blocks[0].attn.q_bias is None
    sd = {k: torch.zeros(s, device="meta") for k, s in real_keys}
    out = enc.checkpoint_filter_fn(sd)
    assert set(out.ignored) == PRETRAINING_ONLY
    want = {k: tuple(v.shape) for k, v in enc.state_dict().items() if k != BAND_RECORD}
    assert {k: tuple(v.shape) for k, v in out.items()} == want
    # Meta's model card: 6716M parameters
    assert round(sum(p.numel() for p in enc.parameters()) / 1e6) == 6716


def test_7b_card_says_how_big_it_is():
    card = describe("dinov3_vit7b16")
    assert card.parameters > 6.6e9 and "27 GB" in card.notes
    assert card.source.startswith("hf://timm/vit_7b_patch16_dinov3.lvd1689m/")


def test_qkv_bias_must_match_the_architecture():
    with pytest.raises(ValueError, match="qkv_bias=False"):
        build_encoder("dinov3_vit7b16", timm_name="vit_small_patch16_dinov3_qkvb", embed_dim=32, depth=1,
                      num_heads=2)


@pytest.mark.slow
def test_real_width_7b_block_matches_official(fixture):
    """One block of the 7B at its real width (4096, 32 heads, SwiGLU 8192) with weights from a
    deterministic formula, against the stored official run."""
    wide = fixture["vit7b_wide"]
    real_keys = [(k, s) for k, s in fixture["vit7b"]["real_keys"]
                 if not k.startswith("blocks.") or k.startswith("blocks.0.")]
    enc = build_encoder("dinov3_vit7b16", depth=1).eval()
    load_encoder_weights(enc, formula_weights(real_keys))
    for i, ((h, w), case) in enumerate(zip(wide["sizes"], wide["cases"])):
        x = formula_input((1, 3, h, w), 200 + i)
        with torch.no_grad():
            for norm, ref in ((True, case["norm"]), (False, case["prenorm"])):
                (o,) = enc.forward_features(x, layers=[0], norm=norm)
                assert o.shape == (1, 4096, h // 16, w // 16)
                assert rel_err(o, ref[0]) <= TOL, (norm, rel_err(o, ref[0]))


def test_timm_7b_layout_matches_timm(tmp_path):
    """timm's copy (the ``pretrained=True`` source) is in timm's bias-free 7B layout: it loads
    with no q/v biases invented, its rope periods recomputed as timm does, and gives timm's
    features (reduced width and depth, the 7B's block structure)."""
    import timm

    kw = dict(embed_dim=64, depth=2, num_heads=2)
    ref = timm.create_model("vit_7b_patch16_dinov3", pretrained=False, num_classes=0, global_pool="", **kw).eval()
    with torch.no_grad():
        for n, p in ref.named_parameters():
            p.add_(0.1 * torch.randn_like(p)) if "gamma" not in n else p.uniform_(0.1, 0.6)
    path = tmp_path / "model.pth"
    torch.save(ref.state_dict(), path)
    enc = build_encoder("dinov3_vit7b16", weights=path, **kw).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for norm in (True, False):
            want = ref.forward_intermediates(x, indices=[0, 1], norm=norm, intermediates_only=True)
            got = enc.forward_features(x, layers=[0, 1], norm=norm)
            for a, b in zip(got, want):
                assert rel_err(a, b) <= TOL
