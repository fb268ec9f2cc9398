"""DINOv2 fidelity: the official code (carried as data) and timm are the references."""
import os

import pytest
import timm
import torch
import torch.nn.functional as F

from helpers import rel_err
from d2geo.encoders import CheckpointError, EncoderInputError, build_encoder

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "dinov2_official_tiny.pt")
TINY = dict(embed_dim=48, depth=3, num_heads=3)


@pytest.fixture(scope="module")
def official():
    return torch.load(DATA, weights_only=True)


@pytest.mark.parametrize("variant,name", [("plain", "dinov2_vits14"), ("reg", "dinov2_vits14_reg")])
def test_matches_official_dinov2_at_native_and_other_sizes(official, variant, name, tmp_path):
    """The official hub state dict loads and gives the official features, including at
    non-square sizes where timm's position resizing differs from the official one."""
    path = tmp_path / "hub.pth"
    torch.save(official[variant]["state_dict"], path)
    enc = build_encoder(name, weights=path, img_size=98, **TINY).eval()
    for x, case in zip(official["inputs"], official[variant]["cases"]):
        with torch.no_grad():
            for norm, ref in ((True, case["norm"]), (False, case["prenorm"])):
                ours = enc.forward_features(x, layers=[0, 1, 2], norm=norm)
                for o, r in zip(ours, ref):
                    assert rel_err(o, r) <= 1e-4, (variant, tuple(x.shape), norm)


def test_timm_differs_from_official_for_plain_models_off_grid(official, tmp_path):
    """Guards the reason the fixture exists: timm alone would not be faithful here."""
    sd = official["plain"]["state_dict"]
    ref_model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=98,
                                  dynamic_img_size=True, num_classes=0, **TINY).eval()
    from timm.models.vision_transformer import checkpoint_filter_fn
    ref_model.load_state_dict(checkpoint_filter_fn(dict(sd), ref_model))
    x, case = official["inputs"][1], official["plain"]["cases"][1]
    with torch.no_grad():
        timm_feats = ref_model.forward_intermediates(x, indices=[2], norm=True, intermediates_only=True)
    assert rel_err(timm_feats[0], case["norm"][2]) > 1e-3


def _timm_pair(timm_name, ours_name, tmp_path, **kw):
    ref = timm.create_model(timm_name, pretrained=False, num_classes=0, dynamic_img_size=True, **kw).eval()
    with torch.no_grad():  # non-trivial layer scales and tokens
        for n, p in ref.named_parameters():
            if "gamma" in n or "token" in n:
                p.normal_(0, 0.5)
    path = tmp_path / "timm.pth"
    torch.save(ref.state_dict(), path)
    ours = build_encoder(ours_name, weights=path, **kw).eval()
    return ref, ours


@pytest.mark.slow
@pytest.mark.parametrize("name,timm_name,size", [
    ("dinov2_vitb14", "vit_base_patch14_dinov2", (518, 518)),
    ("dinov2_vitb14_reg", "vit_base_patch14_reg4_dinov2", (518, 518)),
    ("dinov2_vitb14_reg", "vit_base_patch14_reg4_dinov2", (224, 322)),
])
def test_real_size_matches_timm(name, timm_name, size, tmp_path):
    """Real ViT-B/14 architecture, random weights saved in timm's format."""
    ref, ours = _timm_pair(timm_name, name, tmp_path)
    x = torch.randn(1, 3, *size)
    layers = [3, 7, 11]
    with torch.no_grad():
        for norm in (True, False):
            r = ref.forward_intermediates(x, indices=layers, norm=norm, intermediates_only=True)
            o = ours.forward_features(x, layers=layers, norm=norm)
            for a, b in zip(o, r):
                assert rel_err(a, b) <= 1e-4


