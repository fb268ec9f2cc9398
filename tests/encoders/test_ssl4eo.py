"""SSL4EO-S12 ViT-S/16 fidelity against the model torchgeo builds.

torchgeo's ``vit_small_patch16_224(weights)`` is ``timm.create_model('vit_small_patch16_224',
in_chans=13, **kwargs)`` followed by ``load_state_dict(strict=False)`` that tolerates
``norm.*`` and ``head.*`` missing (torchgeo/models/vit.py, 0.8.1). The reference here is
built exactly so (with ``dynamic_img_size=True`` for other input sizes, tiny widths), from
random-weight checkpoints in the published layouts: torchgeo's re-hosted DINO/MoCo files
(timm keys, no final norm, no head) and the SSL4EO-S12 MAE encoder file (timm keys with
norm). Features are compared with timm's own ``forward_intermediates``.
"""
import pytest
import torch

timm = pytest.importorskip("timm")

from helpers import rel_err  # noqa: E402
from d2geo.encoders import CheckpointError, EncoderInputError, build_encoder  # noqa: E402
from d2geo.encoders.ssl4eo import S2_L1C_BANDS, SSL4EO_PRETRAINED  # noqa: E402

TINY = dict(embed_dim=64, depth=3, num_heads=4, img_size=64)
TOL = 1e-4
#: torchgeo's tolerated missing/unexpected keys
TORCHGEO_KEYS = {"norm.weight", "norm.bias", "head.weight", "head.bias"}


def _reference(sd: dict) -> torch.nn.Module:
    """torchgeo's vit_small_patch16_224 recipe (tiny widths) with its strict=False load."""
    ref = timm.create_model("vit_small_patch16_224", in_chans=13, dynamic_img_size=True, **TINY)
    missing, unexpected = ref.load_state_dict(sd, strict=False)
    assert set(missing) <= TORCHGEO_KEYS and set(unexpected) <= TORCHGEO_KEYS
    return ref.eval()


def _published(with_norm: bool) -> dict:
    """A random state dict in the published timm layout (13 bands, 224-style grid of TINY)."""
    model = timm.create_model("vit_small_patch16_224", in_chans=13, num_classes=0, **TINY)
    sd = {}
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if k.startswith("norm.") and not with_norm:
                continue
            sd[k] = v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v
        if with_norm:
            sd["norm.weight"] = 1 + 0.2 * torch.randn_like(sd["norm.weight"])
    return sd


def _compare(enc, ref, x, *, layers=(0, 1, 2)):
    worst = 0.0
    for norm in (False, True):
        with torch.no_grad():
            want = ref.forward_intermediates(x, indices=list(layers), norm=norm, intermediates_only=True)
            got = enc.forward_features(x, layers=list(layers), norm=norm)
        for i, (a, b) in enumerate(zip(got, want)):
            err = rel_err(a, b)
            assert err <= TOL, (norm, layers[i], err)
            worst = max(worst, err)
    return worst


@pytest.mark.parametrize("name, with_norm", [("ssl4eo_s12_vits16_dino", False),
                                             ("ssl4eo_s12_vits16_moco", False),
                                             ("ssl4eo_s12_vits16_mae", True)])
def test_published_layouts_native_and_non_native_sizes(name, with_norm, tmp_path):
    sd = _published(with_norm)
    path = tmp_path / "ckpt.pth"
    torch.save(sd, path)
    ref = _reference(dict(sd))
    enc = build_encoder(name, weights=path, **TINY).eval()
    assert enc.bands == S2_L1C_BANDS and enc.in_chans == 13
    if not with_norm:  # torchgeo keeps the fresh LayerNorm: weight 1, bias 0
        assert torch.equal(enc.vit.norm.weight, torch.ones(64)) and torch.equal(enc.vit.norm.bias, torch.zeros(64))
    _compare(enc, ref, torch.randn(2, 13, 64, 64))  # the native 4x4 grid
    _compare(enc, ref, torch.randn(1, 13, 64, 96))  # non-square, off the table's grid
    _compare(enc, ref, torch.randn(2, 13, 96, 48))