def test_official_giant_keys_load(tmp_path):
    """ViT-g's official SwiGLU names (w12/w3), mask token and registers convert."""
    kw = dict(embed_dim=48, depth=2, num_heads=3)
    ref = timm.create_model("vit_giant_patch14_reg4_dinov2", pretrained=False, num_classes=0,
                            dynamic_img_size=True, **kw).eval()
    sd = {}
    for k, v in ref.state_dict().items():
        k = k.replace("mlp.fc1", "mlp.w12").replace("mlp.fc2", "mlp.w3")
        sd[k] = v
    # official layout: register tokens separate, cls position inside pos_embed
    cls_pos = torch.randn(1, 1, 48)
    sd["register_tokens"] = sd.pop("reg_token")
    sd["cls_token"] = sd["cls_token"] - cls_pos
    sd["pos_embed"] = torch.cat([cls_pos, sd["pos_embed"]], dim=1)
    sd["mask_token"] = torch.zeros(1, 48)
    path = tmp_path / "dinov2_vitg14_reg4_pretrain.pth"
    torch.save(sd, path)
    ours = build_encoder("dinov2_vitg14_reg", weights=path, **kw).eval()
    x = torch.randn(1, 3, 70, 84)
    with torch.no_grad():
        r = ref.forward_intermediates(x, indices=[0, 1], norm=True, intermediates_only=True)
        o = ours.forward_features(x, layers=[0, 1])
    for a, b in zip(o, r):
        assert rel_err(a, b) <= 1e-4


def _patchwise_resize(x, old, new):
    """Resize every old x old patch of x to new x new, independently (bicubic, antialiased)."""
    B, C, H, W = x.shape
    h, w = H // old, W // old
    p = x.reshape(B, C, h, old, w, old).permute(0, 2, 4, 1, 3, 5).reshape(-1, C, old, old)
    p = F.interpolate(p, size=(new, new), mode="bicubic", antialias=True)
    return p.reshape(B, h, w, C, new, new).permute(0, 3, 1, 4, 2, 5).reshape(B, C, h * new, w * new)


@pytest.mark.parametrize("name", ["dinov2_vits14", "dinov2_vits14_reg"])
def test_patch_14_to_16_preserves_features(official, name, tmp_path):
    """The defining property of the pseudo-inverse resize: an image whose 14x14 patches are
    each resized to 16x16 gives the resampled encoder the original features."""
    variant = "reg" if name.endswith("_reg") else "plain"
    path = tmp_path / "hub.pth"
    torch.save(official[variant]["state_dict"], path)
    enc14 = build_encoder(name, weights=path, img_size=98, **TINY).eval()
    enc16 = build_encoder(name, weights=path, patch_size=16, img_size=112, **TINY).eval()
    assert enc16.patch_size == 16
    x = torch.randn(1, 3, 84, 126)
    x16 = _patchwise_resize(x, 14, 16)
    with torch.no_grad():
        a = enc14.forward_features(x, layers=[0, 2])
        b = enc16.forward_features(x16, layers=[0, 2])
        naive = enc16.forward_features(F.interpolate(x, scale_factor=16 / 14, mode="bilinear"), layers=[2])
    for u, v in zip(a, b):
        assert rel_err(v, u) <= 1e-4
    assert rel_err(naive[0], a[1]) > 1e-3  # the property is specific, not trivially true

    bicubic = build_encoder(name, weights=path, patch_size=16, img_size=112,
                            patch_resample="bicubic", **TINY).eval()
    w_pinv = enc16.vit.patch_embed.proj.weight
    w_bic = bicubic.vit.patch_embed.proj.weight
    assert w_bic.shape == w_pinv.shape and not torch.allclose(w_bic, w_pinv)


def test_img_size_override_resizes_table_once(official, tmp_path):
    """img_size stores the table at another grid; features equal run-time interpolation."""
    path = tmp_path / "hub.pth"
    torch.save(official["plain"]["state_dict"], path)
    a = build_encoder("dinov2_vits14", weights=path, img_size=98, **TINY).eval()
    b = build_encoder("dinov2_vits14", weights=path, img_size=126, **TINY).eval()
    assert b.vit.pos_embed.shape[1] == 1 + 9 * 9
    x = torch.randn(1, 3, 126, 126)
    with torch.no_grad():
        assert rel_err(b.forward_features(x)[0], a.forward_features(x)[0]) <= 1e-5