def test_head_and_wrapped_training_checkpoint(tmp_path):
    """A MoCo-v3 training checkpoint: weights under module.base_encoder. beside a momentum
    encoder, with a classification head; the base encoder is loaded, the rest named."""
    sd = _published(True)
    wrapped = {f"module.base_encoder.{k}": v for k, v in sd.items()}
    wrapped.update({f"module.momentum_encoder.{k}": v.clone() for k, v in sd.items()})
    wrapped["module.base_encoder.head.weight"] = torch.randn(10, 64)
    wrapped["module.base_encoder.head.bias"] = torch.randn(10)
    enc = build_encoder("ssl4eo_s12_vits16_moco", **TINY).eval()
    from d2geo.encoders import load_encoder_weights

    report = load_encoder_weights(enc, {"state_dict": wrapped})
    assert "module.base_encoder.head.weight" in report.ignored
    assert any(k.startswith("module.momentum_encoder.") for k in report.ignored)
    _compare(enc, _reference(sd), torch.randn(1, 13, 64, 80))


def test_band_selection_by_name_equals_zero_filled_full_input(tmp_path):
    sd = _published(True)
    ref = _reference(dict(sd))
    picked = ("B04", "B03", "B02", "B08", "B11")
    enc = build_encoder("ssl4eo_s12_vits16_mae", weights=sd, bands=picked, **TINY).eval()
    assert enc.in_chans == 5
    x = torch.randn(2, 5, 64, 80)
    full = torch.zeros(2, 13, 64, 80)
    for j, b in enumerate(picked):
        full[:, S2_L1C_BANDS.index(b)] = x[:, j]
    with torch.no_grad():
        want = ref.forward_intermediates(full, indices=[1, 2], norm=True, intermediates_only=True)
        got = enc.forward_features(x, layers=[1, 2], norm=True)
    for a, b in zip(got, want):
        assert rel_err(a, b) <= TOL


def test_band_selection_through_the_band_vocabulary():
    pytest.importorskip("d2geo.encoders.bands", reason="the band vocabulary module is not on this branch yet")
    sd = _published(True)
    common = build_encoder("ssl4eo_s12_vits16_mae", weights=sd, bands=("red", "green", "blue", "cirrus"),
                           **TINY).eval()
    ids = build_encoder("ssl4eo_s12_vits16_mae", weights=sd, bands=("B04", "B03", "B02", "B10"), **TINY).eval()
    assert torch.equal(common.vit.patch_embed.proj.weight, ids.vit.patch_embed.proj.weight)
    assert common.vit.patch_embed.proj.weight.abs().sum() > 0


# -- bad input ---------------------------------------------------------------------------
def test_l2a_stack_without_b10_is_refused_with_the_fix():
    enc = build_encoder("ssl4eo_s12_vits16_mae", **TINY)
    with pytest.raises(EncoderInputError, match=r"12 bands but the encoder expects 13 .*B10.*bands=\[\.\.\.\]"):
        enc.forward_features(torch.randn(1, 12, 64, 64))


def test_checkpoint_of_other_bands_is_refused_with_the_fix():
    sd = _published(True)
    sd["patch_embed.proj.weight"] = sd["patch_embed.proj.weight"][:, :2]  # an S1 (VV, VH) checkpoint
    with pytest.raises(CheckpointError, match="pretrained_bands"):
        build_encoder("ssl4eo_s12_vits16_mae", weights=sd, **TINY)


def test_position_grid_of_another_size_is_refused_with_the_fix():
    sd = _published(True)
    with pytest.raises(CheckpointError, match=r"4x4 grid .*img_size=64"):
        build_encoder("ssl4eo_s12_vits16_mae", weights=sd, **{**TINY, "img_size": 96})


def test_pretrained_table_names_published_sources():
    for name, entry in SSL4EO_PRETRAINED.items():
        assert entry.source.startswith("hf://") and entry.source.endswith(".pth"), name
        assert entry.license


@pytest.mark.slow
def test_published_size_builds():
    enc = build_encoder("ssl4eo_s12_vits16_dino")
    assert (enc.embed_dim, enc.depth, enc.vit.pos_embed.shape[1]) == (384, 12, 197)
    out = enc.forward_features(torch.zeros(1, 13, 224, 160), layers=[3, 11])
    assert [tuple(o.shape) for o in out] == [(1, 384, 14, 10)] * 2