def test_band_selection_keeps_pretrained_bands(official, tmp_path):
    path = tmp_path / "hub.pth"
    torch.save(official["reg"]["state_dict"], path)
    rgb = build_encoder("dinov2_vits14_reg", weights=path, img_size=98, **TINY).eval()
    bgr_nir = build_encoder("dinov2_vits14_reg", weights=path, img_size=98,
                            bands=("blue", "green", "red", "nir"), **TINY).eval()
    x = torch.randn(1, 3, 56, 70)
    nir = torch.randn(1, 1, 56, 70)
    with torch.no_grad():
        a = rgb.forward_features(x, layers=[1])[0]
        b = bgr_nir.forward_features(torch.cat([x.flip(1), nir], 1), layers=[1])[0]
    assert rel_err(b, a) <= 1e-5
    w = bgr_nir.vit.patch_embed.proj.weight
    assert torch.count_nonzero(w[:, 3]) == 0  # the new band starts at zero
    assert bgr_nir.in_chans == 4


def test_bad_input_is_explained(official, tmp_path):
    enc = build_encoder("dinov2_vits14", img_size=98, **TINY).eval()
    with pytest.raises(EncoderInputError, match="4 bands but the encoder expects 3"):
        enc.forward_features(torch.randn(1, 4, 56, 56))
    with pytest.raises(EncoderInputError, match="multiple of the patch size 14"):
        enc.forward_features(torch.randn(1, 3, 56, 60))
    with pytest.raises(EncoderInputError, match="multiple of the patch size 14"):
        enc.forward_features(torch.randn(1, 3, 7, 7))
    with pytest.raises(EncoderInputError, match="out of range"):
        enc.forward_features(torch.randn(1, 3, 56, 56), layers=[3])
    # a register checkpoint into a register-free encoder
    path = tmp_path / "reg.pth"
    torch.save(official["reg"]["state_dict"], path)
    with pytest.raises(CheckpointError, match="with registers"):
        build_encoder("dinov2_vits14", weights=path, img_size=98, **TINY)
    # a checkpoint of another size
    with pytest.raises(CheckpointError, match="shapes differ"):
        build_encoder("dinov2_vits14_reg", weights=path, img_size=98,
                      embed_dim=96, depth=3, num_heads=3)


@pytest.mark.parametrize("name,timm_name,sizes", [
    ("dinov2_vits14_reg", "vit_small_patch14_reg4_dinov2", [(224, 224), (168, 280), (518, 518), (98, 126)]),
    ("dinov2_vits14", "vit_small_patch14_dinov2", [(224, 224)]),
])
def test_timm_checkpoint_saved_at_another_grid_keeps_its_grid(name, timm_name, sizes, tmp_path, caplog):
    """A timm model saved at 224 px (a 16 x 16 table) gives timm's features: its table is
    interpolated once, from its own grid, to each input size (the register models resize
    as timm does; the plain ones resize the official way, so only their own grid is timm's)."""
    kw = dict(embed_dim=48, depth=3, num_heads=3)
    ref = timm.create_model(timm_name, pretrained=False, num_classes=0, img_size=224,
                            dynamic_img_size=True, **kw).eval()
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if "gamma" in n or "token" in n or "pos_embed" in n:
                p.normal_(0, 0.5)
    path = tmp_path / "timm224.pth"
    torch.save(ref.state_dict(), path)
    caplog.set_level("INFO", logger="d2geo")
    ours = build_encoder(name, weights=path, **kw).eval()
    assert ours.vit.pos_embed.shape[1] == ref.pos_embed.shape[1]
    assert "16x16" in caplog.text
    for size in sizes:
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            r = ref.forward_intermediates(x, indices=[0, 2], norm=True, intermediates_only=True)
            o = ours.forward_features(x, layers=[0, 2])
        for a, b in zip(o, r):
            assert rel_err(a, b) <= 1e-4, size
    # an explicit img_size still means: resize the table once, to that grid
    fixed = build_encoder(name, weights=path, img_size=518, **kw)
    assert fixed.vit.pos_embed.shape[1] == ref.pos_embed.shape[1] - 16 * 16 + 37 * 37


def _chunked(sd, chunks):
    """The official layout with block_chunks: chunk c holds identities, then its blocks."""
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    size = depth // chunks
    out = {}
    for k, v in sd.items():
        if k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            k = f"blocks.{int(i) // size}.{i}.{rest}"
        out[k] = v
    return out


@pytest.mark.parametrize("variant,name", [("plain", "dinov2_vits14"), ("reg", "dinov2_vits14_reg")])
def test_official_training_checkpoint_with_block_chunks(official, variant, name, caplog):
    """An official DINOv2 training checkpoint: teacher and student, block_chunks, the heads,
    and an iteration counter saved as a tensor; the teacher backbone is loaded."""
    sd = official[variant]["state_dict"]
    ckpt = {"model": {
        **{f"teacher.backbone.{k}": v for k, v in _chunked(sd, 3).items()},
        "teacher.dino_head.mlp.0.weight": torch.zeros(4, 48),
        **{f"student.backbone.{k}": torch.zeros_like(v) for k, v in _chunked(sd, 3).items()},
    }, "iteration": torch.tensor(1000)}
    assert "teacher.backbone.blocks.2.2.attn.qkv.weight" in ckpt["model"]
    caplog.set_level("INFO", logger="d2geo")
    ours = build_encoder(name, weights=ckpt, img_size=98, **TINY).eval()
    x, case = official["inputs"][1], official[variant]["cases"][1]
    with torch.no_grad():
        for o, r in zip(ours.forward_features(x, layers=[0, 1, 2]), case["norm"]):
            assert rel_err(o, r) <= 1e-4
    for named in ("iteration", "student.backbone", "teacher.dino_head", "mask_token"):
        assert named in caplog.text


def test_stray_top_level_tensors_are_named_not_refused(official, caplog):
    """A tensor next to the state dict container, or a dot-free non-encoder tensor among the
    encoder's, is logged by name; the encoder loads."""
    sd = official["plain"]["state_dict"]
    caplog.set_level("INFO", logger="d2geo")
    ref = build_encoder("dinov2_vits14", weights=sd, img_size=98, **TINY).eval()
    x = official["inputs"][2]
    for ckpt, stray in (({"model": dict(sd), "epoch_tensor": torch.tensor(3)}, "epoch_tensor"),
                        ({**sd, "loss_scale": torch.tensor(2.0 ** 16)}, "loss_scale")):
        caplog.clear()
        ours = build_encoder("dinov2_vits14", weights=ckpt, img_size=98, **TINY).eval()
        with torch.no_grad():
            assert torch.equal(ours.forward_features(x)[0], ref.forward_features(x)[0])
        assert stray in caplog.text


def test_unknown_encoder_tensors_are_refused(official):
    sd = dict(official["plain"]["state_dict"])
    sd["blocks.1.attn.q_norm.weight"] = torch.ones(16)  # qk-norm: another architecture
    with pytest.raises(CheckpointError, match=r"has no place for .*blocks\.1\.attn\.q_norm\.weight"):
        build_encoder("dinov2_vits14", weights=sd, img_size=98, **TINY)


def test_position_resize_matrices_are_made_once_per_size(monkeypatch):
    """Outside recording the resize matrices of a grid come from the encoder's size cache (the
    native grid needs none); they were rebuilt on every forward (~5000 extra ops at 518 px)."""
    from d2geo.encoders import dinov2, resize

    calls = []
    real = resize.bicubic_matrix
    monkeypatch.setattr(dinov2, "bicubic_matrix", lambda *a, **k: calls.append(a[:2]) or real(*a, **k))
    enc = build_encoder("dinov2_vits14", img_size=56, **TINY).eval()
    with torch.no_grad():
        for _ in range(3):
            enc(torch.randn(1, 3, 56, 56))  # the table's own 4 x 4 grid
        assert calls == []
        for _ in range(3):
            enc(torch.randn(1, 3, 70, 42))
        assert sorted(calls) == [(3, 4), (5, 4)]
        enc.to(torch.float64)  # moved or cast: made again
        enc(torch.randn(1, 3, 70, 42, dtype=torch.float64))
        assert len(calls) == 4
